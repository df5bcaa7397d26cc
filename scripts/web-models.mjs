// The page's model picker: the committed list (www/models/models.json, the bundled emoji model)
// plus OpenAI's released GLIDE when scripts/get-official-weights.sh has converted it into
// weights/official/web/ (f16 shards). Writes www/generated/models.json and links the shards into
// www/generated/official/ (trunk copies www/generated into the site); with no official weights
// it writes the committed list unchanged.
//   node scripts/web-models.mjs
import { existsSync, mkdirSync, readFileSync, writeFileSync, readdirSync, linkSync, copyFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..");
const WEB = join(ROOT, "weights/official/web");
const GEN = join(ROOT, "www/generated");
const list = JSON.parse(readFileSync(join(ROOT, "www/models/models.json"), "utf8"));

rmSync(join(GEN, "official"), { recursive: true, force: true });
mkdirSync(join(GEN, "official"), { recursive: true });
const has = (name) => existsSync(join(WEB, `${name}.safetensors.index.json`));
const url = (name) => `www/generated/official/${name}.safetensors.index.json`;

if (has("base")) {
  for (const file of readdirSync(WEB)) {
    try {
      linkSync(join(WEB, file), join(GEN, "official", file));
    } catch {
      copyFileSync(join(WEB, file), join(GEN, "official", file));
    }
  }
  const inpaint = has("base-inpaint") ? url("base-inpaint") : undefined;
  list.models.push({ id: "glide-64", label: "GLIDE (filtered) 64 px", weights: url("base"), inpaint, respacing: "fast27" });
  if (has("upsample")) {
    list.models.push({
      id: "glide-256", label: "GLIDE (filtered) + upsampler 256 px", weights: url("base"), upsampler: url("upsample"),
      inpaint, upsample_inpaint: inpaint && has("upsample-inpaint") ? url("upsample-inpaint") : undefined,
      respacing: "fast27", upsample_respacing: "fast27",
    });
  }
  console.log(`web-models: ${list.models.length - 1} official entries from ${WEB}`);
}
writeFileSync(join(GEN, "models.json"), JSON.stringify(list, null, 2) + "\n");
