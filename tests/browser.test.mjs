// Browser end-to-end test: the built web app (dist/) in headless Debian chromium, WebGPU on
// SwiftShader. Compares the page's samples with `glide sample` on the same weights, prompt,
// seed, sampler and steps; checks the CPU fallback, an all-zero model, and Cancel.
//
// Run with `node --test tests/` after `make web` (the Makefile's `test` target does both).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, writeFileSync, existsSync, statSync, copyFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join, extname, normalize, resolve } from "node:path";
import { chromium } from "playwright-core";

const ROOT = resolve(import.meta.dirname, "..");
const DIST = join(ROOT, "dist");
const GLIDE = process.env.GLIDE_BIN || join(ROOT, "target/debug/glide");
const TMP = mkdtempSync(join(tmpdir(), "glide-browser-"));
const FIXTURES = resolve(ROOT, "../shared/fixtures/glide-reference");
/** Picker entries the test server adds to the page's model list. */
const TEST_MODELS = [
  { id: "tiny-sharded", label: "tiny (sharded fixture)", weights: "test-weights/sharded/tiny.safetensors.index.json" },
  {
    id: "tiny-cascade", label: "tiny cascade", weights: "test-weights/sharded/tiny.safetensors.index.json",
    upsampler: "test-weights/sharded/up.safetensors.index.json", respacing: "4", upsample_respacing: "3",
  },
  {
    id: "tiny-cascade-edit", label: "tiny cascade with inpainting", weights: "test-weights/sharded/tiny.safetensors.index.json",
    upsampler: "test-weights/sharded/up.safetensors.index.json", respacing: "4", upsample_respacing: "3",
    inpaint: "test-weights/inpaint-tiny.safetensors", upsample_inpaint: "test-weights/up-inpaint.safetensors",
  },
];
const PROMPT = "a red apple";
const SEED = 7;
const STEPS = 4;
const SAMPLER = "ddim";
const GUIDANCE = 3;

const MIME = {
  ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm",
  ".css": "text/css", ".safetensors": "application/octet-stream", ".json": "application/json",
};

let server, port, browser;
/** What the server answered, in order: `{ path, conditional, status }`. */
const requests = [];
const brokenOnce = new Set();

function run(args) {
  const r = spawnSync(GLIDE, args, { encoding: "utf8", cwd: ROOT });
  assert.equal(r.status, 0, `glide ${args.join(" ")} failed:\n${r.stderr}`);
  return r;
}

