// Shared by the browser benchmarks (scripts/bench-browser*.mjs): the built page (dist/) served on a
// free local port, and headless Debian chromium with WebGPU on SwiftShader (never a downloaded
// browser).
import { createServer } from "node:http";
import { readFileSync, existsSync, statSync } from "node:fs";
import { join, extname, normalize, resolve } from "node:path";
import { chromium } from "playwright-core";

export const ROOT = resolve(import.meta.dirname, "..");
const DIST = join(ROOT, "dist");
const MIME = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css" };

/** Serves dist/, and each `prefix → folder` of `extra` (e.g. "/runs/" → the repository's runs/).
 * Resolves to { port, close }. */
export async function servePage(extra = {}) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const hit = Object.entries(extra).find(([prefix]) => path.startsWith(prefix));
    const file = hit ? join(hit[1], normalize(path.slice(hit[0].length)))
      : join(DIST, normalize(path === "/" ? "/index.html" : path));
    if (!existsSync(file) || !statSync(file).isFile()) return res.writeHead(404).end();
    const body = readFileSync(file);
    res.writeHead(200, { "content-type": MIME[extname(file)] || "application/octet-stream", "content-length": body.length }).end(body);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { port: server.address().port, close: () => server.close() };
}

/** Headless chromium with WebGPU (SwiftShader where there is no GPU). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: false,
    args: ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
}
