//! The training loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend, DeviceOps};
use burn::tensor::{Tensor, TensorData};
use glide_diffusion::losses::LossTerms;
use glide_diffusion::{GaussianDiffusion, ModelMeanType, NoiseSchedule};
use glide_model::weights::{
    StateDict, apply_state_dict, config_from_metadata, inpaint_from_base, save_weights,
};
use glide_model::{GlideConfig, ImageCond, Text2ImUNet};
use glide_pipeline::image::{batch_to_rgb8, encode_png, grid};
use glide_pipeline::{GenerateRequest, Text2Im};
use glide_tokenizer::{PrunedVocab, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::TrainError;
use crate::batch::{Batch, BatchMaker, Prefetcher, TrainData, eval_batch, mix};
use crate::checkpoint::{Checkpoint, write_atomic};
use crate::config::TrainConfig;
use crate::distill::{DistillStage, Teacher, load_teacher, student_config, student_losses};
use crate::ema::Ema;
use crate::inpaint_eval::{edit_cases, inpaint_grid};
use crate::log::{CsvLog, LogRow, plot_losses};
use crate::optim::{adamw, clip_global_norm, load_optimizer_state, optimizer_state};

/// How to start a run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `<out_dir>/checkpoint.safetensors`.
    pub resume: bool,
    /// Start from these weights (fine-tuning); the vocabulary comes with them.
    pub init: Option<PathBuf>,
    /// Stop (with a checkpoint) once this many steps are done, as if interrupted.
    pub stop_after: Option<usize>,
    /// No progress bar (tests).
    pub quiet: bool,
    /// Distil from a teacher instead of training on the diffusion loss; `init` should then be the
    /// teacher's weights too (the student starts as the teacher).
    pub distill: Option<DistillSpec>,
}

/// A distillation run's teacher.
#[derive(Debug, Clone)]
pub struct DistillSpec {
    pub teacher: PathBuf,
    pub stage: DistillStage,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub step: usize,
    pub rows: Vec<LogRow>,
    /// Stopped early by Ctrl-C, `max_minutes` or `stop_after` (a checkpoint was written).
    pub interrupted: bool,
    /// Training images per second over this invocation (excluding evaluation and sampling).
    pub images_per_s: f64,
    pub out_dir: PathBuf,
    /// Parameters of the trained model (with its pruned vocabulary).
    pub params: usize,
}

/// Paths of a run directory.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("checkpoint.safetensors")
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another handler may exist in an embedding program; training then just isn't interruptible.
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: writing a checkpoint (press Ctrl-C again to quit at once)");
        });
    });
}

/// Tensors of `batch[lo..hi]` and the loss terms of `model` on them: the hybrid diffusion loss,
/// or with a teacher the distillation loss.
fn batch_losses<B: Backend, TB: Backend>(
    model: &Text2ImUNet<B>,
    diffusion: &GaussianDiffusion,
    batch: &Batch,
    rows: std::ops::Range<usize>,
    device: &B::Device,
    teacher: Option<&Teacher<TB>>,
    min_snr_gamma: Option<f64>,
) -> LossTerms<B> {
    let (lo, hi) = (rows.start, rows.end);
    if let Some(teacher) = teacher {
        let targets = teacher.targets(batch, lo, hi);
        return student_losses(model, diffusion, batch, lo, hi, targets, device);
    }
    let n = hi - lo;
    let px = batch.x_start.len() / batch.len();
    let side = ((px / 3) as f64).sqrt() as usize;
    let img = |v: &[f32]| {
        Tensor::<B, 4>::from_data(
            TensorData::new(v[lo * px..hi * px].to_vec(), [n, 3, side, side]),
            device,
        )
    };
    let x_start = img(&batch.x_start);
    let noise = img(&batch.noise);
    let t = &batch.t[lo..hi];
    let (tokens, mask) = batch.text_tensors::<B>(lo, hi, device);
    let x_t = diffusion.q_sample(x_start.clone(), t, noise.clone());
    let ts: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let ts = Tensor::<B, 1>::from_floats(ts.as_slice(), device);
    let cond = if batch.keep.is_empty() {
        ImageCond::none()
    } else {
        let keep = Tensor::<B, 4>::from_data(
            TensorData::new(
                batch.keep[lo * side * side..hi * side * side].to_vec(),
                [n, 1, side, side],
            ),
            device,
        );
        ImageCond::new(Some((x_start.clone(), keep)), None, side)
    };
    let out = model.forward(x_t.clone(), ts, tokens, mask, &cond);
    let weights = min_snr_gamma.map(|g| diffusion.min_snr_weights(t, g));
    diffusion.training_losses(out, x_start, x_t, t, noise, weights.as_deref())
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    f64::from(
        t.into_data()
            .convert::<f32>()
            .as_slice::<f32>()
            .expect("f32")[0],
    )
}