/** Reads `samples` from a safetensors file (f32, little-endian). */
function readSamples(path) {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const { data_offsets: [a, b], dtype } = header.samples;
  assert.equal(dtype, "F32");
  const bytes = buf.subarray(8 + n + a, 8 + n + b);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

function maxAbsDiff(a, b) {
  assert.equal(a.length, b.length, "sample sizes differ");
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

before(async () => {
  assert.ok(existsSync(join(DIST, "index.html")), "dist/ is missing: run `make web` first");
  assert.ok(existsSync(GLIDE), `${GLIDE} is missing: run \`cargo build -p glide-cli\` first`);
  run(["init", "--preset", "tiny", "--seed", "1", "--out", join(TMP, "model.safetensors")]);
  run(["init", "--preset", "tiny", "--zero", "--out", join(TMP, "zero.safetensors")]);
  // OpenAI's code path at a size CI affords: the reference's tiny PyTorch checkpoints, converted
  // to f16 shards of at most 1 MB as scripts/get-official-weights.sh does with 64 MB.
  for (const [pt, name] of [["text2im_tiny", "tiny"], ["upsample_tiny", "up"]]) {
    run(["convert", "--from", join(FIXTURES, "pytorch", `${pt}.pt`), "--options-from", join(FIXTURES, `${pt}.safetensors`),
      "--dtype", "f16", "--shard-mb", "1", "--out", join(TMP, "sharded", `${name}.safetensors.index.json`)]);
  }
  server = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    let path = decodeURIComponent(url.pathname);
    if (path === "/www/generated/models.json") {
      const list = JSON.parse(readFileSync(join(DIST, path), "utf8"));
      list.models.push(...TEST_MODELS);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(list));
      return;
    }
    // /flaky/X serves /test-weights/X, but its first request breaks off half-way.
    const flaky = path.startsWith("/flaky/");
    if (flaky) path = "/test-weights/" + path.slice("/flaky/".length);
    let file = path.startsWith("/test-weights/")
      ? join(TMP, path.slice("/test-weights/".length))
      : join(DIST, normalize(path === "/" ? "/index.html" : path));
    if (!existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end("not found");
      return;
    }
    const body = readFileSync(file);
    const etag = `"${createHash("sha1").update(body).digest("hex")}"`;
    const log = { path: url.pathname, conditional: !!req.headers["if-none-match"], status: 200 };
    requests.push(log);
    if (req.headers["if-none-match"] === etag) {
      log.status = 304;
      res.writeHead(304, { etag }).end();
      return;
    }
    res.writeHead(200, {
      "content-type": MIME[extname(file)] || "application/octet-stream",
      "content-length": body.length,
      etag,
    });
    if (flaky && !brokenOnce.has(path)) {
      brokenOnce.add(path);
      res.write(body.subarray(0, body.length >> 1), () => setTimeout(() => res.socket.destroy(), 50));
      return;
    }
    res.end(body);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  port = server.address().port;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: false,
    args: [
      "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--disable-quic",
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

async function openPage(query) {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.error("page:", m.text()); });
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`http://127.0.0.1:${port}/?${query}`);
  await page.waitForSelector("body[data-state=ready]", { timeout: 120_000 });
  return page;
}

async function generate(page, prompt) {
  await page.fill("#prompt", prompt);
  const t0 = Date.now();
  await page.click("#generate");
  await page.waitForSelector("body[data-state=done]", { timeout: 300_000 });
  const raw = await page.evaluate(() => Array.from(window.__glide.raw));
  const msPerStep = await page.evaluate(() => window.__glide.msPerStep);
  return { raw: Float32Array.from(raw), msPerStep, wall: Date.now() - t0 };
}

const common = `weights=test-weights/model.safetensors&steps=${STEPS}&seed=${SEED}&sampler=${SAMPLER}&guidance=${GUIDANCE}&batch=1`;

function nativeSample(weights, out) {
  run(["sample", "--weights", weights, "--prompt", PROMPT, "--seed", String(SEED),
    "--steps", String(STEPS), "--sampler", SAMPLER, "--guidance", String(GUIDANCE), "--n", "1",
    "--out", out + ".png", "--save-raw", out]);
  return readSamples(out);
}

test("WebGPU page equals `glide sample`; CPU fallback equals it too; zero model differs", async () => {
  const native = nativeSample(join(TMP, "model.safetensors"), join(TMP, "native.safetensors"));

  const gpu = await openPage(`backend=webgpu&${common}`);
  assert.match(await gpu.textContent("#backend"), /WebGPU/);
  const g = await generate(gpu, PROMPT);
  console.log(`webgpu: ${g.msPerStep.toFixed(1)} ms/step, max |Δ| vs native ${maxAbsDiff(g.raw, native).toExponential(2)}`);
  assert.ok(maxAbsDiff(g.raw, native) <= 1e-2, "WebGPU sample differs from glide sample");
  // the step counter reached the end
  assert.match(await gpu.textContent("#status"), /Done/);
  await gpu.close();

  const cpu = await openPage(`backend=cpu&${common}`);
  assert.match(await cpu.textContent("#backend"), /CPU/);
  const c = await generate(cpu, PROMPT);
  console.log(`cpu (wasm): ${c.msPerStep.toFixed(1)} ms/step, max |Δ| vs native ${maxAbsDiff(c.raw, native).toExponential(2)}`);
  assert.ok(maxAbsDiff(c.raw, native) <= 1e-2, "CPU-fallback sample differs from glide sample");
  await cpu.close();

  const zero = await openPage(`backend=webgpu&${common.replace("model.safetensors", "zero.safetensors")}`);
  const z = await generate(zero, PROMPT);
  assert.ok(maxAbsDiff(z.raw, g.raw) > 0.1, "an all-zero model gives the same image: the weights are not used");
  await zero.close();
});

test("Cancel stops a long generation within 1 s and the page stays usable", async () => {
  const page = await openPage(`backend=webgpu&${common.replace(`steps=${STEPS}`, "steps=400")}`);
  await page.fill("#prompt", PROMPT);
  await page.click("#generate");
  await page.waitForFunction(() => /Step ([2-9]|\d\d+) \//.test(document.querySelector("#status").textContent), null, { timeout: 120_000 });
  const t0 = Date.now();
  await page.click("#cancel");
  await page.waitForSelector("body[data-state=cancelled]", { timeout: 5_000 });
  const dt = Date.now() - t0;
  console.log(`cancel took ${dt} ms`);
  assert.ok(dt <= 1000, `cancel took ${dt} ms`);
  // usable again: a short run completes
  await page.fill("#steps", "2");
  await page.dispatchEvent("#steps", "change");
  await page.click("#generate");
  await page.waitForSelector("body[data-state=done]", { timeout: 120_000 });
  await page.close();
});

test("the page generates with the full base model by default; unticking Quality runs the distilled student (≤ 8 UNet evaluations)", async () => {
  // No `weights=` and no `quality=`: the page loads www/models/base.safetensors with the form's steps.
  const page = await openPage(`backend=cpu&steps=3&seed=${SEED}&sampler=${SAMPLER}&guidance=${GUIDANCE}&batch=1`);
  assert.match(await page.textContent("#attribution"), /CC BY-SA 4.0/);
  assert.ok(await page.isChecked("#quality"), "Quality (the full model) is on by default");
  assert.equal(await page.evaluate(() => window.__glide.studentSteps), null);
  const t = await generate(page, PROMPT);
  assert.equal(await page.evaluate(() => window.__glide.evaluations), 6);
  const teacherOut = join(TMP, "teacher.safetensors");
  run(["sample", "--weights", "www/models/base.safetensors", "--prompt", PROMPT, "--seed", String(SEED), "--steps", "3",
    "--sampler", SAMPLER, "--guidance", String(GUIDANCE), "--n", "1", "--out", teacherOut + ".png", "--save-raw", teacherOut]);
  const teacherDiff = maxAbsDiff(t.raw, readSamples(teacherOut));
  console.log(`default (base model, 3 steps), cpu (wasm): ${t.msPerStep.toFixed(1)} ms/step, max |Δ| vs native ${teacherDiff.toExponential(2)}`);
  assert.ok(teacherDiff <= 1e-2, "the page's default sample differs from glide sample on the base model");

  // Unticked: the distilled student, its own step count, one evaluation per step.
  const out = join(TMP, "student.safetensors");
  run(["sample", "--weights", "www/models/student.safetensors", "--prompt", PROMPT, "--seed", String(SEED),
    "--guidance", String(GUIDANCE), "--n", "1", "--out", out + ".png", "--save-raw", out]);
  const native = readSamples(out);
  await page.uncheck("#quality");
  await page.waitForSelector("body[data-state=ready]", { timeout: 120_000 });
  const studentSteps = await page.evaluate(() => window.__glide.studentSteps);
  assert.ok(studentSteps >= 1 && studentSteps <= 8, `the student takes ${studentSteps} steps`);
  assert.ok(await page.isDisabled("#steps"), "a student's step count is its own");
  const c = await generate(page, PROMPT);
  const evals = await page.evaluate(() => window.__glide.evaluations);
  console.log(`Quality off (student, ${studentSteps} steps), cpu (wasm): ${c.msPerStep.toFixed(1)} ms/step, ${evals} UNet evaluations, max |Δ| vs native ${maxAbsDiff(c.raw, native).toExponential(2)}`);
  assert.ok(evals <= 8, `the student used ${evals} UNet evaluations per image`);
  assert.match(await page.textContent("#status"), new RegExp(`${evals} UNet evaluations`));
  assert.ok(maxAbsDiff(c.raw, native) <= 1e-2, "the page's student sample differs from glide sample");
  await page.close();
});

test("CLIP guidance in the page (the bundled noised CLIP's gradient, DDPM) equals `glide sample --clip-guidance` on WebGPU and the CPU", async () => {
  const steps = 3;
  const clipScale = 16;
  const out = join(TMP, "clip-guided.safetensors");
  run(["sample", "--weights", "www/models/base.safetensors", "--clip", "www/models/clip-noised.safetensors",
    "--clip-guidance", String(clipScale), "--prompt", PROMPT, "--seed", String(SEED), "--steps", String(steps),
    "--sampler", "ddpm", "--guidance", String(GUIDANCE), "--n", "1", "--out", out + ".png", "--save-raw", out]);
  const native = readSamples(out);
  const plainOut = join(TMP, "clip-unguided.safetensors");
  run(["sample", "--weights", "www/models/base.safetensors", "--prompt", PROMPT, "--seed", String(SEED),
    "--steps", String(steps), "--sampler", "ddpm", "--guidance", String(GUIDANCE), "--n", "1",
    "--out", plainOut + ".png", "--save-raw", plainOut]);
  assert.ok(maxAbsDiff(native, readSamples(plainOut)) > 0.05, "CLIP guidance did not change the native sample");
  for (const backend of ["webgpu", "cpu"]) {
    const page = await openPage(`backend=${backend}&steps=${steps}&seed=${SEED}&sampler=ddim&guidance=${GUIDANCE}&batch=1&quality=1&clip_guidance=${clipScale}`);
    // DDIM with CLIP guidance is warned about; DDPM is what the CLI compares with.
    assert.match(await page.textContent("#clip-note"), /pick DDPM/);
    await page.selectOption("#sampler", "ddpm");
    await page.waitForSelector("#clip-note", { state: "detached" });
    assert.equal(await page.inputValue("#clip-guidance"), String(clipScale));
    const g = await generate(page, PROMPT);
    const d = maxAbsDiff(g.raw, native);
    console.log(`CLIP guidance ${clipScale} (base model, ${steps} DDPM steps), ${backend}: ${g.msPerStep.toFixed(1)} ms/step, max |Δ| vs native ${d.toExponential(2)}`);
    assert.ok(d <= 1e-2, `the page's CLIP-guided sample on ${backend} differs from glide sample by ${d}`);
    assert.match(await page.textContent("#status"), /Done/);
    await page.close();
  }
});

test("missing weights give a readable error in the page", async () => {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${port}/?weights=test-weights/nope.safetensors`);
  await page.waitForSelector("#error", { timeout: 60_000 });
  assert.match(await page.textContent("#error"), /could not be loaded/);
  await page.close();
});

test("nothing leaves the machine: every request stays on the page's origin, and the CSP blocks others", async () => {
  const html = readFileSync(join(DIST, "index.html"), "utf8");
  const csp = html.match(/<meta http-equiv="Content-Security-Policy" content="([^"]*)"/);
  assert.ok(csp, "dist/index.html has no Content-Security-Policy (scripts/csp.mjs)");
  for (const d of ["default-src 'self'", "connect-src 'self'", "worker-src 'self'"]) {
    assert.ok(csp[1].includes(d), `the CSP lacks ${d}: ${csp[1]}`);
  }
  const context = await browser.newContext();
  const seen = [];
  context.on("request", (r) => seen.push(r.url()));
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.error("page:", m.text()); });
  await page.goto(`http://127.0.0.1:${port}/?${common}`);
  await page.waitForSelector("body[data-state=ready]", { timeout: 120_000 });
  await page.fill("#prompt", PROMPT);
  await page.click("#generate");
  await page.waitForSelector("body[data-state=done]", { timeout: 300_000 });
  const appRequests = [...seen];
  // A request to anywhere else is refused by the page's own policy (a violation is reported).
  const blocked = await page.evaluate(async () => {
    const violations = [];
    document.addEventListener("securitypolicyviolation", (e) => violations.push(e.blockedURI));
    try { await fetch("https://example.com/track"); } catch { /* refused */ }
    const img = new Image();
    img.src = "https://example.com/pixel.png";
    await new Promise((r) => setTimeout(r, 300));
    return violations;
  });
  assert.ok(blocked.some((u) => u.startsWith("https://example.com")), `no CSP violation: ${blocked}`);
  const origin = `http://127.0.0.1:${port}`;
  const foreign = appRequests.filter((u) => !(u.startsWith(origin + "/") || /^(data|blob):/.test(u)));
  assert.deepEqual(foreign, [], "requests left the page's origin");
  assert.ok(appRequests.some((u) => u.endsWith(".wasm")) && appRequests.some((u) => u.includes(".safetensors")),
    `the recorder missed the app's own requests: ${appRequests}`);
  await context.close();
});

/** URLs in the worker's Cache Storage. */
const cachedUrls = (page) =>
  page.evaluate(async () => (await (await caches.open("glide-weights-v1")).keys()).map((r) => r.url));

test("a download that breaks off half-way keeps nothing, says so, and Retry loads the model", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${port}/?${common.replace("test-weights/", "flaky/")}`);
  await page.waitForSelector("#retry", { timeout: 120_000 });
  assert.match(await page.textContent("#error"), /stopped at [\d.]+ of [\d.]+ MB.*Nothing was kept/s);
  assert.deepEqual((await cachedUrls(page)).filter((u) => u.includes("flaky")), [], "half a file was cached");
  await page.click("#retry");
  await page.waitForSelector("body[data-state=ready]", { timeout: 120_000 });
  assert.ok((await cachedUrls(page)).some((u) => u.includes("/flaky/model.safetensors")));
  await context.close();
});

test("weights replaced at the same URL are noticed (ETag revalidation); unchanged ones are not downloaded again", async () => {
  copyFileSync(join(TMP, "model.safetensors"), join(TMP, "swap.safetensors"));
  const context = await browser.newContext();
  const page = await context.newPage();
  const url = `http://127.0.0.1:${port}/?${common.replace("model.safetensors", "swap.safetensors")}`;
  const load = async () => {
    await page.goto(url);
    await page.waitForSelector("body[data-state=ready]", { timeout: 120_000 });
    return generate(page, PROMPT);
  };
  const first = await load();
  const before = requests.length;
  await load();
  const again = requests.slice(before).filter((r) => r.path.endsWith("swap.safetensors"));
  assert.deepEqual(again.map((r) => [r.conditional, r.status]), [[true, 304]], "the cached copy was not revalidated");
  copyFileSync(join(TMP, "zero.safetensors"), join(TMP, "swap.safetensors"));
  const swapped = await load();
  assert.ok(maxAbsDiff(first.raw, swapped.raw) > 0.1, "the replaced weights were not used");
  await context.close();
});

test("a crashed worker is reported, keeps the prompt, and Retry (on the CPU) starts it again", async () => {
  const page = await openPage(common);
  await page.fill("#prompt", "a prompt to keep");
  await page.evaluate(() => window.__glide.crashWorker());
  await page.waitForSelector("#retry", { timeout: 60_000 });
  assert.match(await page.textContent("#error"), /stopped working/);
  assert.equal(await page.inputValue("#prompt"), "a prompt to keep");
  const onGpu = (await page.$("#retry-cpu")) !== null;
  await page.click(onGpu ? "#retry-cpu" : "#retry");
  await page.waitForSelector("body[data-state=ready]", { timeout: 120_000 });
  assert.equal(await page.evaluate(() => window.__glide.backend), "cpu");
  await page.click("#generate");
  await page.waitForSelector("body[data-state=done]", { timeout: 300_000 });
  assert.equal(await page.inputValue("#prompt"), "a prompt to keep");
  await page.close();
});

/** Paints a horizontal stroke across the middle of the edit canvas with synthetic pointer events. */
async function paintStroke(page, y = 0.5, from = 0.2, to = 0.8) {
  const box = await page.locator("#edit-canvas").boundingBox();
  const at = (fx) => [box.x + box.width * fx, box.y + box.height * y];
  await page.mouse.move(...at(from));
  await page.mouse.down();
  for (let i = 1; i <= 8; i++) await page.mouse.move(...at(from + ((to - from) * i) / 8));
  await page.mouse.up();
}

async function runEdit(page) {
  await page.click("#edit-run");
  await page.waitForSelector("body[data-edit=done]", { timeout: 300_000 });
  const get = (k) => page.evaluate((k) => Array.from(window.__glide[k]), k);
  return {
    raw: Float32Array.from(await get("editRaw")),
    input: Float32Array.from(await get("editInput")),
    keep: Float32Array.from(await get("editKeep")),
    inputPng: Buffer.from(await get("editInputPng")),
    maskPng: Buffer.from(await get("editMaskPng")),
    evaluations: await page.evaluate(() => window.__glide.editEvaluations),
  };
}

/** Max |Δ| between result and input over kept pixels, and how many masked values changed. */
function keptAndChanged(e) {
  const plane = e.keep.length;
  let kept = 0, changed = 0;
  for (let c = 0; c < 3; c++) {
    for (let j = 0; j < plane; j++) {
      const d = Math.abs(e.raw[c * plane + j] - e.input[c * plane + j]);
      if (e.keep[j] === 1) kept = Math.max(kept, d);
      else if (d > 1e-2) changed++;
    }
  }
  return { kept, changed };
}

test("editor on an inpainting cascade (converted inpaint_tiny.pt + an upsampling inpainting model) edits at the upsampler's size and equals `glide inpaint --upsampler`", async () => {
  const base = join(TMP, "inpaint-tiny.safetensors");
  const up = join(TMP, "up-inpaint.safetensors");
  run(["convert", "--from", join(FIXTURES, "pytorch", "inpaint_tiny.pt"), "--options-from", join(FIXTURES, "inpaint_tiny.safetensors"),
    "--out", base]);
  run(["init", "--preset", "tiny-upsample-inpaint", "--seed", "4", "--out", up]);
  const EDIT = "a red heart";
  const page = await openPage(`backend=cpu&model=tiny-cascade-edit&steps=${STEPS}&seed=${SEED}&sampler=${SAMPLER}&guidance=${GUIDANCE}&batch=1`);
  // A cascade result (32 px) opens in the editor, which works at the upsampler's size.
  await generate(page, "a blue car");
  await page.click("#results button.edit");
  await page.waitForFunction(() => /Paint over/.test(document.querySelector("#edit-status").textContent));
  await page.fill("#edit-prompt", EDIT);
  await paintStroke(page);
  const e = await runEdit(page);
  assert.equal(e.raw.length, 3 * 32 * 32, "the edit is at the upsampler's 32 px");
  const { kept, changed } = keptAndChanged(e);
  console.log(`inpainting cascade (cpu): kept pixels max |Δ| ${kept.toExponential(2)}, ${changed} masked values changed, ${e.evaluations} UNet evaluations`);
  assert.ok(kept <= 2 / 255, `pixels outside the mask changed by ${kept}`);
  assert.ok(changed > 50, "the masked area was not regenerated");
  // base: 4 guided steps (2 evaluations each), upsampler: 3 steps (1 each)
  assert.equal(e.evaluations, 4 * 2 + 3);
  const [inPng, maskPng, nativeRaw] = ["in.png", "mask.png", "native.safetensors"].map((f) => join(TMP, `cascade-edit-${f}`));
  writeFileSync(inPng, e.inputPng);
  writeFileSync(maskPng, e.maskPng);
  run(["inpaint", "--weights", base, "--upsampler", up, "--upsample-respacing", "3", "--image", inPng, "--mask", maskPng,
    "--prompt", EDIT, "--seed", String(SEED), "--steps", String(STEPS), "--sampler", SAMPLER,
    "--guidance", "5", "--out", nativeRaw + ".png", "--save-raw", nativeRaw]);
  const d = maxAbsDiff(e.raw, readSamples(nativeRaw));
  console.log(`inpainting cascade (cpu): max |Δ| vs glide inpaint --upsampler ${d.toExponential(2)}`);
  assert.ok(d <= 1e-2, `the page's cascaded inpainting differs from glide inpaint --upsampler by ${d}`);
  // The replacement trick needs a plain base model: a sentence, and the work stays.
  await page.selectOption("#edit-method", "replace");
  await page.click("#edit-run");
  await page.waitForSelector("body[data-edit=error]", { timeout: 60_000 });
  assert.match(await page.textContent("#edit-error"), /inpainting cascade fills the mask/);
  await page.close();
});

test("editor: paint a mask, inpaint and img2img equal `glide inpaint` / `glide img2img`; bad inputs keep the work", async () => {
  run(["init", "--preset", "tiny-inpaint", "--seed", "2", "--out", join(TMP, "inpaint.safetensors")]);
  const picture = join(TMP, "picture.png");
  run(["sample", "--weights", join(TMP, "model.safetensors"), "--prompt", "a blue car", "--seed", "3",
    "--steps", "2", "--sampler", "ddim", "--n", "1", "--out", picture]);
  const EDIT = "a red heart";
  const editQuery = `${common}&inpaint_weights=test-weights/inpaint.safetensors`;

  for (const backend of ["webgpu", "cpu"]) {
    const page = await openPage(`backend=${backend}&${editQuery}`);
    await page.setInputFiles("#edit-upload", picture);
    await page.waitForFunction(() => /Paint over/.test(document.querySelector("#edit-status").textContent));
    await page.fill("#edit-prompt", EDIT);

    // No mask painted: a message, nothing runs.
    await page.click("#edit-run");
    await page.waitForSelector("#edit-error");
    assert.match(await page.textContent("#edit-error"), /Paint over the part to change/);
    assert.equal(await page.evaluate(() => window.__glide?.editRaw), undefined);

    await paintStroke(page);
    // A non-image upload is a readable error and loses neither the picture nor the mask.
    await page.setInputFiles("#edit-upload", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("not a picture") });
    await page.waitForFunction(() => /not an image/.test(document.querySelector("#edit-error")?.textContent ?? ""));

    const e = await runEdit(page);
    const { kept, changed } = keptAndChanged(e);
    console.log(`${backend} inpaint: kept pixels max |Δ| ${kept.toExponential(2)}, ${changed} masked values changed, ${e.evaluations} UNet evaluations`);
    assert.ok(kept <= 2 / 255, `pixels outside the mask changed by ${kept}`);
    assert.ok(changed > 50, "the masked area was not regenerated");
    const [inPng, maskPng, nativeRaw] = ["edit-in.png", "edit-mask.png", "edit-native.safetensors"].map((f) => join(TMP, `${backend}-${f}`));
    writeFileSync(inPng, e.inputPng);
    writeFileSync(maskPng, e.maskPng);
    run(["inpaint", "--weights", join(TMP, "inpaint.safetensors"), "--image", inPng, "--mask", maskPng,
      "--prompt", EDIT, "--seed", String(SEED), "--steps", String(STEPS), "--sampler", SAMPLER,
      "--guidance", "5", "--out", nativeRaw + ".png", "--save-raw", nativeRaw]);
    const d = maxAbsDiff(e.raw, readSamples(nativeRaw));
    console.log(`${backend} inpaint: max |Δ| vs glide inpaint ${d.toExponential(2)}`);
    assert.ok(d <= 1e-2, `the page's inpainting differs from glide inpaint by ${d}`);

    // img2img: no mask, strength 0.6 (3 of 4 steps), on the base model.
    await page.click("#edit-clear");
    await page.$eval("#edit-strength", (el) => { el.value = "0.6"; el.dispatchEvent(new Event("change", { bubbles: true })); });
    const i = await runEdit(page);
    const nativeI = join(TMP, `${backend}-img2img.safetensors`);
    run(["img2img", "--weights", join(TMP, "model.safetensors"), "--image", inPng, "--strength", "0.6",
      "--prompt", EDIT, "--seed", String(SEED), "--steps", String(STEPS), "--sampler", SAMPLER,
      "--guidance", "5", "--out", nativeI + ".png", "--save-raw", nativeI]);
    const di = maxAbsDiff(i.raw, readSamples(nativeI));
    console.log(`${backend} img2img: max |Δ| vs glide img2img ${di.toExponential(2)}, ${i.evaluations} UNet evaluations`);
    assert.ok(di <= 1e-2, `the page's img2img differs from glide img2img by ${di}`);
    assert.equal(i.evaluations, 6, "strength 0.6 of 4 guided steps is 3 steps of 2 evaluations");

    if (backend === "cpu") {
      // A mask file of another size is resized, with a notice.
      await page.setInputFiles("#edit-mask-upload", picture);
      await page.waitForFunction(() => /resized/.test(document.querySelector("#edit-status").textContent));
    }
    await page.close();
  }
});

