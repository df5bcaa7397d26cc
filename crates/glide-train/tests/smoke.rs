//! The shipped smoke config trains on the CPU: the loss on fixed images, t and noise goes down, a
//! resumed run equals an uninterrupted one bit for bit, and broken inputs are reported by name.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use glide_diffusion::{GaussianDiffusion, NoiseSchedule};
use glide_model::weights::apply_state_dict;
use glide_tokenizer::{PrunedVocab, Tokenizer};
use glide_train::batch::{TrainData, eval_batch};
use glide_train::checkpoint::Checkpoint;
use glide_train::checkpoint::checkpoint_path;
use glide_train::log::CsvLog;
use glide_train::objective::hybrid::Hybrid;
use glide_train::step::evaluate;
use glide_train::{TrainConfig, TrainError, TrainOptions, train};

type B = Autodiff<Flex>;

mod common;
use common::{scratch, shapes_folder};

fn smoke_config(name: &str) -> TrainConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke.json");
    let mut cfg = TrainConfig::read(&root).expect("configs/smoke.json loads");
    let dir = scratch(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    shapes_folder(&data);
    cfg.data.shards = None;
    cfg.data.folder = Some(dir.join("data").to_string_lossy().into_owned());
    cfg.data.heldout_fraction = 0.2;
    cfg.out_dir = dir.join("run").to_string_lossy().into_owned();
    cfg.sample_every = 0;
    cfg
}

/// burn's backend RNG (initialisation, dropout) is process-wide: tests in parallel threads would
/// share it, so the tests that train or build models take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

fn resume_quietly() -> TrainOptions {
    TrainOptions {
        resume: true,
        ..quiet()
    }
}

#[test]
fn smoke_config_lowers_the_loss_on_fixed_images_t_and_noise() {
    let _serial = serial();
    let mut cfg = smoke_config("loss");
    cfg.steps = 30;
    cfg.dropout_free();
    let out = train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    assert_eq!(out.step, 30);
    assert!(
        out.rows
            .iter()
            .all(|r| r.loss.is_finite() && r.grad_norm.is_finite())
    );
    assert!(out.rows.iter().any(|r| r.heldout_loss.is_some()));
    assert!(Path::new(&cfg.out_dir).join("loss.png").exists());
    assert!(Path::new(&cfg.out_dir).join("ema.safetensors").exists());

    // Fixed training images, t and noise: the fresh model vs the trained one.
    let ck = Checkpoint::load(&checkpoint_path(Path::new(&cfg.out_dir))).unwrap();
    let vocab: PrunedVocab = serde_json::from_str(ck.vocab.as_deref().unwrap()).unwrap();
    let mut mcfg = cfg.model.clone();
    mcfg.n_vocab = vocab.ids.len();
    let tok = Tokenizer::gpt2().with_pruned(&vocab).unwrap();
    let data = TrainData::load(&cfg.data, mcfg.image_size).unwrap();
    assert_eq!(
        data.train.len() + data.heldout.len(),
        12,
        "{}",
        data.summary
    );
    let diffusion = GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
    let fixed = eval_batch(
        &data.train,
        16,
        &tok,
        mcfg.image_size,
        mcfg.text_ctx,
        1000,
        1,
        false,
    )
    .unwrap();
    let device = burn::backend::flex::FlexDevice;
    let fresh = mcfg.init::<Flex>(&device);
    let (trained, report) = apply_state_dict(mcfg.init::<Flex>(&device), &ck.model);
    assert!(report.is_clean(), "{report}");
    let hybrid = Hybrid {
        diffusion,
        min_snr_gamma: None,
    };
    let (before, _, _) = evaluate(&fixed, 16, |rows| {
        hybrid.terms(&fresh, &fixed, rows, &device, None)
    });
    let (after, _, _) = evaluate(&fixed, 16, |rows| {
        hybrid.terms(&trained, &fixed, rows, &device, None)
    });
    assert!(before.is_finite() && after.is_finite());
    assert!(after < 0.8 * before, "loss {before} → {after}");
}

