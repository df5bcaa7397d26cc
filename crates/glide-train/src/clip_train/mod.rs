//! `glide train-clip`: a CLIP for our data, trained with the contrastive loss
//! ([`Contrastive`]) through the diffusion trainer's machinery: the same optimisation loop
//! ([`run_steps`]), step ([`Learner::step`]: workers, clipping, AdamW, EMA), batches, checkpoints
//! with exact resume, CSV log and loss plot. Noised (GLIDE §2.4: the guiding CLIP) or clean (the
//! evaluation CLIP, never used for guidance).
//!
//! The CLIP reads the token ids of the diffusion model it works with (`vocab_from`), so the
//! pipeline can hand it the prompt's tokens unchanged.

pub mod config;
pub mod hooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use glide_diffusion::{GaussianDiffusion, NoiseSchedule};
use glide_model::clip::NoisedClip;
use glide_model::weights::StateDict;
use glide_tokenizer::{PrunedVocab, Tokenizer};

pub use config::ClipTrainConfig;
pub use hooks::Retrieval;

use crate::TrainError;
use crate::batch::{BatchMaker, Draws, Prefetcher, TrainData, mix};
use crate::checkpoint::{Checkpoint, checkpoint_path};
use crate::config::TrainOptions;
use crate::ema::Ema;
use crate::log::LogRow;
use crate::objective::contrastive::Contrastive;
use crate::optim::load_optimizer_state;
use crate::run_loop::{Budget, Clock, run_steps};
use crate::run_state::Learner;
use crate::step::StepContext;

/// How a CLIP run ended.
#[derive(Debug, Clone)]
pub struct ClipOutcome {
    pub step: usize,
    pub rows: Vec<LogRow>,
    /// Held-out retrieval accuracy at each evaluation of this invocation.
    pub retrieval: Vec<Retrieval>,
    pub interrupted: bool,
    pub images_per_s: f64,
    pub out_dir: PathBuf,
    pub params: usize,
    pub skipped_steps: usize,
}

/// Trains (or resumes) a CLIP as `cfg` says, on `devices` (`opts.init` is not used).
pub fn train_clip<B: AutodiffBackend>(
    mut cfg: ClipTrainConfig,
    devices: Vec<B::Device>,
    opts: TrainOptions,
) -> Result<ClipOutcome, TrainError> {
    cfg.validate(devices.len())?;
    let device = &devices[0];
    let ckpt_path = checkpoint_path(Path::new(&cfg.out_dir));
    let resume = Checkpoint::for_resume(Path::new(&cfg.out_dir), opts.resume)?;
    let data = TrainData::load(&cfg.data, cfg.clip.image_size)?;
    let vocab = clip_vocab(&cfg, &data, resume.as_ref(), &ckpt_path)?;
    cfg.clip.n_vocab = vocab.ids.len();
    if let Some(ck) = &resume
        && ck.options != options(&cfg)
    {
        return Err(TrainError::OptionsChanged);
    }
    let tokenizer = Tokenizer::gpt2().with_pruned(&vocab)?;
    let schedule: NoiseSchedule = cfg.noise_schedule.parse()?;
    let objective = Contrastive {
        diffusion: GaussianDiffusion::from_schedule(schedule, cfg.clip.n_timesteps),
        noised: cfg.noised,
    };
    let learner = restore_learner::<B>(&cfg, device, resume.as_ref())?;
    let start = resume.as_ref().map_or(0, |c| c.step);
    let mut hooks = hooks::ClipHooks::new(&cfg, &data, &tokenizer, &vocab, start, opts.quiet)?;
    hooks.println(format!(
        "{}; {} parameters; vocabulary {} rows; {} CLIP; steps {start}..{}",
        data.summary,
        learner.model.num_params(),
        cfg.clip.n_vocab,
        if cfg.noised {
            "noised"
        } else {
            "clean (t = 0)"
        },
        cfg.steps
    ));
    // Every caption kept, no masks.
    let draws = Draws {
        size: cfg.clip.image_size,
        text_ctx: cfg.clip.max_text_len,
        batch_size: cfg.batch_size,
        num_timesteps: cfg.clip.n_timesteps,
        p_uncond: 0.0,
        flip: cfg.data.flip,
        balance: cfg.data.balance,
        seed: cfg.seed,
        inpaint: false,
        reword: cfg.data.reword,
    };
    let maker = BatchMaker::with_draws(Arc::new(data.train), tokenizer, draws);
    let mut batches = Prefetcher::start(maker, start, cfg.steps, 4);
    let mut clock = Clock::start(resume.as_ref().map_or(0.0, |c| c.elapsed_s));
    let ctx = StepContext {
        settings: cfg.step_settings(),
        devices: &devices,
        objective: &objective,
    };
    let budget = Budget {
        steps: cfg.steps,
        max_minutes: cfg.max_minutes,
        stop_after: opts.stop_after,
        nonfinite_limit: 5,
    };
    let (learner, end) = run_steps(
        learner,
        start,
        &budget,
        &ctx,
        &mut batches,
        &mut clock,
        &mut hooks,
    )?;
    drop(batches);
    hooks.finish(end.step, &learner, &clock)?;
    Ok(ClipOutcome {
        step: end.step,
        rows: hooks.log.rows,
        retrieval: hooks.retrieval,
        interrupted: end.interrupted,
        images_per_s: clock.images_per_s(),
        out_dir: PathBuf::from(&cfg.out_dir),
        params: learner.model.num_params(),
        skipped_steps: end.skipped,
    })
}