/** `glide sample` on `weights` (a file or a shard index), with optional cascade arguments. */
function nativeRaw(weights, name, extra = []) {
  const out = join(TMP, `${name}.safetensors`);
  run(["sample", "--weights", weights, "--prompt", PROMPT, "--seed", String(SEED), "--sampler", SAMPLER,
    "--guidance", String(GUIDANCE), "--n", "1", "--out", out + ".png", "--save-raw", out, ...extra]);
  return readSamples(out);
}

/** Waits until the worker says model `name` is loaded and ready. */
async function waitForModel(page, name) {
  await page.waitForFunction((n) => window.__glide?.model === n && document.body.dataset.state === "ready", name,
    { timeout: 120_000 });
}

const shardRequests = () => requests.filter((r) => /\/sharded\/tiny-\d+-of-\d+\.safetensors$/.test(r.path));

test("model picker: a sharded model (converted PyTorch fixture) loads shard by shard, equals `glide sample`, and a reload takes its shards from Cache Storage", async () => {
  const index = join(TMP, "sharded", "tiny.safetensors.index.json");
  const native = nativeRaw(index, "native-sharded", ["--steps", String(STEPS)]);
  const context = await browser.newContext();
  const page = await context.newPage();
  const url = `http://127.0.0.1:${port}/?backend=webgpu&model=tiny-sharded&steps=${STEPS}&seed=${SEED}&sampler=${SAMPLER}&guidance=${GUIDANCE}&batch=1`;
  const before = shardRequests().length;
  await page.goto(url);
  await page.waitForSelector("body[data-state=ready]", { timeout: 120_000 });
  assert.equal(await page.inputValue("#model"), "tiny-sharded");
  assert.match(await page.textContent("#needs"), /needs about \d+ MB of GPU memory/);
  const shards = Object.keys(JSON.parse(readFileSync(index, "utf8")).shards);
  assert.ok(shards.length >= 3, "the fixture should make several shards");
  assert.equal(shardRequests().length - before, shards.length, "each shard is downloaded once");
  const cached = await cachedUrls(page);
  for (const f of shards) assert.ok(cached.some((u) => u.endsWith(`/sharded/${f}`)), `${f} is not in Cache Storage`);
  const g = await generate(page, PROMPT);
  console.log(`sharded fixture on webgpu: max |Δ| vs native ${maxAbsDiff(g.raw, native).toExponential(2)}`);
  assert.ok(maxAbsDiff(g.raw, native) <= 1e-2, "the sharded model's sample differs from glide sample");
  const again = shardRequests().length;
  await page.reload();
  await page.waitForSelector("body[data-state=ready]", { timeout: 120_000 });
  assert.equal(shardRequests().length, again, "a reload downloaded shards that Cache Storage holds");
  // the picker switches models: back to the bundled one
  await page.selectOption("#model", "emoji");
  await waitForModel(page, "base.safetensors");
  assert.ok(page.url().includes("model=emoji"));
  await context.close();
});

