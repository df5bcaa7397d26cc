//! The fuzz targets' checks, shared by `fuzz/fuzz_targets/*` (libFuzzer) and the regression test
//! `crates/glide-cli/tests/fuzz_regressions.rs` (every input in `fuzz/regressions/`, in CI).
//! Each takes any bytes; a panic (or a failed assertion) is a bug.
// Each fuzz target uses one of these.
#![allow(dead_code)]
use burn::backend::Flex;
use glide_data::imaging::decode_image;
use glide_data::reader::read_shard_bytes;
use glide_model::pytorch::read_pytorch;
use glide_model::weights::{ParamStorage, StateDict, config_from_metadata};
use glide_pipeline::Text2Im;
use glide_pipeline::UserMask;
use glide_tokenizer::Tokenizer;
use glide_train::TrainConfig;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    static TOKENIZER: Tokenizer = Tokenizer::gpt2();
}
static FILES: AtomicUsize = AtomicUsize::new(0);

/// Any bytes as a prompt: no panic, no hang; valid UTF-8 decodes back to its lower-cased self,
/// and the model's padded tokens are the start of the full encoding.
pub fn tokenizer(data: &[u8]) {
    TOKENIZER.with(|tok| tokenize(tok, data));
}

fn tokenize(tok: &Tokenizer, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let ids = tok.encode(&text);
    assert_eq!(tok.decode(&ids), text.to_lowercase());
    let (padded, mask) = tok.tokens_and_mask(&text, 16);
    let n = ids.len().min(16);
    assert_eq!(padded[..n], ids[..n]);
    assert_eq!(mask.iter().filter(|m| **m).count(), n);
}

/// Any bytes as a weights file: a sentence or a model, never a panic or a huge allocation.
/// Read as the web worker does too: metadata first, floats held in f16.
pub fn weights(data: &[u8]) {
    let _ = StateDict::metadata_of_safetensors(data);
    let half = StateDict::from_safetensors_as(data, ParamStorage::F16);
    let Ok(state) = StateDict::from_safetensors(data) else {
        assert!(half.is_err(), "read as f16 but not as f32");
        return;
    };
    let half = half.expect("read as f32 but not as f16");
    // Options within glide-rs's caps may still describe a legitimately large model: build only
    // small ones here (the caps themselves are what the loader checks).
    if config_from_metadata(&state).is_ok_and(|c| c.approx_params() < 20_000_000) {
        let _ = Text2Im::<Flex>::from_safetensors(data, &Default::default());
        let _ = Text2Im::<Flex>::from_state_dict(&half, &Default::default());
    }
}

/// Any bytes as a PyTorch checkpoint: refused with a sentence or read as a state_dict; no
/// pickle code runs, nothing panics.
///
/// `read_pytorch` catches a panic of the foreign reader (burn-store) and turns it into a sentence;
/// libFuzzer's panic hook would abort on it anyway, so the fuzz target (`caught_panics_are_fine`)
/// swaps in a hook that only prints: a panic that escapes still crashes the target.
pub fn pytorch(data: &[u8]) {
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    // burn-store reads zip checkpoints from a path only: a file in memory (tmpfs) where there is
    // one, so that each input costs no disk write.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("glide-fuzz-{}-{n}.pt", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = read_pytorch(&path);
    let _ = std::fs::remove_file(&path);
}

/// For the pytorch fuzz target: panics print their message but do not abort (see [`pytorch`]).
#[allow(dead_code)]
pub fn caught_panics_are_fine() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| eprintln!("(caught) {info}")));
    });
}

/// Any bytes as an image or mask file: decoded within the size limit or refused; a decoded mask
/// resizes to the model's and the image's sizes.
pub fn image_mask(data: &[u8]) {
    let Ok(image) = decode_image(data) else {
        return;
    };
    let rgba = image.to_rgba8();
    let (w, h) = (rgba.width() as usize, rgba.height() as usize);
    let mask = UserMask::from_rgba(rgba.as_raw(), w, h).expect("a decoded image is a mask");
    let keep = mask.resized(64, 64).keep_at(64);
    assert_eq!(keep.len(), 64 * 64);
    let _ = mask.resized(w.max(1) * 2 % 97 + 1, h.max(1) * 3 % 89 + 1);
    // A wrong byte count is a sentence.
    assert!(UserMask::from_rgba(&rgba.as_raw()[1..], w, h).is_err() || w * h == 0);
}

/// Any bytes as a WebDataset shard: the strict reader refuses damage, the lenient one keeps
/// whole samples; neither panics, and a strictly read shard reads the same leniently.
pub fn shard(data: &[u8]) {
    let path = Path::new("fuzz.tar");
    let (lenient, problems) = read_shard_bytes(path, data, false);
    let (strict, strict_problems) = read_shard_bytes(path, data, true);
    if strict_problems.is_empty() {
        assert!(problems.is_empty());
        assert_eq!(strict, lenient);
    } else {
        assert!(!problems.is_empty() && strict.is_empty());
    }
}

/// Any text as a training config: parsed and validated, or a sentence.
pub fn train_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = TrainConfig::parse(text) {
        for devices in [1, 2, 3] {
            let _ = cfg.validate(devices);
        }
        let _ = cfg.model.validate();
        let _ = cfg.to_string();
    }
}
