//! What a run does around its optimisation steps: progress, the CSV log, held-out evaluation,
//! checkpoints, the EMA weights and sample grids.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use glide_model::weights::{StateDict, save_weights};
use glide_model::{GlideConfig, Text2ImUNet};
use glide_pipeline::image::{batch_to_rgb8, encode_png, grid};
use glide_pipeline::{GenerateRequest, Text2Im};
use glide_tokenizer::{PrunedVocab, Tokenizer};
use indicatif::{ProgressBar, ProgressStyle};

use crate::TrainError;
use crate::batch::{Batch, TrainData, eval_batch};
use crate::checkpoint::{Checkpoint, checkpoint_path, write_atomic};
use crate::config::TrainConfig;
use crate::inpaint_eval::{EditCase, edit_cases, inpaint_grid};
use crate::log::{CsvLog, LogRow, plot_losses};
use crate::optim::optimizer_state;
use crate::run_loop::{AfterStep, Clock};
use crate::run_state::{Learner, RunState};
use crate::step::{StepContext, StepStats};

/// The run directory's writers and the fixed evaluation inputs.
pub struct Hooks {
    cfg: TrainConfig,
    out: PathBuf,
    vocab: Option<PrunedVocab>,
    vocab_json: Option<String>,
    eval: Option<Batch>,
    /// Inpainting runs draw edits of fixed held-out (else training) images instead of prompts.
    edit_cases: Vec<EditCase>,
    pub log: CsvLog,
    pub bar: ProgressBar,
}

impl Hooks {
    /// Creates the run directory (`samples/`, `config.json`, `log.csv` continued from `start`) and
    /// the progress bar.
    pub fn new<B: AutodiffBackend>(
        state: &RunState<B>,
        data: &TrainData,
        num_timesteps: usize,
        quiet: bool,
    ) -> Result<Self, TrainError> {
        let cfg = state.cfg.clone();
        let out = PathBuf::from(&cfg.out_dir);
        std::fs::create_dir_all(out.join("samples")).map_err(|e| TrainError::Io(out.clone(), e))?;
        let size = cfg.model.image_size;
        let eval = eval_batch(
            &data.heldout,
            cfg.eval_size,
            &state.tokenizer()?,
            size,
            cfg.model.text_ctx,
            num_timesteps,
            cfg.seed,
            cfg.model.inpaint,
        );
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
        let log = CsvLog::open(&out.join("log.csv"), state.step)?;
        std::fs::write(out.join("config.json"), cfg.to_string())
            .map_err(|e| TrainError::Io(out.join("config.json"), e))?;
        let (start, end) = (state.step, cfg.steps);
        let bar = progress_bar(end, quiet);
        bar.set_position(start as u64);
        bar.println(format!(
            "{}; {} parameters; vocabulary {} rows; steps {start}..{end}",
            data.summary,
            state.learner.model.num_params(),
            cfg.model.n_vocab
        ));
        let vocab = state.vocab.clone();
        let vocab_json = vocab
            .as_ref()
            .map(|v| serde_json::to_string(v).expect("vocab serialises"));
        Ok(Self {
            cfg,
            out,
            vocab,
            vocab_json,
            eval,
            edit_cases,
            log,
            bar,
        })
    }

    /// The last checkpoint, samples and loss plot of this invocation.
    pub fn finish<B: AutodiffBackend>(
        &mut self,
        start: usize,
        step: usize,
        learner: &Learner<B>,
        device: &B::Device,
        clock: &Clock,
    ) -> Result<(), TrainError> {
        self.save(step, learner, clock.run_seconds())?;
        let every = self.cfg.sample_every;
        if every > 0 && step > start && !step.is_multiple_of(every) {
            self.write_samples(step, learner, device)?;
        }
        if let Err(e) = plot_losses(
            &self.log.rows,
            &self.out.join("loss.png"),
            &self.cfg.loss_name(),
        ) {
            self.bar
                .println(format!("warning: could not draw loss.png ({e})"));
        }
        self.bar.finish_and_clear();
        Ok(())
    }