/// Mean (loss, mse, vb) of a model on the fixed held-out batch, in chunks: the unweighted loss
/// of its own objective, and the ε-MSE whatever it predicts (a v model's ε error is √ᾱ_t times
/// its v error), so that runs with either prediction compare.
pub fn evaluate<B: Backend>(
    model: &Text2ImUNet<B>,
    diffusion: &GaussianDiffusion,
    batch: &Batch,
    chunk: usize,
    device: &B::Device,
) -> (f64, f64, f64) {
    evaluate_with::<B, B>(model, diffusion, batch, chunk, device, None)
}

/// [`evaluate`] with the run's teacher, if it distils.
pub fn evaluate_with<B: Backend, TB: Backend>(
    model: &Text2ImUNet<B>,
    diffusion: &GaussianDiffusion,
    batch: &Batch,
    chunk: usize,
    device: &B::Device,
    teacher: Option<&Teacher<TB>>,
) -> (f64, f64, f64) {
    let (mut l, mut m, mut v) = (0.0, 0.0, 0.0);
    let mut lo = 0;
    let predict_v = diffusion.model_mean_type == ModelMeanType::V;
    while lo < batch.len() {
        let hi = (lo + chunk).min(batch.len());
        // Held-out losses are unweighted, comparable between recipes.
        let terms = batch_losses(model, diffusion, batch, lo..hi, device, teacher, None);
        l += scalar(terms.loss.sum());
        m += if predict_v && teacher.is_none() {
            let a: Vec<f32> = batch.t[lo..hi]
                .iter()
                .map(|&t| diffusion.alphas_cumprod[t] as f32)
                .collect();
            scalar((terms.mse * Tensor::<B, 1>::from_floats(a.as_slice(), device)).sum())
        } else {
            scalar(terms.mse.sum())
        };
        v += scalar(terms.vb.sum());
        lo = hi;
    }
    let n = batch.len() as f64;
    (l / n, m / n, v / n)
}

/// One PNG grid: a row per prompt, `cols` seeds per row, sampled from `model`.
#[allow(clippy::too_many_arguments)]
pub fn sample_grid<B: Backend>(
    model: Text2ImUNet<B>,
    config: &GlideConfig,
    vocab: Option<&PrunedVocab>,
    prompts: &[String],
    guidance: f64,
    steps: usize,
    cols: usize,
    device: &B::Device,
) -> Result<Vec<u8>, TrainError> {
    let mut tokenizer = Tokenizer::gpt2();
    if let Some(v) = vocab {
        tokenizer = tokenizer.with_pruned(v)?;
    }
    let pipe = Text2Im::new(model, config.clone(), device.clone()).with_tokenizer(tokenizer);
    let s = config.image_size;
    let mut images = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let req = GenerateRequest {
            prompt: prompt.clone(),
            guidance_scale: guidance,
            steps,
            sampler: glide_diffusion::Sampler::Ddim,
            seed: i as u64,
            batch_size: cols,
            ..Default::default()
        };
        let x = pipe.generate(&req)?.run();
        let raw = x.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
        images.extend(batch_to_rgb8(&raw, cols, s, s));
    }
    let (rgb, w, h) = grid(&images, s, s, cols);
    let text = vec![
        ("prompts".to_string(), prompts.join(" | ")),
        ("guidance".to_string(), guidance.to_string()),
        ("steps".to_string(), format!("ddim{steps}")),
    ];
    Ok(encode_png(&rgb, w, h, &text))
}

