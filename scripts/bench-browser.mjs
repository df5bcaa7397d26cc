// Wall time per image in headless chromium (WebGPU on SwiftShader, and the CPU fallback) for the
// distilled students and the teacher's own guided DDIM at the same step counts. A measurement,
// not a test: run after `make web` and scripts/distill.sh.
//   node scripts/bench-browser.mjs [images per setting, default 5]
// Prints a markdown table; these machines are noisy, so compare the ratios within one run.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ROOT, servePage, launchChromium } from "./bench-page.mjs";

const N = Number(process.argv[2] || 5);
const PROMPT = "a red apple";
const settings = [
  { name: "student, 4 steps", weights: "www/models/student.safetensors", steps: 4 },
  { name: "student, 8 steps", weights: "runs/distill/student-8.safetensors", steps: 8 },
  { name: "teacher guided DDIM, 4 steps", weights: "www/models/base.safetensors", steps: 4 },
  { name: "teacher guided DDIM, 8 steps", weights: "www/models/base.safetensors", steps: 8 },
  { name: "teacher guided DDIM, 100 steps", weights: "www/models/base.safetensors", steps: 100, cpuOnly: true },
];

const server = await servePage({ "/runs/": join(ROOT, "runs") });
const port = server.port;
const browser = await launchChromium();

const rows = [];
for (const backend of ["webgpu", "cpu"]) {
  for (const s of settings) {
    if (s.cpuOnly && backend !== "cpu") continue;
    if (!existsSync(join(ROOT, s.weights))) { console.error(`skip ${s.name}: ${s.weights} missing`); continue; }
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/?backend=${backend}&weights=${s.weights}&steps=${s.steps}&sampler=ddim&guidance=3&batch=1&seed=0`);
    await page.waitForSelector("body[data-state=ready]", { timeout: 300_000 });
    await page.fill("#prompt", PROMPT);
    let total = 0, evals = 0;
    for (let i = 0; i < N; i++) {
      await page.fill("#seed", String(i));
      await page.dispatchEvent("#seed", "change");
      const t0 = Date.now();
      await page.click("#generate");
      await page.waitForSelector("body[data-state=done]", { timeout: 1_800_000 });
      total += Date.now() - t0;
      evals = await page.evaluate(() => window.__glide.evaluations);
      await page.evaluate(() => document.body.setAttribute("data-state", "ready"));
    }
    rows.push({ backend, name: s.name, evals, ms: total / N });
    console.error(`${backend} ${s.name}: ${(total / N).toFixed(0)} ms per image, ${evals} UNet evaluations`);
    await page.close();
  }
}
await browser.close();
server.close();

console.log(`| backend | sampler | UNet evaluations per image | time per image | vs teacher 8 steps |`);
console.log(`|---|---|---|---|---|`);
for (const r of rows) {
  const ref = rows.find((x) => x.backend === r.backend && x.name === "teacher guided DDIM, 8 steps");
  console.log(`| ${r.backend} | ${r.name} | ${r.evals} | ${(r.ms / 1000).toFixed(2)} s | ${ref ? (r.ms / ref.ms).toFixed(3) + "×" : "–"} |`);
}