test("model picker: a cascade entry runs the base model then the upsampler and equals `glide sample --upsampler`", async () => {
  const dir = join(TMP, "sharded");
  const native = nativeRaw(join(dir, "tiny.safetensors.index.json"), "native-cascade",
    ["--respacing", "4", "--upsampler", join(dir, "up.safetensors.index.json"), "--upsample-respacing", "3"]);
  const page = await openPage(`backend=cpu&model=tiny-cascade&seed=${SEED}&sampler=${SAMPLER}&guidance=${GUIDANCE}&batch=1`);
  assert.equal(await page.inputValue("#respacing"), "4");
  assert.equal(await page.inputValue("#up-respacing"), "3");
  // both stages are counted, and on the CPU the line speaks of memory, not GPU memory
  assert.match(await page.textContent("#needs"), /^Both stages need about \d+ MB of memory on the CPU/);
  const c = await generate(page, PROMPT);
  assert.equal(c.raw.length, 3 * 32 * 32, "the cascade's output is the upsampler's 32 px");
  console.log(`cascade (cpu): max |Δ| vs native ${maxAbsDiff(c.raw, native).toExponential(2)}`);
  assert.ok(maxAbsDiff(c.raw, native) <= 1e-2, "the page's cascade differs from glide sample --upsampler");
  // base 4 steps guided (2 evaluations each) + upsampler 3 steps (1 each)
  assert.equal(await page.evaluate(() => window.__glide.evaluations), 4 * 2 + 3);
  await page.close();
});

