//! What a CLIP run does around its steps: progress, `log.csv` (the contrastive loss; its `mse`
//! and `vb` columns are 0), held-out losses and retrieval accuracy (`retrieval.csv`), checkpoints
//! and the EMA towers as `clip.safetensors`.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use glide_diffusion::{GaussianDiffusion, NoiseSchedule};
use glide_model::clip::NoisedClip;
use glide_tokenizer::{PrunedVocab, Tokenizer};
use indicatif::ProgressBar;

use super::ClipTrainConfig;
use crate::TrainError;
use crate::batch::{Batch, TrainData, eval_batch};
use crate::checkpoint::{Checkpoint, checkpoint_path, write_atomic};
use crate::hooks::progress_bar;
use crate::log::{CsvLog, LogRow, plot_losses};
use crate::objective::contrastive::Contrastive;
use crate::optim::optimizer_state;
use crate::run_loop::{AfterStep, Clock};
use crate::run_state::Learner;
use crate::step::{StepContext, StepStats};

/// Held-out image → caption retrieval accuracy of the EMA towers: the share of held-out images
/// whose most similar caption, among the held-out batch's captions, is their own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrieval {
    pub step: usize,
    /// Clean images (t = 0).
    pub clean: f64,
    /// Images noised at the held-out batch's timesteps (spread over 0..T); equals `clean` for a
    /// clean CLIP.
    pub noised: f64,
}

const RETRIEVAL_HEADER: &str = "step,heldout_accuracy_clean,heldout_accuracy_noised";

impl Retrieval {
    fn to_csv(self) -> String {
        format!("{},{:.4},{:.4}", self.step, self.clean, self.noised)
    }

    fn from_csv(line: &str) -> Option<Self> {
        let mut f = line.split(',');
        Some(Self {
            step: f.next()?.parse().ok()?,
            clean: f.next()?.parse().ok()?,
            noised: f.next()?.parse().ok()?,
        })
    }
}

/// `retrieval.csv` for a run starting at `start` (written anew): the rows up to that step of the
/// run it resumes, none for a fresh run, so a resumed run's file equals an uninterrupted one's.
fn open_retrieval(path: &Path, start: usize) -> Result<Vec<Retrieval>, TrainError> {
    let io = |e| TrainError::Io(path.to_path_buf(), e);
    let rows: Vec<Retrieval> = if start > 0 && path.exists() {
        std::fs::read_to_string(path)
            .map_err(io)?
            .lines()
            .skip(1)
            .filter_map(Retrieval::from_csv)
            .filter(|r| r.step <= start)
            .collect()
    } else {
        Vec::new()
    };
    let mut text = format!("{RETRIEVAL_HEADER}\n");
    for r in &rows {
        text.push_str(&r.to_csv());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io)?;
    Ok(rows)
}

/// The CLIP run directory's writers and the fixed held-out batch.
pub struct ClipHooks {
    cfg: ClipTrainConfig,
    out: PathBuf,
    vocab_json: String,
    eval: Option<Batch>,
    /// The objective's view of images, clean and as trained.
    clean: Contrastive,
    noised: Contrastive,
    pub log: CsvLog,
    pub retrieval: Vec<Retrieval>,
    bar: ProgressBar,
}

impl ClipHooks {
    /// Creates the run directory (`config.json`, `log.csv` continued from `start`).
    pub fn new(
        cfg: &ClipTrainConfig,
        data: &TrainData,
        tokenizer: &Tokenizer,
        vocab: &PrunedVocab,
        start: usize,
        quiet: bool,
    ) -> Result<Self, TrainError> {
        let out = PathBuf::from(&cfg.out_dir);
        std::fs::create_dir_all(&out).map_err(|e| TrainError::Io(out.clone(), e))?;
        let eval = eval_batch(
            &data.heldout,
            cfg.eval_size,
            tokenizer,
            cfg.clip.image_size,
            cfg.clip.max_text_len,
            cfg.clip.n_timesteps,
            cfg.seed,
            false,
        );
        let log = CsvLog::open(&out.join("log.csv"), start)?;
        std::fs::write(out.join("config.json"), cfg.to_string())
            .map_err(|e| TrainError::Io(out.join("config.json"), e))?;
        let diffusion = || -> Result<GaussianDiffusion, TrainError> {
            let schedule: NoiseSchedule = cfg.noise_schedule.parse()?;
            Ok(GaussianDiffusion::from_schedule(
                schedule,
                cfg.clip.n_timesteps,
            ))
        };
        let bar = progress_bar(cfg.steps, quiet);
        bar.set_position(start as u64);
        let retrieval = open_retrieval(&out.join("retrieval.csv"), start)?;
        Ok(Self {
            cfg: cfg.clone(),
            out,
            vocab_json: serde_json::to_string(vocab).expect("a vocabulary serialises"),
            eval,
            clean: Contrastive {
                diffusion: diffusion()?,
                noised: false,
            },
            noised: Contrastive {
                diffusion: diffusion()?,
                noised: cfg.noised,
            },
            log,
            retrieval,
            bar,
        })
    }

    /// A line above the progress bar.
    pub fn println(&self, line: String) {
        self.bar.println(line);
    }

    /// The last checkpoint and loss plot of this invocation.
    pub fn finish<B: AutodiffBackend>(
        &mut self,
        step: usize,
        learner: &Learner<B, NoisedClip<B>>,
        clock: &Clock,
    ) -> Result<(), TrainError> {
        self.save(step, learner, clock.run_seconds())?;
        self.plot();
        self.bar.finish_and_clear();
        Ok(())
    }

