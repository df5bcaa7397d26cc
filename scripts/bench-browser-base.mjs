// One real-size model in headless chromium: load time, how the weights are held, and time per
// guided step, on the CPU path (wasm) and/or WebGPU (SwiftShader here). A measurement, not a test
// (SwiftShader takes ~10 min per guided step of the released base). Run after `make web`:
//   glide init --preset base --out /tmp/base.safetensors
//   glide export --in /tmp/base.safetensors --out /tmp/big/base.safetensors.index.json --shard-mb 64
//   node scripts/bench-browser-base.mjs /tmp/big/base.safetensors.index.json cpu webgpu
// EXTRA='&weights_dtype=f32' appends to the page's address.
import { dirname, resolve, basename } from "node:path";
import { servePage, launchChromium } from "./bench-page.mjs";

const [index, ...backends] = process.argv.slice(2);
if (!index || backends.length === 0) {
  console.error("usage: node scripts/bench-browser-base.mjs INDEX.safetensors.index.json cpu|webgpu...");
  process.exit(2);
}
const server = await servePage({ "/big/": dirname(resolve(index)) });
const port = server.port;
const browser = await launchChromium();
for (const backend of backends) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.log("page error:", e.message));
  const t0 = Date.now();
  await page.goto(`http://127.0.0.1:${port}/?backend=${backend}&weights=big/${basename(index)}` +
    `&steps=2&seed=0&guidance=3&batch=1&sampler=ddim${process.env.EXTRA || ""}`);
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state) || document.querySelector("#error"),
    null, { timeout: 1_200_000 });
  const error = async () => (await page.$("#error")) && (await page.textContent("#error"));
  let e = await error();
  if (e) { console.log(`${backend}: ${e}`); await page.close(); continue; }
  const needs = await page.textContent("#needs");
  const held = await page.evaluate(() => window.__glide.weightsDtype);
  console.log(`${backend}: loaded in ${((Date.now() - t0) / 1000).toFixed(0)} s, weights held in ${held}. ${needs}`);
  await page.fill("#prompt", "an oil painting of a corgi");
  const t1 = Date.now();
  await page.click("#generate");
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state) || document.querySelector("#error"),
    null, { timeout: 3_600_000 });
  e = await error();
  const ms = await page.evaluate(() => window.__glide.msPerStep);
  console.log(e ? `${backend}: ${e}` : `${backend}: 2 guided steps in ${((Date.now() - t1) / 1000).toFixed(0)} s, ${ms.toFixed(0)} ms per step`);
  await page.close();
}
await browser.close();
server.close();
