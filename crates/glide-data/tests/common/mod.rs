//! Helpers shared by the integration tests.
#![allow(dead_code)] // Each test binary uses only some of these helpers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository's `node_modules`. Panics (never skips) when it is missing: the dataset tests are
/// the only check that the pinned packages still match what the builder expects.
pub fn node_modules() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../node_modules"));
    assert!(
        dir.join("emojibase-data").join("package.json").is_file(),
        "{} lacks the emoji npm packages; run `make setup` (or `npm ci` in the repository root) first",
        dir.display()
    );
    dir
}

/// A fresh, empty folder, unique within this test binary. It lives under Cargo's per-target temp
/// folder with a name that the next run reuses, so repeated runs do not pile up data.
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("glide-data-{name}-{n}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