/// One worker's share of a step: its loss terms (sums over its examples) and its gradients.
struct DeviceGradients {
    loss: f64,
    mse: f64,
    vb: f64,
    grads: GradientsParams,
    device_id: burn::tensor::backend::DeviceId,
}

/// The batch split evenly over `devices`, each share's loss and gradients computed on its own
/// thread (a forked copy of the model per device). Several entries of the same CPU device are
/// workers that keep every core busy: flex runs a small model's ops on one thread.
///
/// With dropout the shares run one after another instead: dropout draws from the backend's one
/// seeded RNG, and only a fixed order of draws keeps a resumed run bit-identical.
fn device_gradients<B: AutodiffBackend, TB: Backend>(
    model: &Text2ImUNet<B>,
    devices: &[B::Device],
    diffusion: &GaussianDiffusion,
    batch: &Batch,
    teacher: Option<&Teacher<TB>>,
    cfg: &TrainConfig,
) -> Vec<DeviceGradients> {
    let per_dev = cfg.batch_size / devices.len();
    let scale = 1.0 / cfg.batch_size as f64;
    let gamma = cfg.min_snr_gamma;
    let work = |m: Text2ImUNet<B>, d: usize, dev: &B::Device| {
        let (lo, hi) = (d * per_dev, (d + 1) * per_dev);
        let terms = batch_losses(&m, diffusion, batch, lo..hi, dev, teacher, gamma);
        let mse = scalar(terms.mse.clone().sum().detach());
        let vb = scalar(terms.vb.clone().sum().detach());
        let total = terms.loss.sum() * scale;
        let loss = scalar(total.clone().detach());
        let grads = GradientsParams::from_grads(total.backward(), &m);
        DeviceGradients {
            loss,
            mse,
            vb,
            grads,
            device_id: dev.id(),
        }
    };
    if devices.len() == 1 {
        return vec![work(model.clone(), 0, &devices[0])];
    }
    if cfg.model.dropout > 0.0 {
        let run = |(d, dev): (usize, &B::Device)| work(model.clone().fork(dev), d, dev);
        return devices.iter().enumerate().map(run).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(d, dev)| {
                let m = model.clone().fork(dev);
                let work = &work;
                s.spawn(move || work(m, d, dev))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a training worker thread panicked"))
            .collect()
    })
}