/// The towers' options as a checkpoint stores them (a resumed run must have the same).
fn options(cfg: &ClipTrainConfig) -> String {
    serde_json::to_string(&cfg.clip).expect("a config serialises")
}

/// The checkpoint's vocabulary, the one of the weights `vocab_from` names, or GPT-2's pruned to
/// the captions.
fn clip_vocab(
    cfg: &ClipTrainConfig,
    data: &TrainData,
    resume: Option<&Checkpoint>,
    ckpt_path: &Path,
) -> Result<PrunedVocab, TrainError> {
    let parse = |json: &str, from: &Path| {
        serde_json::from_str(json)
            .map_err(|e| TrainError::BadCheckpoint(from.to_path_buf(), e.to_string()))
    };
    if let Some(ck) = resume {
        let json = ck.vocab.as_deref().ok_or_else(|| {
            TrainError::BadCheckpoint(ckpt_path.to_path_buf(), "it has no vocabulary".into())
        })?;
        return parse(json, ckpt_path);
    }
    if let Some(from) = &cfg.vocab_from {
        let path = Path::new(from);
        let bytes = std::fs::read(path).map_err(|e| TrainError::Io(path.to_path_buf(), e))?;
        let state = StateDict::from_safetensors(&bytes)?;
        let json = state
            .metadata
            .get("vocab")
            .ok_or_else(|| TrainError::NoVocab(path.to_path_buf()))?;
        return parse(json, path);
    }
    Ok(Tokenizer::gpt2().prune(data.captions()))
}

/// Seeded fresh towers, or the checkpoint's model, EMA and optimiser state.
fn restore_learner<B: AutodiffBackend>(
    cfg: &ClipTrainConfig,
    device: &B::Device,
    resume: Option<&Checkpoint>,
) -> Result<Learner<B, NoisedClip<B>>, TrainError> {
    B::seed(device, mix(cfg.seed, 0xc11f));
    let mut model = NoisedClip::<B>::init(cfg.clip.clone(), device);
    if let Some(ck) = resume {
        model = model.with_state(&ck.model)?;
    }
    let mut ema = Ema::new(model.valid());
    let mut optim = cfg.step_settings().adamw::<B, NoisedClip<B>>();
    if let Some(ck) = resume {
        ema.model = ema.model.with_state(&ck.ema)?;
        optim = load_optimizer_state(optim, &model, &ck.optim, &ck.optim_times)?;
    }
    Ok(Learner { model, optim, ema })
}
