//! The fuzz targets' checks (`fuzz/checks.rs`, shared with `scripts/fuzz.sh`) on every input in
//! `fuzz/regressions/<target>/` (what fuzzing found, kept) and on hand-made hostile inputs. The
//! fuzzing itself is not in CI; this is.

#[path = "../../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is missing ({e})", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Runs `check` on the regression inputs of `target` and on `extra`.
fn run(target: &str, check: fn(&[u8]), extra: &[&[u8]]) {
    for (name, bytes) in regressions(target) {
        eprintln!("{target}: {name}");
        check(&bytes);
    }
    for bytes in extra {
        check(bytes);
    }
}

#[test]
fn tokenizer() {
    run(
        "tokenizer",
        checks::tokenizer,
        &[
            b"",
            b"\xff\xfe\x00",
            "ΣΑΣ 'll  \t\n".as_bytes(),
            &[b'a'; 5000],
        ],
    );
}

#[test]
fn weights() {
    let mut huge_header = (1u64 << 40).to_le_bytes().to_vec();
    huge_header.extend(b"{}");
    run(
        "weights",
        checks::weights,
        &[b"", &huge_header, &[0xff; 16]],
    );
}

#[test]
fn pytorch() {
    run(
        "pytorch",
        checks::pytorch,
        &[b"", b"PK\x03\x04", b"\x80\x02}q\x00."],
    );
}

#[test]
fn image_mask() {
    run(
        "image_mask",
        checks::image_mask,
        &[b"", b"\x89PNG\r\n\x1a\n"],
    );
}

#[test]
fn shard() {
    run("shard", checks::shard, &[b"", &[0u8; 1024], &[b'a'; 700]]);
}

#[test]
fn train_config() {
    let smoke = include_bytes!("../../../configs/smoke.json");
    run("train_config", checks::train_config, &[b"", b"{}", smoke]);
}
