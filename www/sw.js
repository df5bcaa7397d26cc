// Offline support for the app shell: network first, cached copy when offline.
// (The model weights are cached separately by the worker in Cache Storage "glide-weights-v1".)
const SHELL = "glide-shell-v1";
self.addEventListener("install", (e) => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (e) => {
  const req = e.request;
  if (req.method !== "GET" || new URL(req.url).origin !== self.location.origin) return;
  // the worker manages weights: whole files, shards and shard indexes
  if (/\.safetensors(\.index\.json)?$/.test(new URL(req.url).pathname)) return;
  e.respondWith(
    fetch(req)
      .then((resp) => {
        if (resp.ok) {
          const copy = resp.clone();
          caches.open(SHELL).then((c) => c.put(req, copy));
        }
        return resp;
      })
      .catch(() => caches.match(req, { ignoreSearch: true }).then((r) => r || Response.error()))
  );
});
