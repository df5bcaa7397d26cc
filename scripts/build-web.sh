#!/usr/bin/env bash
# Builds (or serves) the web app with trunk. Uses a rustup wasm32 target where one is installed;
# otherwise Debian's rustc-web with -Z build-std (see DEVELOPERS.md).
#   scripts/build-web.sh          → dist/
#   scripts/build-web.sh serve    → http://127.0.0.1:8080
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-build}
export PATH="$HOME/.cargo/bin:$PATH"

# The model the page loads by default is committed (www/models, see its README.md).
if [ ! -f www/models/base.safetensors ]; then
  echo "build-web: www/models/base.safetensors is missing; restore it with git checkout www/models" >&2
  exit 1
fi

# The model picker's list (and OpenAI's weights, when converted): www/generated/.
node scripts/web-models.mjs

if rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
  echo "build-web: using rustup's wasm32 target"
  # trunk builds offline: fetch the wasm-only dependencies first.
  cargo fetch --target wasm32-unknown-unknown >/dev/null
else
  [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q . || {
    echo "build-web: no wasm32 toolchain: run scripts/setup.sh (installs Debian's rustc-web)" >&2
    exit 1
  }
  echo "build-web: using Debian's rustc-web with -Z build-std"
  # Debian's toolchain first, the cargo-installed tools (trunk, wasm-bindgen) after it.
  export PATH="/usr/bin:$PATH"
  export RUSTC_BOOTSTRAP=1 CARGO_UNSTABLE_BUILD_STD=std,panic_abort
  # trunk builds offline: std's own dependencies must be in the cargo cache first.
  cargo fetch -Z build-std=std,panic_abort --target wasm32-unknown-unknown >/dev/null
fi

if [ "$mode" = serve ]; then
  exec trunk serve --release
else
  trunk build --release
  # The Content-Security-Policy (same origin only), with the hash of trunk's inline script.
  node scripts/csp.mjs dist/index.html
  # The worker carries burn and the model code: optimise it with binaryen's wasm-opt from npm
  # (Debian's binaryen 108 breaks Rust 1.96 output). 29 MB → 14 MB, ~3 min. The worker is loaded
  # by name, without an integrity hash, so it can be rewritten in place. GLIDE_WASM_OPT=0 skips it.
  if [ "${GLIDE_WASM_OPT:-1}" != 0 ] && [ -x node_modules/.bin/wasm-opt ]; then
    echo "build-web: wasm-opt -O2 dist/worker_bg.wasm"
    node_modules/.bin/wasm-opt -O2 --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue --enable-simd \
      dist/worker_bg.wasm -o dist/worker_bg.opt.wasm
    mv dist/worker_bg.opt.wasm dist/worker_bg.wasm
  fi
  ls -l dist/*.wasm
fi