/// Trains (or resumes) a model as `cfg` says, on `devices` (the batch is split evenly over them).
pub fn train<B: AutodiffBackend>(
    mut cfg: TrainConfig,
    devices: Vec<B::Device>,
    opts: TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    cfg.validate(devices.len())?;
    let device = devices[0].clone();
    let out = PathBuf::from(&cfg.out_dir);
    std::fs::create_dir_all(out.join("samples")).map_err(|e| TrainError::Io(out.clone(), e))?;
    let ckpt_path = checkpoint_path(&out);
    install_ctrlc();
    INTERRUPTED.store(false, Ordering::SeqCst);

    let resume = if opts.resume {
        if !ckpt_path.exists() {
            return Err(TrainError::NoCheckpoint(ckpt_path));
        }
        Some(Checkpoint::load(&ckpt_path)?)
    } else {
        None
    };
    let init = match &opts.init {
        Some(p) if resume.is_none() => {
            let bytes = std::fs::read(p).map_err(|e| TrainError::Io(p.clone(), e))?;
            Some(StateDict::from_safetensors(&bytes)?)
        }
        _ => None,
    };
    let mut init = init;
    if let Some(state) = &mut init {
        // Fine-tuning keeps the architecture (and vocabulary) of the weights it starts from; an
        // inpainting config turns base weights into an inpainting model (zero extra channels).
        let dropout = cfg.model.dropout;
        let inpaint = cfg.model.inpaint;
        // A config may turn an ε model into a v model (its output layer relearns what it
        // means); weights that predict v keep doing so.
        let predict_v = cfg.model.predict_v;
        cfg.model = config_from_metadata(state)?.with_dropout(dropout);
        cfg.model.predict_v |= predict_v;
        if inpaint && !cfg.model.inpaint {
            *state = inpaint_from_base(state)?;
            cfg.model.inpaint = true;
        }
        if let Some(spec) = &opts.distill {
            // Weights that already are a guidance-distilled student (an earlier run's, `glide
            // distill guidance --init`) keep their options.
            let m = &cfg.model;
            let stage_one_student = m.guidance_embed && m.predict_v && m.student_steps.is_none();
            if !(spec.stage == DistillStage::Guidance && stage_one_student) {
                cfg.model = student_config(&cfg.model, spec.stage)?;
            }
        }
    }

    let data = TrainData::load(&cfg.data, cfg.model.image_size)?;
    let vocab: Option<PrunedVocab> = if let Some(ck) = &resume {
        ck.vocab
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| TrainError::BadCheckpoint(ckpt_path.clone(), e.to_string()))?
    } else if let Some(init) = &init {
        init.metadata
            .get("vocab")
            .map(|j| serde_json::from_str(j))
            .transpose()
            .map_err(|e| {
                TrainError::BadCheckpoint(opts.init.clone().unwrap_or_default(), e.to_string())
            })?
    } else if cfg.prune_vocab {
        let full = Tokenizer::gpt2();
        let prompts = cfg.sample_prompts.iter().map(String::as_str);
        Some(full.prune(data.captions().chain(prompts)))
    } else {
        None
    };
    if let Some(v) = &vocab {
        cfg.model.n_vocab = v.ids.len();
    }
    // A distillation run's architecture comes from its teacher: resume with the checkpoint's.
    if opts.distill.is_some()
        && let Some(ck) = &resume
    {
        let v: serde_json::Value = serde_json::from_str(&ck.options)
            .map_err(|e| TrainError::BadCheckpoint(ckpt_path.clone(), e.to_string()))?;
        cfg.model = GlideConfig::from_glide_options(&v)?.with_dropout(cfg.model.dropout);
    }
    if let Some(ck) = &resume
        && serde_json::from_str::<serde_json::Value>(&ck.options).ok()
            != Some(cfg.model.to_glide_options())
    {
        return Err(TrainError::OptionsChanged);
    }
    let make_tokenizer = || -> Result<Tokenizer, TrainError> {
        let t = Tokenizer::gpt2();
        Ok(match &vocab {
            Some(v) => t.with_pruned(v)?,
            None => t,
        })
    };

    let teacher = match &opts.distill {
        Some(spec) => Some(load_teacher::<B::InnerBackend>(
            spec,
            &device,
            &make_tokenizer()?,
            &cfg.model,
        )?),
        None => None,
    };
    if let Some(t) = &teacher {
        t.check_chains(data.train.iter().chain(&data.heldout), cfg.p_uncond)?;
    }

    // Model (a seeded initialisation: burn's initialisers draw from the backend RNG), EMA, optimiser.
    B::seed(&device, mix(cfg.seed, 0x1a17));
    let mut model: Text2ImUNet<B> = cfg.model.init::<B>(&device);
    let apply = |m: Text2ImUNet<B>, sd: &StateDict| -> Result<Text2ImUNet<B>, TrainError> {
        let (m, report) = apply_state_dict(m, sd);
        // A new student keeps its fresh guidance embedding (its last layer is zero).
        let only_new_student_layers = report.unexpected.is_empty()
            && report.mismatched.is_empty()
            && cfg.model.guidance_embed
            && report
                .missing
                .iter()
                .all(|k| k.starts_with("guidance_embed."));
        if report.is_clean() || only_new_student_layers {
            Ok(m)
        } else {
            Err(glide_model::WeightsError::Incompatible(report).into())
        }
    };
    if let Some(init) = &init {
        model = apply(model, init)?;
    }
    if let Some(ck) = &resume {
        model = apply(model, &ck.model)?;
    }
    let mut ema = Ema::new(model.valid());
    if let Some(ck) = &resume {
        let (m, report) = apply_state_dict(ema.model, &ck.ema);
        if !report.is_clean() {
            return Err(glide_model::WeightsError::Incompatible(report).into());
        }
        ema.model = m;
    }
    let mut optim = adamw::<B>(&cfg);
    if let Some(ck) = &resume {
        optim = load_optimizer_state(optim, &model, &ck.optim, &ck.optim_times)?;
    }
    let start = resume.as_ref().map_or(0, |c| c.step);
    let mut elapsed_before = resume.as_ref().map_or(0.0, |c| c.elapsed_s);
    drop(resume);

    let schedule: NoiseSchedule = cfg.model.noise_schedule.parse()?;
    let diffusion = GaussianDiffusion::from_schedule(schedule, cfg.model.diffusion_steps)
        .with_model_mean_type(ModelMeanType::from_predict_v(cfg.model.predict_v));
    let size = cfg.model.image_size;
    let ctx = cfg.model.text_ctx;
    let eval = eval_batch(
        &data.heldout,
        cfg.eval_size,
        &make_tokenizer()?,
        size,
        ctx,
        diffusion.num_timesteps(),
        cfg.seed,
        cfg.model.inpaint,
    );
    // Inpainting runs draw edits of fixed held-out (else training) images instead of prompts.
    let edit_cases = if cfg.model.inpaint {
        let source = if data.heldout.is_empty() {
            &data.train
        } else {
            &data.heldout
        };
        edit_cases(source, cfg.sample_prompts.len().max(4), size, cfg.seed)
    } else {
        Vec::new()
    };
    let maker = BatchMaker::new(
        Arc::new(data.train),
        make_tokenizer()?,
        &cfg,
        diffusion.num_timesteps(),
    );
    let end = cfg.steps;
    let mut batches = Prefetcher::start(maker, start, end, 4);
    let mut log = CsvLog::open(&out.join("log.csv"), start)?;
    std::fs::write(out.join("config.json"), cfg.to_string())
        .map_err(|e| TrainError::Io(out.join("config.json"), e))?;
    let vocab_json = vocab
        .as_ref()
        .map(|v| serde_json::to_string(v).expect("vocab serialises"));

    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(end as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} {msg} ETA {eta_precise}",
        )
        .expect("valid template"),
    );
    bar.set_position(start as u64);
    bar.println(format!(
        "{}; {} parameters; vocabulary {} rows; steps {start}..{end}",
        data.summary,
        model.num_params(),
        cfg.model.n_vocab
    ));

    let save = |step: usize,
                model: &Text2ImUNet<B>,
                ema: &Ema<B::InnerBackend>,
                optim: &crate::optim::Adam<B>,
                elapsed: f64|
     -> Result<(), TrainError> {
        let (optim_t, optim_times) = optimizer_state(optim, model);
        Checkpoint {
            step,
            model: StateDict::from_module(model),
            ema: StateDict::from_module(&ema.model),
            optim: optim_t,
            optim_times,
            config: cfg.to_string(),
            options: cfg.model.to_glide_options().to_string(),
            vocab: vocab_json.clone(),
            elapsed_s: elapsed,
        }
        .save(&ckpt_path)?;
        let mut meta = vec![
            ("training_step", step.to_string()),
            ("training_config", cfg.to_string()),
        ];
        if let Some(v) = &vocab_json {
            meta.push(("vocab", v.clone()));
        }
        let bytes = save_weights(&ema.model, &cfg.model, &meta, false);
        Ok(write_atomic(&out.join("ema.safetensors"), &bytes)?)
    };

    let write_samples = |step: usize, ema: &Ema<B::InnerBackend>| -> Result<(), TrainError> {
        let png = if cfg.model.inpaint {
            inpaint_grid(
                ema.model.clone(),
                &cfg.model,
                vocab.as_ref(),
                &edit_cases,
                cfg.sample_guidance,
                cfg.sample_steps,
                &device,
            )?
        } else {
            sample_grid(
                ema.model.clone(),
                &cfg.model,
                vocab.as_ref(),
                &cfg.sample_prompts,
                cfg.sample_guidance,
                cfg.sample_steps,
                4,
                &device,
            )?
        };
        let p = out.join("samples").join(format!("step-{step:07}.png"));
        std::fs::write(&p, png).map_err(|e| TrainError::Io(p, e))
    };

    let t0 = Instant::now();
    let mut train_time = 0.0;
    let mut images = 0usize;
    let n_dev = devices.len();
    let mut step = start;
    let mut interrupted = false;
    while step < end {
        if INTERRUPTED.load(Ordering::SeqCst)
            || opts.stop_after.is_some_and(|s| step >= s)
            || cfg
                .max_minutes
                .is_some_and(|m| elapsed_before + t0.elapsed().as_secs_f64() >= m * 60.0)
        {
            interrupted = true;
            break;
        }
        let Some(batch) = batches.next_batch() else {
            break;
        };
        let ts = Instant::now();
        B::seed(&device, mix(cfg.seed ^ 0xd209, step as u64));
        let lr = cfg.lr_at(step);
        let (mut loss, mut mse, mut vb) = (0.0, 0.0, 0.0);
        let mut grads = Vec::with_capacity(n_dev);
        let mut forked = Vec::with_capacity(n_dev);
        for part in device_gradients(&model, &devices, &diffusion, &batch, teacher.as_ref(), &cfg) {
            mse += part.mse;
            vb += part.vb;
            loss += part.loss;
            grads.push(part.grads);
            forked.push(part.device_id);
        }
        let n = cfg.batch_size as f64;
        let (mse, vb) = (mse / n, vb / n);
        if !loss.is_finite() {
            return Err(TrainError::NonFinite(loss, step));
        }
        let grad_norm = clip_global_norm(&model, &mut grads, cfg.grad_clip);
        model = if n_dev == 1 {
            optim.step(lr, model, grads.pop().expect("one device's gradients"))
        } else {
            let multi = MultiGradientsParams {
                grads: grads.into_iter().zip(forked).collect(),
            };
            optim.step_multi(lr, model, multi)
        };
        ema.update(&model, cfg.ema_decay_at(step));
        step += 1;
        train_time += ts.elapsed().as_secs_f64();
        images += batch.len();
        let ips = images as f64 / train_time.max(1e-9);
        bar.set_position(step as u64);
        bar.set_message(format!(
            "loss {loss:.4} | {:.2} it/s | {ips:.1} img/s",
            ips / n
        ));

        let mut row = LogRow {
            step,
            loss,
            mse,
            vb,
            grad_norm,
            lr,
            images_per_s: ips,
            ..Default::default()
        };
        let is_eval = step.is_multiple_of(cfg.eval_every) || step == end;
        if is_eval && let Some(eb) = &eval {
            let t = teacher.as_ref();
            let (l, m, v) =
                evaluate_with(&model.valid(), &diffusion, eb, cfg.batch_size, &device, t);
            let (el, _, _) = evaluate_with(&ema.model, &diffusion, eb, cfg.batch_size, &device, t);
            row.heldout_loss = Some(l);
            row.heldout_mse = Some(m);
            row.heldout_vb = Some(v);
            row.ema_heldout_loss = Some(el);
            bar.println(format!(
                "step {step}: train loss {loss:.4}, held-out loss {l:.4} (EMA {el:.4})"
            ));
        }
        if is_eval || step.is_multiple_of(cfg.log_every) {
            log.push(row)?;
        }
        if step.is_multiple_of(cfg.checkpoint_every) {
            save(
                step,
                &model,
                &ema,
                &optim,
                elapsed_before + t0.elapsed().as_secs_f64(),
            )?;
            let _ = plot_losses(&log.rows, &out.join("loss.png"));
        }
        if cfg.sample_every > 0 && step.is_multiple_of(cfg.sample_every) {
            write_samples(step, &ema)?;
        }
    }
    drop(batches);
    elapsed_before += t0.elapsed().as_secs_f64();
    save(step, &model, &ema, &optim, elapsed_before)?;
    if cfg.sample_every > 0 && step > start && !step.is_multiple_of(cfg.sample_every) {
        write_samples(step, &ema)?;
    }
    if let Err(e) = plot_losses(&log.rows, &out.join("loss.png")) {
        bar.println(format!("warning: could not draw loss.png ({e})"));
    }
    bar.finish_and_clear();
    Ok(TrainOutcome {
        step,
        rows: log.rows,
        interrupted,
        images_per_s: images as f64 / train_time.max(1e-9),
        out_dir: out,
        params: model.num_params(),
    })
}