test("weights from this computer: one .safetensors, or an index with its shards; a missing shard is named", async () => {
  const page = await openPage(`backend=cpu&steps=${STEPS}&seed=${SEED}&sampler=${SAMPLER}&guidance=${GUIDANCE}&batch=1`);
  const dir = join(TMP, "sharded");
  const index = join(dir, "tiny.safetensors.index.json");
  const shards = Object.keys(JSON.parse(readFileSync(index, "utf8")).shards).map((f) => join(dir, f));
  await page.setInputFiles("#weights-file", [index, ...shards]);
  await waitForModel(page, "tiny.safetensors.index.json");
  const local = await generate(page, PROMPT);
  const native = nativeRaw(index, "native-local", ["--steps", String(STEPS)]);
  assert.ok(maxAbsDiff(local.raw, native) <= 1e-2, "the picked shards' sample differs from glide sample");
  await page.setInputFiles("#weights-file", [join(TMP, "model.safetensors")]);
  await waitForModel(page, "model.safetensors");
  const one = await generate(page, PROMPT);
  const nativeOne = nativeRaw(join(TMP, "model.safetensors"), "native-one", ["--steps", String(STEPS)]);
  assert.ok(maxAbsDiff(one.raw, nativeOne) <= 1e-2, "the picked file's sample differs from glide sample");
  await page.setInputFiles("#weights-file", [index, shards[0]]);
  await page.waitForSelector("#error", { timeout: 60_000 });
  assert.match(await page.textContent("#error"), /is not among the picked files: pick the index and all \d+ of its shards/);
  await page.close();
});

