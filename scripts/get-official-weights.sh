#!/usr/bin/env bash
# Downloads OpenAI's released GLIDE (filtered) checkpoints (the URLs of glide-text2im's
# download.py, MIT licence) and converts them with `glide convert` into weights/official/:
# f32 for the CLI (NAME.safetensors), f16 (NAME-f16.safetensors), and for the web page f16 in
# shards of at most 64 MB with their index (web/NAME.safetensors.index.json; `make serve` offers
# them in the page's model picker).
# Downloads resume (curl -C -); SHA-256 sums are printed so a copy can be compared with another.
# Needs internet access to openaipublic.blob.core.windows.net (our CI and dev machines have none).
#   usage: scripts/get-official-weights.sh [NAME...]   (default: all six)
set -euo pipefail
cd "$(dirname "$0")/.."

URL=https://openaipublic.blob.core.windows.net/diffusion/dec-2021
ALL=(base upsample base_inpaint upsample_inpaint clip_image_enc clip_text_enc)
NAMES=("${@:-${ALL[@]}}")
DL=weights/official/download
OUT=weights/official
mkdir -p "$DL"

GLIDE=target/release/glide
if [ ! -x "$GLIDE" ] || [ -n "$(find crates -newer "$GLIDE" -name '*.rs' -print -quit)" ]; then
  cargo build --release -p glide-cli
fi

for name in "${NAMES[@]}"; do
  case " ${ALL[*]} " in
    *" $name "*) ;;
    *) echo "unknown checkpoint $name; choose from: ${ALL[*]}" >&2; exit 1 ;;
  esac
  pt="$DL/$name.pt"
  echo "== $name"
  if [ ! -s "$pt" ]; then
    if ! curl -fL --retry 5 --retry-delay 5 -C - -o "$pt.part" "$URL/$name.pt"; then
      # curl refuses to resume a .part file that is already complete (HTTP 416).
      [ "$(stat -c %s "$pt.part" 2>/dev/null || echo 0)" = \
        "$(curl -fsIL "$URL/$name.pt" | awk 'tolower($1)=="content-length:"{n=$2} END{print n+0}')" ] ||
        { echo "download of $URL/$name.pt failed; run the script again to resume" >&2; exit 1; }
    fi
    mv -f "$pt.part" "$pt"
  fi
  sha256sum "$pt"
  "$GLIDE" convert --from "$pt" --out "$OUT/${name//_/-}.safetensors" --dtype f32
  "$GLIDE" convert --from "$pt" --out "$OUT/${name//_/-}-f16.safetensors" --dtype f16
  case $name in
    clip_*) ;; # the page does not run CLIP guidance
    *) "$GLIDE" convert --from "$pt" --out "$OUT/web/${name//_/-}.safetensors.index.json" \
         --dtype f16 --shard-mb 64 ;;
  esac
done
echo "converted into $OUT/. Try:"
echo "  $GLIDE sample --weights $OUT/base.safetensors --upsampler $OUT/upsample.safetensors \\"
echo "      --prompt 'an oil painting of a corgi' --base-out corgi-64.png --out corgi-256.png"