    /// The checkpoint (model, EMA, optimiser, step, config, vocabulary, wall time) and the EMA
    /// weights as `ema.safetensors`, both written atomically.
    fn save<B: AutodiffBackend>(
        &self,
        step: usize,
        learner: &Learner<B>,
        elapsed: f64,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let (optim_t, optim_times) = optimizer_state(&learner.optim, &learner.model);
        Checkpoint {
            step,
            model: StateDict::from_module(&learner.model),
            ema: StateDict::from_module(&learner.ema.model),
            optim: optim_t,
            optim_times,
            config: cfg.to_string(),
            options: cfg.model.to_glide_options().to_string(),
            vocab: self.vocab_json.clone(),
            elapsed_s: elapsed,
        }
        .save(&checkpoint_path(&self.out))?;
        let mut meta = vec![
            ("training_step", step.to_string()),
            ("training_config", cfg.to_string()),
        ];
        if let Some(v) = &self.vocab_json {
            meta.push(("vocab", v.clone()));
        }
        let bytes = save_weights(&learner.ema.model, &cfg.model, &meta, false);
        Ok(write_atomic(&self.out.join("ema.safetensors"), &bytes)?)
    }

    /// `samples/step-NNNNNNN.png`: the EMA model's grid of the sample prompts (or edits).
    fn write_samples<B: AutodiffBackend>(
        &self,
        step: usize,
        learner: &Learner<B>,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let model = learner.ema.model.clone();
        let (g, n) = (cfg.sample_guidance, cfg.sample_steps);
        let png = if cfg.model.inpaint {
            inpaint_grid(
                model,
                &cfg.model,
                self.vocab.as_ref(),
                &self.edit_cases,
                g,
                n,
                device,
            )?
        } else {
            let prompts = &cfg.sample_prompts;
            sample_grid(
                model,
                &cfg.model,
                self.vocab.as_ref(),
                prompts,
                g,
                n,
                4,
                device,
            )?
        };
        let p = self.out.join("samples").join(format!("step-{step:07}.png"));
        std::fs::write(&p, png).map_err(|e| TrainError::Io(p, e))
    }
}

impl<B: AutodiffBackend> AfterStep<B, Text2ImUNet<B>> for Hooks {
    /// After step `step` (1-based count of steps done): progress, the log row with the held-out
    /// losses every `eval_every` steps and at the run's last step, a checkpoint every `checkpoint_every`, samples every
    /// `sample_every`.
    fn after_step(
        &mut self,
        step: usize,
        last: bool,
        stats: &StepStats,
        learner: &Learner<B>,
        ctx: &StepContext<'_, B>,
        clock: &Clock,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let ips = clock.images_per_s();
        self.bar.set_position(step as u64);
        self.bar.set_message(format!(
            "loss {:.4} | {:.2} it/s | {ips:.1} img/s",
            stats.loss,
            ips / cfg.batch_size as f64
        ));
        let mut row = LogRow {
            step,
            loss: stats.loss,
            mse: stats.mse,
            vb: stats.vb,
            grad_norm: stats.grad_norm,
            lr: stats.lr,
            images_per_s: ips,
            ..Default::default()
        };
        let is_eval = step.is_multiple_of(cfg.eval_every) || last;
        if is_eval && let Some(eb) = &self.eval {
            let ((l, m, v), el) = learner.evaluate(ctx, eb);
            row.heldout_loss = Some(l);
            row.heldout_mse = Some(m);
            row.heldout_vb = Some(v);
            row.ema_heldout_loss = Some(el);
            self.bar.println(format!(
                "step {step}: train loss {:.4}, held-out loss {l:.4} (EMA {el:.4})",
                stats.loss
            ));
        }
        if is_eval || step.is_multiple_of(cfg.log_every) {
            self.log.push(row)?;
        }
        if step.is_multiple_of(cfg.checkpoint_every) {
            self.save(step, learner, clock.run_seconds())?;
            let _ = plot_losses(
                &self.log.rows,
                &self.out.join("loss.png"),
                &self.cfg.loss_name(),
            );
        }
        if cfg.sample_every > 0 && step.is_multiple_of(cfg.sample_every) {
            self.write_samples(step, learner, &ctx.devices[0])?;
        }
        Ok(())
    }

    fn println(&self, line: String) {
        self.bar.println(line);
    }
}

/// The progress bar of a run of `steps` steps (hidden when `quiet`).
pub fn progress_bar(steps: usize, quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} {msg} ETA {eta_precise}",
        )
        .expect("valid template"),
    );
    bar
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