    fn plot(&self) {
        let title = if self.cfg.noised {
            "contrastive loss (noised CLIP)"
        } else {
            "contrastive loss (clean CLIP)"
        };
        if let Err(e) = plot_losses(&self.log.rows, &self.out.join("loss.png"), title) {
            self.bar
                .println(format!("warning: could not draw loss.png ({e})"));
        }
    }

    /// The checkpoint, and the EMA towers as `clip.safetensors` (what `--clip` and
    /// `--guide-clip` read), with the vocabulary and the run's config in the metadata.
    fn save<B: AutodiffBackend>(
        &self,
        step: usize,
        learner: &Learner<B, NoisedClip<B>>,
        elapsed: f64,
    ) -> Result<(), TrainError> {
        let (optim, optim_times) = optimizer_state(&learner.optim, &learner.model);
        Checkpoint {
            step,
            model: learner.model.state_dict(),
            ema: learner.ema.model.state_dict(),
            optim,
            optim_times,
            config: self.cfg.to_string(),
            options: super::options(&self.cfg),
            vocab: Some(self.vocab_json.clone()),
            elapsed_s: elapsed,
        }
        .save(&checkpoint_path(&self.out))?;
        let mut state = learner.ema.model.state_dict();
        let meta = &mut state.metadata;
        meta.insert("format".into(), "glide-rs-clip".into());
        meta.insert("vocab".into(), self.vocab_json.clone());
        meta.insert("training_step".into(), step.to_string());
        meta.insert("training_config".into(), self.cfg.to_string());
        let path = self.out.join("clip.safetensors");
        Ok(write_atomic(&path, &state.to_safetensors(false))?)
    }

    /// Retrieval accuracy of `clip` on the held-out batch, clean and as trained.
    fn retrieval<IB: Backend>(
        &self,
        step: usize,
        clip: &NoisedClip<IB>,
        eval: &Batch,
        device: &IB::Device,
    ) -> Retrieval {
        let clean = retrieval_accuracy(&self.clean, clip, eval, device);
        let noised = if self.cfg.noised {
            retrieval_accuracy(&self.noised, clip, eval, device)
        } else {
            clean
        };
        Retrieval {
            step,
            clean,
            noised,
        }
    }

    fn write_retrieval(&mut self, r: Retrieval) -> Result<(), TrainError> {
        let path = self.out.join("retrieval.csv");
        let io = |e| TrainError::Io(path.clone(), e);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io)?;
        writeln!(f, "{}", r.to_csv()).map_err(io)?;
        self.retrieval.push(r);
        Ok(())
    }
}

impl<B: AutodiffBackend> AfterStep<B, NoisedClip<B>> for ClipHooks {
    fn after_step(
        &mut self,
        step: usize,
        last: bool,
        stats: &StepStats,
        learner: &Learner<B, NoisedClip<B>>,
        ctx: &StepContext<'_, B, NoisedClip<B>>,
        clock: &Clock,
    ) -> Result<(), TrainError> {
        let ips = clock.images_per_s();
        self.bar.set_position(step as u64);
        self.bar
            .set_message(format!("loss {:.4} | {ips:.1} img/s", stats.loss));
        let mut row = LogRow {
            step,
            loss: stats.loss,
            grad_norm: stats.grad_norm,
            lr: stats.lr,
            images_per_s: ips,
            ..Default::default()
        };
        let is_eval = step.is_multiple_of(self.cfg.eval_every) || last;
        if is_eval && let Some(eb) = &self.eval {
            let ((l, _, _), el) = learner.evaluate(ctx, eb);
            row.heldout_loss = Some(l);
            row.ema_heldout_loss = Some(el);
            let r = self.retrieval(step, &learner.ema.model, eb, &ctx.devices[0]);
            self.bar.println(format!(
                "step {step}: train loss {:.4}, held-out loss {l:.4} (EMA {el:.4}), held-out \
                 retrieval {:.1}% clean, {:.1}% noised",
                stats.loss,
                100.0 * r.clean,
                100.0 * r.noised
            ));
            self.write_retrieval(r)?;
        }
        if is_eval || step.is_multiple_of(self.cfg.log_every) {
            self.log.push(row)?;
        }
        if step.is_multiple_of(self.cfg.checkpoint_every) {
            self.save(step, learner, clock.run_seconds())?;
            self.plot();
        }
        Ok(())
    }

    fn println(&self, line: String) {
        ClipHooks::println(self, line);
    }
}

/// Share of `batch`'s images whose most similar caption (among the batch's) is their own
/// caption text (another image with the same caption counts as right).
pub fn retrieval_accuracy<B: Backend>(
    view: &Contrastive,
    clip: &NoisedClip<B>,
    batch: &Batch,
    device: &B::Device,
) -> f64 {
    let n = batch.len();
    if n == 0 {
        return 0.0;
    }
    let (mut zi, mut zt) = (Vec::new(), Vec::new());
    for lo in (0..n).step_by(64) {
        let (i, t) = view.embeddings(clip, batch, lo..(lo + 64).min(n), device);
        zi.push(i);
        zt.push(t);
    }
    let sim = Tensor::cat(zi, 0).matmul(Tensor::cat(zt, 0).transpose());
    let best = sim.argmax(1).into_data().convert::<i64>();
    let best = best.as_slice::<i64>().expect("i64");
    let hits = (0..n)
        .filter(|&i| batch.captions[best[i] as usize] == batch.captions[i])
        .count();
    hits as f64 / n as f64
}
