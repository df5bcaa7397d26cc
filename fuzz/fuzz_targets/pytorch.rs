//! Fuzz target: `checks::pytorch` (see fuzz/checks.rs).
#![no_main]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::caught_panics_are_fine();
    checks::pytorch(data)
});