test("weights held in f16 (?weights_dtype=f16 on the CPU; by default on a GPU with shader-f16) sample exactly what the same file widened to f32 samples", async () => {
  const q = `model=tiny-sharded&steps=${STEPS}&seed=${SEED}&sampler=${SAMPLER}&guidance=${GUIDANCE}&batch=1`;
  const wide = await openPage(`backend=cpu&${q}`);
  assert.match(await wide.textContent("#needs"), /MB of weights in f32\)/);
  // what the loaded model holds, read back from its parameters
  const held = (page) => page.evaluate(() => window.__glide.weightsDtype);
  assert.equal(await held(wide), "f32");
  const a = await generate(wide, PROMPT);
  await wide.close();
  const half = await openPage(`backend=cpu&weights_dtype=f16&${q}`);
  const mb = (text) => Number(/\((\d+) MB of weights/.exec(text)[1]);
  const needs = await half.textContent("#needs");
  assert.match(needs, /MB of weights in f16\)/);
  assert.equal(await held(half), "f16");
  const b = await generate(half, PROMPT);
  await half.close();
  assert.equal(maxAbsDiff(a.raw, b.raw), 0, "the model held in f16 samples something else than the f32 one");
  // On WebGPU the worker holds f16 exactly when the adapter has shader-f16 (SwiftShader has not).
  const gpu = await openPage(`backend=webgpu&${q}`);
  const f16 = await gpu.evaluate(async () => (await navigator.gpu.requestAdapter()).features.has("shader-f16"));
  const gpuNeeds = await gpu.textContent("#needs");
  assert.match(gpuNeeds, f16 ? /MB of weights in f16\)/ : /MB of weights in f32\)/);
  assert.equal(await held(gpu), f16 ? "f16" : "f32");
  console.log(`weights in f16: ${mb(needs)} MB against ${mb(gpuNeeds)} MB; adapter shader-f16: ${f16}`);
  // half the weights' memory (the line rounds to whole MB)
  if (!f16) assert.ok(mb(gpuNeeds) > 0 && Math.abs(mb(needs) * 2 - mb(gpuNeeds)) <= 1, `${needs} vs ${gpuNeeds}`);
  await gpu.close();
  // A model too large for the CPU path's memory (here lowered to 8 MB) is refused before its
  // download, with what to do: f16 when it was held in f32, else a GPU.
  const before = shardRequests().length;
  for (const [dtype, advice] of [["f32", /remove weights_dtype=f32/], ["f16", /run on a GPU with WebGPU/]]) {
    const context = await browser.newContext(); // an empty Cache Storage: a download would show
    const small = await context.newPage();
    await small.goto(`http://127.0.0.1:${port}/?backend=cpu&weights_dtype=${dtype}&cpu_memory=8000000&${q}`);
    await small.waitForSelector("#error", { timeout: 60_000 });
    const text = await small.textContent("#error");
    assert.match(text, /This model needs about \d+ MB of memory on the CPU, more than the 8 MB a browser tab can give/);
    assert.match(text, advice);
    await context.close();
  }
  assert.equal(shardRequests().length, before, "a refused model's shards were downloaded");
  const bad = await browser.newPage();
  await bad.goto(`http://127.0.0.1:${port}/?backend=cpu&weights_dtype=bf16&${q}`);
  await bad.waitForSelector("#error", { timeout: 60_000 });
  assert.match(await bad.textContent("#error"), /weights_dtype=bf16 is neither f16 nor f32/);
  await bad.close();
});