trait DropoutFree {
    fn dropout_free(&mut self);
}
impl DropoutFree for TrainConfig {
    fn dropout_free(&mut self) {
        self.model.dropout = 0.0;
    }
}

#[test]
fn resume_gives_a_bit_identical_loss_curve() {
    let _serial = serial();
    let mut cfg = smoke_config("resume-a");
    cfg.steps = 8;
    cfg.checkpoint_every = 4;
    cfg.eval_every = 4;
    let straight = train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    assert_eq!(straight.step, 8);

    let mut cfg_b = cfg.clone();
    cfg_b.out_dir = scratch("resume-b")
        .join("run")
        .to_string_lossy()
        .into_owned();
    let first = train::<B>(
        cfg_b.clone(),
        vec![Default::default()],
        TrainOptions {
            stop_after: Some(3),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(first.interrupted);
    assert_eq!(first.step, 3);
    let resumed = train::<B>(cfg_b.clone(), vec![Default::default()], resume_quietly()).unwrap();
    assert_eq!(resumed.step, 8);
    // The CSV logs, as written to disk, agree in every column but the throughput.
    let read = |dir: &str| {
        let mut rows = CsvLog::read(&Path::new(dir).join("log.csv")).unwrap();
        rows.iter_mut().for_each(|r| r.images_per_s = 0.0);
        rows
    };
    let (a, mut b) = (read(&cfg.out_dir), read(&cfg_b.out_dir));
    assert_eq!(a.len(), 8, "one row per step");
    // The interrupted invocation evaluated the step it stopped on; the straight run did not.
    let stop_row = &mut b[2];
    assert_eq!(stop_row.step, 3);
    assert!(
        stop_row.heldout_loss.is_some() && stop_row.ema_heldout_loss.is_some(),
        "the step a run stops on has no evaluation"
    );
    assert!(a[2].heldout_loss.is_none());
    stop_row.heldout_loss = None;
    stop_row.heldout_mse = None;
    stop_row.heldout_vb = None;
    stop_row.ema_heldout_loss = None;
    assert!(a.iter().all(|r| r.grad_norm > 0.0));
    assert_eq!(a, b, "the resumed loss curve differs");
    let a = Checkpoint::load(&checkpoint_path(Path::new(&cfg.out_dir))).unwrap();
    let b = Checkpoint::load(&checkpoint_path(Path::new(&cfg_b.out_dir))).unwrap();
    for (k, v) in &a.model.tensors {
        assert_eq!(v, &b.model.tensors[k], "{k}");
    }
    for (k, v) in &a.ema.tensors {
        assert_eq!(v, &b.ema.tensors[k], "ema {k}");
    }
    assert_eq!(a.optim.len(), b.optim.len());
}

#[test]
fn a_truncated_checkpoint_is_reported_by_name() {
    let _serial = serial();
    let mut cfg = smoke_config("truncated");
    cfg.steps = 1;
    train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    let path = checkpoint_path(Path::new(&cfg.out_dir));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    cfg.steps = 2;
    let err = train::<B>(cfg, vec![Default::default()], resume_quietly()).unwrap_err();
    assert!(matches!(err, TrainError::BadCheckpoint(..)), "{err}");
    assert!(err.to_string().contains("checkpoint.safetensors"), "{err}");
}

#[test]
fn non_finite_steps_are_skipped_and_a_run_of_them_stops_training_keeping_the_checkpoint() {
    let _serial = serial();
    let mut cfg = smoke_config("nonfinite");
    // Two sound steps and a checkpoint, then a learning rate that blows the weights up.
    cfg.steps = 2;
    train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    let path = checkpoint_path(Path::new(&cfg.out_dir));
    cfg.steps = 40;
    cfg.lr = 1e30;
    cfg.warmup_steps = 0;
    cfg.grad_clip = None;
    cfg.checkpoint_every = 1;
    cfg.max_nonfinite_steps = Some(3);
    let err = train::<B>(cfg.clone(), vec![Default::default()], resume_quietly()).unwrap_err();
    let TrainError::NonFinite(_, step, in_a_row) = err else {
        panic!("expected a non-finite stop, got {err}");
    };
    assert_eq!(in_a_row, 3, "{err}");
    assert!(step < 40, "stopped at step {step}");
    // No checkpoint was written by a skipped step: the last one is from before the skips and
    // holds finite weights.
    let after = Checkpoint::load(&path).unwrap();
    assert!(
        (2..=step - 3).contains(&after.step),
        "checkpoint at {} (stopped at {step})",
        after.step
    );
    for (k, t) in &after.ema.tensors {
        let v = t.clone().convert::<f32>().to_vec::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{k} is not finite");
    }
    let rows = CsvLog::read(&Path::new(&cfg.out_dir).join("log.csv")).unwrap();
    assert!(
        rows.iter().all(|r| r.loss.is_finite()),
        "a skipped step was logged"
    );
}

/// A disk that fills up mid-run (the checkpoint's temporary file is a link to Linux's
/// `/dev/full`): the run stops with a sentence and the previous checkpoint still resumes.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_stops_the_run_with_a_sentence_and_keeps_the_last_checkpoint() {
    let _serial = serial();
    let mut cfg = smoke_config("full-disk");
    cfg.steps = 2;
    cfg.checkpoint_every = 2;
    train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    let path = checkpoint_path(Path::new(&cfg.out_dir));
    let before = std::fs::read(&path).unwrap();
    let tmp = path.with_file_name("checkpoint.safetensors.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    cfg.steps = 4;
    let err = train::<B>(cfg.clone(), vec![Default::default()], resume_quietly()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("checkpoint.safetensors") && msg.contains("Free some disk space"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the checkpoint changed"
    );
    assert!(std::fs::symlink_metadata(&tmp).is_err());
    // With room again, the run resumes from step 2 and finishes.
    let done = train::<B>(cfg, vec![Default::default()], resume_quietly()).unwrap();
    assert_eq!(done.step, 4);
}

#[test]
fn two_devices_split_the_batch_and_agree_with_one() {
    let _serial = serial();
    let mut cfg = smoke_config("devices");
    cfg.steps = 2;
    cfg.model.dropout = 0.0;
    let one = train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    cfg.out_dir = scratch("devices-2")
        .join("run")
        .to_string_lossy()
        .into_owned();
    let two = train::<B>(cfg, vec![Default::default(); 2], quiet()).unwrap();
    // Two workers on their own threads: the same logged rows as one.
    assert_eq!(one.rows.len(), two.rows.len());
    assert!(!one.rows.is_empty());
    for (a, b) in one.rows.iter().zip(&two.rows) {
        assert!(
            (a.loss - b.loss).abs() < 1e-4 * a.loss.abs().max(1.0),
            "{a:?} vs {b:?}"
        );
    }
}

#[test]
fn init_fine_tunes_from_exported_weights_and_keeps_their_vocabulary() {
    let _serial = serial();
    let mut cfg = smoke_config("init-base");
    cfg.steps = 2;
    train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    let base = Path::new(&cfg.out_dir).join("ema.safetensors");
    let mut ft = smoke_config("init-ft");
    ft.steps = 2;
    let out = train::<B>(
        ft.clone(),
        vec![Default::default()],
        TrainOptions {
            init: Some(base.clone()),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(out.step, 2);
    let a = Checkpoint::load(&checkpoint_path(Path::new(&cfg.out_dir))).unwrap();
    let b = Checkpoint::load(&checkpoint_path(Path::new(&ft.out_dir))).unwrap();
    assert_eq!(a.vocab, b.vocab);
    // A missing --init file is an error that names it.
    let err = train::<B>(
        ft,
        vec![Default::default()],
        TrainOptions {
            init: Some(base.with_file_name("nope.safetensors")),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope.safetensors"), "{err}");
}

#[test]
fn an_inpainting_fine_tune_starts_from_base_weights_and_writes_an_inpainting_model() {
    let _serial = serial();
    let mut cfg = smoke_config("inpaint-base");
    cfg.steps = 2;
    train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    let base = Path::new(&cfg.out_dir).join("ema.safetensors");
    let mut ft = smoke_config("inpaint-ft");
    ft.steps = 3;
    ft.model.inpaint = true;
    ft.sample_every = 3;
    ft.sample_steps = 2;
    let out = train::<B>(
        ft.clone(),
        vec![Default::default()],
        TrainOptions {
            init: Some(base),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(out.rows.iter().all(|r| r.loss.is_finite()));
    let ema = std::fs::read(Path::new(&ft.out_dir).join("ema.safetensors")).unwrap();
    let state = glide_model::weights::StateDict::from_safetensors(&ema).unwrap();
    let config = glide_model::weights::config_from_metadata(&state).unwrap();
    assert!(
        config.inpaint,
        "the fine-tune did not write an inpainting model"
    );
    assert_eq!(
        state.tensors[glide_model::weights::INPUT_CONV].shape[1],
        7,
        "x_t + masked image + mask"
    );
    // The sample grid shows edits: original, masked, fill per held-out case.
    let grid = Path::new(&ft.out_dir).join("samples/step-0000003.png");
    let img = image::open(&grid).unwrap();
    assert_eq!(img.width(), 3 * ft.model.image_size as u32);
    // Text-to-image weights cannot be loaded as an inpainting run's resume point.
    let mut wrong = ft.clone();
    wrong.model.inpaint = false;
    assert!(train::<B>(wrong, vec![Default::default()], resume_quietly(),).is_err());
}

#[test]
fn guidance_then_progressive_distillation_write_students_that_sample_in_their_own_steps() {
    use glide_train::{DistillSpec, DistillStage};
    let _serial = serial();
    let mut cfg = smoke_config("distill-teacher");
    cfg.steps = 2;
    train::<B>(cfg.clone(), vec![Default::default()], quiet()).unwrap();
    let teacher = Path::new(&cfg.out_dir).join("ema.safetensors");
    let distill = |name: &str, init: &Path, teacher: &Path, stage| {
        let mut c = smoke_config(name);
        c.steps = 3;
        c.sample_every = 3;
        c.sample_steps = 4;
        c.distill = Some(DistillSpec {
            teacher: teacher.to_path_buf(),
            stage,
        });
        let out = train::<B>(
            c.clone(),
            vec![Default::default()],
            TrainOptions {
                init: Some(init.to_path_buf()),
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        // The run's config.json holds the whole recipe, teacher and stage included.
        let written = TrainConfig::read(&Path::new(&c.out_dir).join("config.json")).unwrap();
        assert_eq!(written.distill, c.distill, "{name}");
        assert!(out.rows.iter().all(|r| r.loss.is_finite()), "{name}");
        let path = Path::new(&c.out_dir).join("ema.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let pipe =
            glide_pipeline::Text2Im::<Flex>::from_safetensors(&bytes, &Default::default()).unwrap();
        assert!(pipe.is_student());
        (path, pipe)
    };
    let (stage1, pipe) = distill(
        "distill-guidance",
        &teacher,
        &teacher,
        DistillStage::Guidance,
    );
    assert_eq!(pipe.config.student_steps, None);
    // Stage 1 can go on from an earlier stage-1 student (`glide distill guidance --init`).
    let (stage1, pipe) = distill(
        "distill-guidance-more",
        &stage1,
        &teacher,
        DistillStage::Guidance,
    );
    assert_eq!(pipe.config.student_steps, None);
    let (progressive, pipe) = distill(
        "distill-progressive",
        &stage1,
        &stage1,
        DistillStage::Progressive { teacher_steps: 64 },
    );
    assert_eq!(pipe.config.student_steps, Some(32));
    // The rounds as a library loop: 32 → 16 → 8, each round the last one's student.
    let mut rounds_cfg = smoke_config("distill-rounds");
    rounds_cfg.steps = 2;
    let mut finished = Vec::new();
    let last = glide_train::rounds::progressive_rounds::<B>(
        &rounds_cfg,
        &progressive,
        (32, 8),
        &[Default::default()],
        false,
        |n, _| finished.push(n),
    )
    .unwrap();
    assert_eq!(finished, [32, 16]);
    assert_eq!(
        last,
        Path::new(&rounds_cfg.out_dir).join("steps-8/ema.safetensors")
    );
    let bytes = std::fs::read(&last).unwrap();
    let eight =
        glide_pipeline::Text2Im::<Flex>::from_safetensors(&bytes, &Default::default()).unwrap();
    assert_eq!(eight.config.student_steps, Some(8));
    let err = glide_train::rounds::progressive_rounds::<B>(
        &rounds_cfg,
        &progressive,
        (32, 6),
        &[Default::default()],
        false,
        |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("powers of two"), "{err}");
    let req = glide_pipeline::GenerateRequest {
        prompt: "a red circle".into(),
        steps: 1000,
        ..Default::default()
    };
    assert_eq!(pipe.generate(&req).unwrap().count(), 32);
    assert_eq!(pipe.evaluations_per_step(&req), 1);
    // The teacher's stored chains fine-tune a student to 4 steps (`glide distill trajectory`).
    let chains = scratch("distill-chains");
    let base_bytes = std::fs::read(&teacher).unwrap();
    let base = glide_pipeline::Text2Im::<Flex>::from_safetensors(&base_bytes, &Default::default())
        .unwrap();
    let captions = TrainData::load(&cfg.data, cfg.model.image_size).unwrap();
    glide_train::trajectories::teacher_trajectories(&base, &captions.train, 6, 3, 0, |i, tr| {
        tr.write(&chains, i, cfg.model.image_size).unwrap()
    })
    .unwrap();
    let mut c = smoke_config("distill-trajectory");
    c.steps = 3;
    c.sample_every = 3;
    c.data = c
        .data
        .with_shards(None)
        .with_folder(Some(chains.to_string_lossy().into_owned()))
        .with_heldout_fraction(0.2);
    c.distill = Some(DistillSpec {
        teacher: chains.clone(),
        stage: DistillStage::Trajectory { steps: 4 },
    });
    let run = |c: TrainConfig| {
        train::<B>(
            c,
            vec![Default::default()],
            TrainOptions {
                init: Some(progressive.clone()),
                quiet: true,
                ..Default::default()
            },
        )
    };
    // Dropped captions would not match the chains.
    c.p_uncond = 0.2;
    let err = run(c.clone()).unwrap_err();
    assert!(err.to_string().contains("p_uncond"), "{err}");
    c.p_uncond = 0.0;
    let out = run(c.clone()).unwrap();
    assert!(out.rows.iter().all(|r| r.loss.is_finite()));
    assert!(out.rows.iter().any(|r| r.heldout_loss.is_some()));
    let bytes = std::fs::read(Path::new(&c.out_dir).join("ema.safetensors")).unwrap();
    let pipe =
        glide_pipeline::Text2Im::<Flex>::from_safetensors(&bytes, &Default::default()).unwrap();
    assert_eq!(pipe.config.student_steps, Some(4));
    assert_eq!(pipe.generate(&req).unwrap().count(), 4);
    // A base model cannot be a progressive teacher.
    let mut c = smoke_config("distill-wrong");
    c.steps = 1;
    c.distill = Some(DistillSpec {
        teacher: teacher.clone(),
        stage: DistillStage::Progressive { teacher_steps: 64 },
    });
    let err = train::<B>(
        c,
        vec![Default::default()],
        TrainOptions {
            init: Some(teacher),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("guidance"), "{err}");
}

#[test]
fn shipped_configs_fit_the_size_budget_of_ten_million_parameters() {
    use burn::module::Module;
    // Building models draws from the backend RNG the other tests seed.
    let _serial = serial();
    for name in [
        "emoji32-cpu.json",
        "emoji32-cpu-snr.json",
        "emoji32-gpu.json",
        "inpaint-emoji32-cpu.json",
        "distill-emoji32-cpu.json",
        "distill-guidance-emoji32-cpu.json",
        "distill-trajectory-emoji32-cpu.json",
        "emoji64.json",
        "smoke.json",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs")
            .join(name);
        let mut cfg = TrainConfig::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.validate(1).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The emoji captions prune GPT-2 to ~6,000 rows.
        cfg.model.n_vocab = 6_000;
        let n = cfg.model.init::<Flex>(&Default::default()).num_params();
        assert!(n <= 10_000_000, "{name}: {n} parameters");
    }
}
