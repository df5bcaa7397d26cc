//! A run started before the trainer's reshape (objectives as types, `train` as a loop) resumes
//! after it and continues as the old trainer did: `fixtures/pre-reshape-run` holds the old
//! trainer's config, step-4 checkpoint and log, and the log it wrote when it resumed to step 6.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use glide_train::checkpoint::{Checkpoint, checkpoint_path};
use glide_train::log::{CsvLog, LogRow};
use glide_train::{TrainConfig, TrainOptions, train};

type B = Autodiff<Flex>;

mod common;
use common::{scratch, shapes_folder};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre-reshape-run")
}

/// `a` and `b` agree to `rel` (relative). Today they agree bit for bit; the tolerance lets a later
/// change of rounding (a fused kernel) through, not a different optimiser state, EMA or data order.
fn close(what: &str, a: f64, b: f64, rel: f64) {
    assert!(
        (a - b).abs() <= rel * b.abs().max(1e-12),
        "{what}: {a} (today's trainer) against {b} (the old trainer)"
    );
}

#[test]
fn a_run_started_before_the_reshape_resumes_and_continues_as_the_old_trainer_did() {
    let dir = scratch("pre-reshape");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    for f in ["config.json", "checkpoint.safetensors", "log.csv"] {
        std::fs::copy(fixture().join(f), run.join(f)).unwrap();
    }
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    shapes_folder(&data);

    // The old config.json has none of the keys added since (the distillation recipe, loss
    // weighting, learning-rate decay, the non-finite step limit, data balance): they take their
    // defaults.
    let mut cfg = TrainConfig::read(&run.join("config.json")).expect("the old config.json loads");
    assert_eq!(cfg.steps, 4);
    assert!(cfg.distill.is_none() && cfg.lr_decay.is_none() && cfg.min_snr_gamma.is_none());
    let old = Checkpoint::load(&checkpoint_path(&run)).expect("the old checkpoint loads");
    assert_eq!(old.step, 4);

    cfg.data.folder = Some(data.to_string_lossy().into_owned());
    cfg.out_dir = run.to_string_lossy().into_owned();
    cfg.steps = 6;
    let opts = TrainOptions {
        resume: true,
        quiet: true,
        ..Default::default()
    };
    let out = train::<B>(cfg, vec![Default::default()], opts).expect("the old run resumes");
    assert_eq!(out.step, 6);

    let ours = CsvLog::read(&run.join("log.csv")).unwrap();
    let theirs = CsvLog::read(&fixture().join("continued.csv")).unwrap();
    assert_eq!(
        ours.len(),
        6,
        "steps 1–4 kept from the old log, 5–6 appended"
    );
    assert_eq!(theirs.len(), 6);
    let old_rows = CsvLog::read(&fixture().join("log.csv")).unwrap();
    let no_speed = |r: &LogRow| LogRow {
        images_per_s: 0.0,
        ..r.clone()
    };
    for (a, b) in ours.iter().zip(&old_rows) {
        assert_eq!(no_speed(a), no_speed(b), "the old rows are kept as written");
    }
    for (a, b) in ours[4..].iter().zip(&theirs[4..]) {
        assert_eq!(a.step, b.step);
        let step = a.step;
        close(&format!("loss at step {step}"), a.loss, b.loss, 1e-3);
        close(&format!("mse at step {step}"), a.mse, b.mse, 1e-3);
        close(
            &format!("grad norm at {step}"),
            a.grad_norm,
            b.grad_norm,
            1e-3,
        );
        close(&format!("lr at step {step}"), a.lr, b.lr, 1e-9);
    }
    let (a, b) = (&ours[5], &theirs[5]);
    for (what, x, y) in [
        ("held-out loss", a.heldout_loss, b.heldout_loss),
        ("EMA held-out loss", a.ema_heldout_loss, b.ema_heldout_loss),
    ] {
        let (x, y) = (x.expect("evaluated at step 6"), y.expect("old log"));
        close(&format!("{what} at step 6"), x, y, 1e-3);
    }
}
