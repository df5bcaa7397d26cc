//! Fuzz target: `checks::image_mask` (see fuzz/checks.rs).
#![no_main]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::image_mask(data));
