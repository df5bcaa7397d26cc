#!/usr/bin/env bash
# Seed inputs for the fuzz targets, made from our fixtures, configs and sample images
# (fuzz/seeds/, git-ignored: regenerated each time).
set -euo pipefail
cd "$(dirname "$0")/.."
F=../shared/fixtures/glide-reference
[ -d "$F" ] || { echo "the reference fixtures are missing at $F (the project's ../shared)" >&2; exit 1; }
S=fuzz/seeds
rm -rf "$S" && mkdir -p "$S"/{tokenizer,weights,pytorch,image_mask,shard,train_config}
python3 - "$F/tokenizer_cases.json" "$S/tokenizer" <<'PY'
import json, sys
for i, c in enumerate(json.load(open(sys.argv[1]))["cases"]):
    open(f"{sys.argv[2]}/{i:03}", "w").write(c["text"])
PY
cp "$F/clip_guidance_tiny.safetensors" "$F/diffusion.safetensors" "$S/weights/"
cp "$F/pytorch/code_execution.pt" "$F/pytorch/noised_clip_tiny_image_enc.pt" "$S/pytorch/"
cp configs/*.json "$S/train_config/"
for f in docs/samples/*.png; do
  [ "$(stat -c %s "$f")" -lt 65536 ] && cp "$f" "$S/image_mask/"
done
# A two-sample shard: the small PNGs with captions, in WebDataset layout.
python3 - "$S" <<'PY'
import io, os, sys, tarfile
seeds = sys.argv[1]
pngs = sorted(os.listdir(f"{seeds}/image_mask"))[:2]
with tarfile.open(f"{seeds}/shard/train-000000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
    for i, name in enumerate(pngs):
        for ext, data in [("png", open(f"{seeds}/image_mask/{name}", "rb").read()),
                          ("txt", b"a red apple\nred apple, noto style\n"),
                          ("json", b'{"flip": true}')]:
            info = tarfile.TarInfo(f"noto_{i:04x}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
PY
echo "seeds: $(find "$S" -type f | wc -l) files in $S"