test("a GPU whose buffers are too small gets a sentence, not a crash: for the model before its download, for a batch before it runs", async () => {
  const before = shardRequests().length;
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${port}/?backend=webgpu&model=tiny-sharded&gpu_max_buffer=1000000&steps=${STEPS}`);
  await page.waitForSelector("#error", { timeout: 120_000 });
  assert.match(await page.textContent("#error"), /buffers of at most 1 MB \((maxBufferSize|maxStorageBufferBindingSize)\).*weight of 6 MB.*\?backend=cpu/s);
  assert.equal(shardRequests().length, before, "shards were downloaded for a model that cannot run");
  await page.close();
  // 7 MB holds the 6.4 MB token embedding, not 16 guided images' attention
  const ok = await openPage(`backend=webgpu&model=tiny-sharded&gpu_max_buffer=7000000&steps=2&batch=16`);
  await ok.click("#generate");
  await ok.waitForSelector("#error", { timeout: 60_000 });
  assert.match(await ok.textContent("#error"), /16 images at once need one of \d+ MB\. Generate at most \d+ images at once/);
  await ok.fill("#batch", "1");
  await ok.dispatchEvent("#batch", "change");
  await ok.click("#generate");
  await ok.waitForSelector("body[data-state=done]", { timeout: 120_000 });
  await ok.close();
});

test("a lost GPU device (destroyed as a driver reset would) is reported mid-generation, keeps the prompt, and Retry on the CPU recovers", async () => {
  const page = await openPage(`backend=webgpu&${common.replace(`steps=${STEPS}`, "steps=400")}`);
  assert.equal(await page.evaluate(() => window.__glide.backend), "webgpu");
  await page.fill("#prompt", "a prompt to keep");
  await page.click("#generate");
  await page.waitForFunction(() => /Step ([2-9]|\d\d+) \//.test(document.querySelector("#status").textContent), null, { timeout: 120_000 });
  await page.evaluate(() => window.__glide.loseDevice());
  await page.waitForSelector("#retry-cpu", { timeout: 60_000 });
  assert.match(await page.textContent("#error"), /GPU device was lost.*Retry on the CPU/s);
  assert.equal(await page.inputValue("#prompt"), "a prompt to keep");
  await page.click("#retry-cpu");
  await waitForModel(page, "model.safetensors");
  assert.equal(await page.evaluate(() => window.__glide.backend), "cpu");
  await page.fill("#steps", String(STEPS));
  await page.dispatchEvent("#steps", "change");
  const after = await generate(page, PROMPT);
  const native = nativeSample(join(TMP, "model.safetensors"), join(TMP, "native-after-loss.safetensors"));
  assert.ok(maxAbsDiff(after.raw, native) <= 1e-2, "the recovered page's sample differs from glide sample");
  await page.close();
});
