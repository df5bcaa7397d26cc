// Writes the page's Content-Security-Policy into dist/index.html after `trunk build`: everything
// from the page's own origin only (no request leaves the machine), WebAssembly allowed, and the
// one inline module script trunk writes allowed by its SHA-256 (it changes with every build).
//   node scripts/csp.mjs [dist/index.html]
import { readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";

const path = process.argv[2] || "dist/index.html";
let html = readFileSync(path, "utf8").replace(/<meta http-equiv="Content-Security-Policy"[^>]*>\n?/, "");
const hashes = [...html.matchAll(/<script(?![^>]*\bsrc=)[^>]*>([\s\S]*?)<\/script>/g)].map(
  (m) => `'sha256-${createHash("sha256").update(m[1], "utf8").digest("base64")}'`,
);
const policy = [
  "default-src 'self'",
  `script-src 'self' 'wasm-unsafe-eval' ${hashes.join(" ")}`.trim(),
  "connect-src 'self'",
  "worker-src 'self'",
  "img-src 'self' data: blob:",
  "style-src 'self' 'unsafe-inline'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join("; ");
const meta = `<meta http-equiv="Content-Security-Policy" content="${policy}" />`;
const at = html.indexOf("<meta charset");
if (at < 0) throw new Error(`${path} has no <meta charset>: cannot place the CSP before the scripts`);
const end = html.indexOf(">", at) + 1;
html = html.slice(0, end) + "\n    " + meta + html.slice(end);
writeFileSync(path, html);
console.log(`csp: ${hashes.length} inline script(s) hashed into ${path}`);
