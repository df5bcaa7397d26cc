//! What `glide` says to inputs beyond its limits: a sentence, quickly, and nothing written.

use std::path::PathBuf;
use std::process::Command;

fn glide(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_glide"))
        .args(args)
        .output()
        .expect("the glide binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("glide-limits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_model(dir: &std::path::Path) -> String {
    let path = dir.join("tiny.safetensors").to_string_lossy().into_owned();
    let out = glide(&["init", "--preset", "tiny", "--seed", "1", "--out", &path]);
    assert!(out.status.success(), "{out:?}");
    path
}

#[test]
fn huge_requests_are_refused_and_a_huge_prompt_costs_its_first_tokens() {
    let dir = scratch("requests");
    let model = tiny_model(&dir);
    let png = dir.join("out.png").to_string_lossy().into_owned();
    let out = glide(&[
        "sample",
        "--weights",
        &model,
        "--prompt",
        "x",
        "--n",
        "100000",
        "--steps",
        "1",
        "--out",
        &png,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("1 to 64 images"),
        "{err}"
    );
    assert!(!std::path::Path::new(&png).exists());
    // 100 kB, about as much as one command-line argument may hold on Linux.
    let prompt = "a red apple on a white plate ".repeat(3600);
    let out = glide(&[
        "sample",
        "--weights",
        &model,
        "--prompt",
        &prompt,
        "--steps",
        "1",
        "--out",
        &png,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_image_too_large_to_decode_is_refused_from_its_header() {
    let dir = scratch("image");
    let model = tiny_model(&dir);
    // A 1×1 PNG whose header claims 20,000 × 20,000 pixels (CRC fixed up).
    let mut png = Vec::new();
    image::RgbImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let huge = dir.join("huge.png");
    std::fs::write(&huge, &png).unwrap();
    let out_png = dir.join("out.png").to_string_lossy().into_owned();
    let out = glide(&[
        "img2img",
        "--weights",
        &model,
        "--image",
        &huge.to_string_lossy(),
        "--prompt",
        "x",
        "--steps",
        "2",
        "--out",
        &out_png,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("20000×20000") && err.contains("scale it down"),
        "{err}"
    );
}
