//! `glide convert` on the PyTorch checkpoints of `../shared/fixtures/glide-reference/pytorch/`
//! (written by PyTorch 2.15 from the reference constructors; see that folder's README):
//! converted parameters equal the safetensors fixtures' exactly, the converted weights reproduce
//! the reference outputs through `glide check --weights`, and a hostile or damaged file is refused
//! with a sentence.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::DType;
use glide_model::pytorch::{ConvertError, read_pytorch};
use glide_model::weights::StateDict;

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("GLIDE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/fixtures/glide-reference")
        });
    assert!(
        dir.join("pytorch").is_dir(),
        "GLIDE reference fixtures are missing at {}: they are expected in \
         ../shared/fixtures/glide-reference beside the repository (or set GLIDE_FIXTURES).",
        dir.display()
    );
    dir
}

fn safetensors(path: &Path) -> StateDict {
    StateDict::from_safetensors(&std::fs::read(path).unwrap()).unwrap()
}

fn glide(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_glide"))
        .args(args)
        .output()
        .expect("the glide binary runs")
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glide-convert-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `glide convert` of the fixture checkpoint `pytorch/{pt}` into `out` with the options of the
/// fixture `options_from` (and `extra` flags); returns the written file and what it printed.
fn convert(out: &Path, pt: &str, options_from: &str, extra: &[&str]) -> (PathBuf, String) {
    let dir = fixtures();
    let converted = out.join(pt.replace(".pt", ".safetensors"));
    let (from, options) = (dir.join("pytorch").join(pt), dir.join(options_from));
    let mut args = vec![
        "convert",
        "--from",
        from.to_str().unwrap(),
        "--out",
        converted.to_str().unwrap(),
        "--options-from",
        options.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = glide(&args);
    assert!(
        run.status.success(),
        "{pt}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    (converted, String::from_utf8_lossy(&run.stdout).into_owned())
}

/// Every tensor of `expected` (with `prefix`) is in `actual` with identical values, and nothing else.
fn assert_same_params(actual: &StateDict, expected: &StateDict, prefix: &str, f16: bool) {
    let expected = expected.strip_prefix(prefix);
    assert_eq!(
        actual.tensors.keys().collect::<Vec<_>>(),
        expected.tensors.keys().collect::<Vec<_>>(),
        "key sets ({prefix})"
    );
    for (key, want) in &expected.tensors {
        let got = &actual.tensors[key];
        assert_eq!(got.shape, want.shape, "{key}");
        let want = if f16 {
            want.clone().convert::<burn::tensor::f16>().convert::<f32>()
        } else {
            want.clone()
        };
        let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        let same = g.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && g.len() == w.len(), "{key}: values differ");
    }
}

#[test]
fn converted_unets_equal_the_fixtures_and_reproduce_their_outputs() {
    let dir = fixtures();
    let out = out_dir("unet");
    for (pt, fixture, dtype, preset) in [
        ("text2im_tiny.pt", "text2im_tiny.safetensors", "f32", "base"),
        (
            "text2im_tiny_fp16.pt",
            "text2im_tiny.safetensors",
            "f16",
            "base",
        ),
        (
            "inpaint_tiny.pt",
            "inpaint_tiny.safetensors",
            "f32",
            "base-inpaint",
        ),
        (
            "upsample_tiny.pt",
            "upsample_tiny.safetensors",
            "f32",
            "upsample",
        ),
    ] {
        let (converted, stdout) = convert(&out, pt, fixture, &["--dtype", dtype]);
        let fixture = dir.join(fixture);
        assert!(stdout.contains(&format!(": {preset} (")), "{pt}: {stdout}");

        let state = safetensors(&converted);
        assert_eq!(state.metadata["preset"], preset, "{pt}");
        assert_same_params(&state, &safetensors(&fixture), "param.", dtype == "f16");

        let check_as = |param_dtype: &str| {
            glide(&[
                "check",
                "--fixture",
                fixture.to_str().unwrap(),
                "--weights",
                converted.to_str().unwrap(),
                // f16 weights move the outputs by ~1e-3 relative
                "--tolerance",
                if dtype == "f16" { "1e-2" } else { "1e-4" },
                "--param-dtype",
                param_dtype,
            ])
        };
        let check = check_as("f32");
        let report = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{pt}: {report}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(report.matches(" ok").count(), 3, "{pt}: {report}");
        assert!(report.contains("(matches n_params)"), "{pt}: {report}");
        if dtype == "f16" {
            // Held in f16 on the device (as the page does on a `shader-f16` GPU), the f16 file
            // computes exactly what it computes widened to f32 at load: the same errors.
            let held = check_as("f16");
            let held = String::from_utf8_lossy(&held.stdout);
            let errors = |r: &str| {
                r.lines()
                    .filter(|l| l.contains("relative L2"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(errors(&held), errors(&report), "{pt}");
            assert!(report.contains("parameters held in f32"), "{report}");
            assert!(held.contains("parameters held in f16"), "{held}");
        }
    }
}

#[test]
fn released_options_are_used_when_none_are_given() {
    // Without --options the tiny file is read as the released base: its shapes fix the widths,
    // the preset the rest (64 px, 64-channel heads), which this file's 32-channel attention
    // cannot have, so the converter says which options to pass.
    let dir = fixtures();
    let out = out_dir("defaults");
    let from = dir.join("pytorch/text2im_tiny.pt");
    let target = out.join("x.safetensors");
    let convert = |extra: &[&str]| {
        let mut args = vec![
            "convert",
            "--from",
            from.to_str().unwrap(),
            "--out",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        glide(&args)
    };
    let run = convert(&[]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("num_head_channels") && stderr.contains("--options"),
        "{stderr}"
    );
    assert!(
        !target.exists(),
        "nothing is written for a failed conversion"
    );
    let run = convert(&[
        "--options",
        r#"{"image_size": 16, "num_head_channels": 16, "xf_heads": 4}"#,
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let state = safetensors(&target);
    let options: serde_json::Value = serde_json::from_str(&state.metadata["options"]).unwrap();
    let fixture = safetensors(&dir.join("text2im_tiny.safetensors"));
    let want: serde_json::Value = serde_json::from_str(&fixture.metadata["options"]).unwrap();
    for key in [
        "num_channels",
        "num_res_blocks",
        "channel_mult",
        "attention_resolutions",
        "text_ctx",
        "xf_width",
        "xf_layers",
        "noise_schedule",
        "inpaint",
        "super_res",
    ] {
        assert_eq!(options[key], want[key], "{key} read from the shapes");
    }
}

#[test]
fn clip_towers_convert_to_the_fixture_parameters() {
    let dir = fixtures();
    let out = out_dir("clip");
    let reference = safetensors(&dir.join("noised_clip_tiny.safetensors"));
    for (pt, prefix, preset) in [
        (
            "noised_clip_tiny_image_enc.pt",
            "image.",
            "clip-image-encoder",
        ),
        ("noised_clip_tiny_text_enc.pt", "text.", "clip-text-encoder"),
    ] {
        let (converted, _) = convert(&out, pt, "noised_clip_tiny.safetensors", &[]);
        let state = safetensors(&converted);
        assert_eq!(state.metadata["preset"], preset);
        assert_same_params(&state, &reference, prefix, false);
        let config: serde_json::Value = serde_json::from_str(&state.metadata["config"]).unwrap();
        let want: serde_json::Value = serde_json::from_str(&reference.metadata["config"]).unwrap();
        for (key, value) in config.as_object().unwrap() {
            assert_eq!(value, &want[key], "{pt}: config {key}");
        }
    }
}

#[test]
fn a_hostile_pickle_is_refused_by_name_and_never_runs() {
    let marker = Path::new("/tmp/glide-pickle-ran");
    let _ = std::fs::remove_file(marker);
    let path = fixtures().join("pytorch/code_execution.pt");
    let err = read_pytorch(&path).unwrap_err();
    assert!(
        matches!(&err, ConvertError::RefusedGlobal { global, .. } if global.contains("system")),
        "{err}"
    );
    assert!(err.to_string().contains("posix.system"), "{err}");
    let run = glide(&[
        "convert",
        "--from",
        path.to_str().unwrap(),
        "--out",
        out_dir("hostile").join("x.safetensors").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("refusing") && stderr.contains("posix.system"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the hostile pickle ran");
}

#[test]
fn damaged_archives_give_a_sentence_not_a_panic() {
    let bytes = std::fs::read(fixtures().join("pytorch/upsample_tiny.pt")).unwrap();
    let dir = out_dir("damaged");
    // (what, bytes, whether it must be refused)
    let mut cases: Vec<(String, Vec<u8>, bool)> =
        [0, 1, 100, 4096, bytes.len() / 2, bytes.len() - 1]
            .into_iter()
            .map(|n| (format!("truncated at {n}"), bytes[..n].to_vec(), true))
            .collect();
    // Flipped bytes in the pickle region and in the zip directory at the end: refused, or (a
    // flip inside tensor data) read as other numbers.
    for at in [40, 200, 700, bytes.len() - 30, bytes.len() - 200] {
        let mut b = bytes.clone();
        b[at] ^= 0x5a;
        cases.push((format!("byte {at} flipped"), b, false));
    }
    let mut refused = 0;
    for (what, b, must_fail) in cases {
        let path = dir.join("damaged.pt");
        std::fs::write(&path, &b).unwrap();
        match read_pytorch(&path) {
            Ok((state, _)) => {
                assert!(!must_fail, "{what}: read without an error");
                assert!(!state.tensors.is_empty(), "{what}");
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("damaged.pt"), "{what}: {msg}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 6, "only {refused} damaged files refused");
    let state = read_pytorch(&fixtures().join("pytorch/upsample_tiny.pt"))
        .unwrap()
        .0;
    assert!(state.tensors.values().all(|t| t.dtype == DType::F32));
}

#[test]
fn converted_base_and_upsampler_run_as_a_cascade() {
    // The reference 16 px base and the 16 → 32 px upsampler, converted, then sampled as GLIDE's
    // cascade: one PNG per stage at each model's size.
    let out = out_dir("cascade");
    let weights: Vec<PathBuf> = ["text2im_tiny", "upsample_tiny"]
        .iter()
        .map(|name| {
            convert(
                &out,
                &format!("{name}.pt"),
                &format!("{name}.safetensors"),
                &[],
            )
            .0
        })
        .collect();
    let (base_png, up_png) = (out.join("base.png"), out.join("up.png"));
    let run = glide(&[
        "sample",
        "--weights",
        weights[0].to_str().unwrap(),
        "--upsampler",
        weights[1].to_str().unwrap(),
        "--prompt",
        "a red apple",
        "--n",
        "2",
        "--steps",
        "3",
        "--upsample-respacing",
        "3",
        "--base-out",
        base_png.to_str().unwrap(),
        "--out",
        up_png.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Two images side by side (a 2-column grid) at 16 and 32 px.
    for (png, size) in [(&base_png, 16), (&up_png, 32)] {
        let img = image::open(png).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (2 * size, size),
            "{}",
            png.display()
        );
    }
    // The upsampler is not a text-to-image model, and the base not an upsampler.
    let run = glide(&[
        "sample",
        "--weights",
        weights[1].to_str().unwrap(),
        "--upsampler",
        weights[0].to_str().unwrap(),
        "--prompt",
        "x",
        "--out",
        out.join("bad.png").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("text-to-image needs a base model"),
        "{stderr}"
    );
}

/// The tiny base model and the two towers of the tiny noised CLIP, converted into `out`.
fn converted_base_and_clip(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let convert = |pt: &str, options_from: &str| convert(out, pt, options_from, &[]).0;
    (
        convert("text2im_tiny.pt", "text2im_tiny.safetensors"),
        convert(
            "noised_clip_tiny_image_enc.pt",
            "noised_clip_tiny.safetensors",
        ),
        convert(
            "noised_clip_tiny_text_enc.pt",
            "noised_clip_tiny.safetensors",
        ),
    )
}

#[test]
fn converted_clip_towers_guide_sampling() {
    // The two converted towers of the reference noised CLIP (16 px) guide the converted 16 px
    // base model: with a large CLIP scale the sample differs from the unguided one.
    let out = out_dir("clip-guided");
    let (base, image, text) = converted_base_and_clip(&out);
    let sample = |scale: &str| {
        let raw = out.join(format!("raw-{scale}.safetensors"));
        let run = glide(&[
            "sample",
            "--weights",
            base.to_str().unwrap(),
            "--clip",
            image.to_str().unwrap(),
            "--clip",
            text.to_str().unwrap(),
            "--clip-guidance",
            scale,
            "--guidance",
            "1",
            "--steps",
            "4",
            "--prompt",
            "a red apple",
            "--out",
            out.join(format!("{scale}.png")).to_str().unwrap(),
            "--save-raw",
            raw.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        safetensors(&raw).tensors["samples"]
            .to_vec::<f32>()
            .unwrap()
    };
    let (plain, guided) = (sample("0"), sample("50"));
    let diff = plain
        .iter()
        .zip(&guided)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 1e-2,
        "CLIP guidance changed nothing (max |Δ| {diff})"
    );
    // Without --clip the flag is refused by the argument parser.
    let run = glide(&["sample", "--clip-guidance", "3", "--prompt", "x"]);
    assert!(!run.status.success());
    // A CLIP trained for another model's vocabulary (`glide train-clip` writes it) is refused.
    let mut foreign = safetensors(&text);
    foreign
        .metadata
        .insert("vocab".into(), r#"{"ids":[1,2,3]}"#.into());
    let foreign_path = out.join("foreign-text.safetensors");
    std::fs::write(&foreign_path, foreign.to_safetensors(false)).unwrap();
    let run = glide(&[
        "sample",
        "--weights",
        base.to_str().unwrap(),
        "--clip",
        image.to_str().unwrap(),
        "--clip",
        foreign_path.to_str().unwrap(),
        "--clip-guidance",
        "3",
        "--prompt",
        "x",
        "--out",
        out.join("foreign.png").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("another vocabulary") && err.contains("vocab_from"),
        "{err}"
    );
}

/// Twelve captioned 16 px pictures of coloured shapes in `dir` (a `data.folder`).
fn shapes_folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (ci, (name, rgb)) in [("red", [220u8, 30, 30]), ("blue", [40, 60, 220])]
        .iter()
        .enumerate()
    {
        for (si, shape) in ["circle", "square", "bar"].iter().enumerate() {
            for variant in 0..2u32 {
                let img = image::RgbImage::from_fn(16, 16, |x, y| {
                    let (dx, dy) = (x as f32 - 7.5, y as f32 - 7.5 + variant as f32);
                    let inside = match si {
                        0 => dx * dx + dy * dy < 36.0,
                        1 => dx.abs() < 5.0 && dy.abs() < 5.0,
                        _ => dy.abs() < 2.0,
                    };
                    image::Rgb(if inside { *rgb } else { [255, 255, 255] })
                });
                let stem = dir.join(format!("{ci}-{si}-{variant}"));
                img.save(stem.with_extension("png")).unwrap();
                std::fs::write(stem.with_extension("txt"), format!("a {name} {shape}")).unwrap();
            }
        }
    }
}

#[test]
fn eval_sweep_scores_both_guidance_methods() {
    // The converted 16 px base model, scored by the reference noised CLIP (one file, both
    // towers) and guided by its converted towers: a table of both methods and the plot. The same
    // CLIP scores and guides here, so strong CLIP guidance must raise the CLIP score.
    let out = out_dir("eval");
    let (base, image, text) = converted_base_and_clip(&out);
    let data = out.join("shapes");
    shapes_folder(&data);
    let plot = out.join("tradeoff.png");
    let eval_clip = fixtures().join("noised_clip_tiny.safetensors");
    let run = glide(&[
        "eval",
        "sweep",
        "--weights",
        base.to_str().unwrap(),
        "--clip",
        eval_clip.to_str().unwrap(),
        "--guide-clip",
        image.to_str().unwrap(),
        "--guide-clip",
        text.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--samples",
        "6",
        "--guidance",
        "1,3",
        "--clip-guidance",
        "0,200",
        "--steps",
        "3",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // | method | scale | CLIP score | R-precision | Fréchet distance | n |
    let rows: Vec<Vec<String>> = stdout
        .lines()
        .filter(|l| l.starts_with("| classifier-free") || l.starts_with("| CLIP |"))
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    let num = |r: &[String], i: usize| -> f64 { r[i].trim_end_matches('%').parse().unwrap() };
    for r in &rows {
        assert!(num(r, 3).abs() <= 100.0, "{stdout}");
        assert!((0.0..=100.0).contains(&num(r, 4)), "{stdout}");
        assert!(num(r, 5) >= 0.0 && num(r, 5).is_finite(), "{stdout}");
        assert_eq!(r[6], "6");
    }
    // Every point starts from the same noise: CLIP guidance at 0 is no guidance at all.
    assert_eq!(rows[0][3..6], rows[2][3..6], "{stdout}");
    assert!(num(&rows[3], 3) > num(&rows[2], 3) + 1.0, "{stdout}");
    let png = std::fs::read(&plot).expect("the sweep writes its plot");
    assert!(png.starts_with(b"\x89PNG"));
}
