//! Training configuration: a burn `Config`, read from JSON (`configs/*.json`).

use burn::config::Config;
use std::path::PathBuf;

use glide_model::GlideConfig;

use crate::optim::{LrDecay, StepSettings};

use serde::{Deserialize, Serialize};

/// Where the training images come from: WebDataset shards or an image folder with `.txt` captions.
#[derive(Config, Debug, PartialEq)]
pub struct DataConfig {
    /// A directory of WebDataset shards (`train-*.tar`, `heldout-*.tar`), e.g. `glide data emoji`'s.
    #[config(default = "None")]
    pub shards: Option<String>,
    /// An image folder with a `.txt` caption beside each image (the held-out set is then a slice of
    /// it, see `heldout_fraction`).
    #[config(default = "None")]
    pub folder: Option<String>,
    /// Random horizontal flips, for samples whose metadata allows it (never text-like glyphs).
    #[config(default = true)]
    pub flip: bool,
    /// Of a folder, the share of images kept out of training for the held-out loss.
    #[config(default = 0.05)]
    pub heldout_fraction: f64,
    /// Use only the first N training samples (fixed small sets for smoke tests).
    #[config(default = "None")]
    pub limit: Option<usize>,
    /// Keep only samples whose shard metadata names one of these emojibase `group`s or
    /// `subgroup`s (e.g. `food-drink`, `heart`), in training and held-out sets alike; `None`
    /// keeps everything. A narrower set buys each emoji more of a short run's images.
    #[config(default = "None")]
    pub groups: Option<Vec<String>>,
    /// Draw every emoji (the shard metadata's `base`: skin tones and genders of one emoji share
    /// it) equally often: an epoch shows each once, through one of its images chosen by the seed.
    /// Without it, an emoji with 25 skin-tone and gender variants is seen 25 times as often as
    /// an apple (people make up 60% of `glide data emoji`'s images).
    #[config(default = false)]
    pub balance: bool,
    /// The share of drawn captions reworded as visitors type prompts ("apple icon", "a cute
    /// fox", an inner word left out: `glide_data::reword`), from a stream of its own so that
    /// 0 draws exactly what runs without it drew.
    #[config(default = 0.0)]
    pub reword: f64,
}

impl DataConfig {
    /// Whether a sample with this metadata is kept by `groups`.
    pub fn keeps(&self, meta: &serde_json::Value) -> bool {
        let Some(groups) = &self.groups else {
            return true;
        };
        ["group", "subgroup"].iter().any(|field| {
            meta.get(field)
                .and_then(|v| v.as_str())
                .is_some_and(|g| groups.iter().any(|w| w == g))
        })
    }
}

/// Everything a training run needs, besides its data on disk.
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// The model to train. With `prune_vocab`, `n_vocab` is set from the training captions.
    pub model: GlideConfig,
    pub data: DataConfig,
    /// Keep only the GPT-2 tokens the training captions use (plus bytes and the end token).
    #[config(default = true)]
    pub prune_vocab: bool,
    /// Images per optimiser step (over all devices).
    #[config(default = 32)]
    pub batch_size: usize,
    /// Optimiser steps in all.
    #[config(default = 10000)]
    pub steps: usize,
    /// Stop (with a checkpoint) after this many minutes of wall time, whatever `steps` says.
    #[config(default = "None")]
    pub max_minutes: Option<f64>,
    #[config(default = 1e-4)]
    pub lr: f64,
    /// Linear learning-rate warm-up from 0 over this many steps.
    #[config(default = 200)]
    pub warmup_steps: usize,
    /// Cosine decay of `lr` over a span of steps (`None`: constant after the warm-up, as GLIDE).
    #[config(default = "None")]
    pub lr_decay: Option<LrDecay>,
    /// AdamW's decoupled weight decay.
    #[config(default = 0.0)]
    pub weight_decay: f64,
    #[config(default = 0.9)]
    pub beta_1: f64,
    #[config(default = 0.999)]
    pub beta_2: f64,
    #[config(default = 1e-8)]
    pub epsilon: f64,
    /// Clip the global gradient norm to this (as `torch.nn.utils.clip_grad_norm_`).
    #[config(default = "Some(1.0)")]
    pub grad_clip: Option<f64>,
    /// Steps whose loss or gradients are not finite are skipped (the weights, optimiser and EMA
    /// stay as they were); this many in a row (None: 5) stop the run with an error.
    #[config(default = "None")]
    pub max_nonfinite_steps: Option<usize>,
    /// The EMA's decay; it warms up as min(ema_decay, (1 + n) / (10 + n)) after n updates.
    #[config(default = 0.9999)]
    pub ema_decay: f64,
    /// Min-SNR-γ weighting of the ε-MSE (`GaussianDiffusion::min_snr_weights`); `None` is GLIDE's
    /// unweighted hybrid loss.
    #[config(default = "None")]
    pub min_snr_gamma: Option<f64>,
    /// Share of captions replaced by the empty sequence (classifier-free guidance).
    #[config(default = 0.2)]
    pub p_uncond: f64,
    /// Seeds batches, captions, timesteps, noise and dropout (each derived from the step).
    #[config(default = 0)]
    pub seed: u64,
    /// Log a CSV row (and update the progress bar's loss) every this many steps.
    #[config(default = 10)]
    pub log_every: usize,
    #[config(default = 500)]
    pub checkpoint_every: usize,
    /// Held-out loss every this many steps and at the run's last step (also when its time budget
    /// or Ctrl-C ends it), on fixed held-out images, t and noise.
    #[config(default = 250)]
    pub eval_every: usize,
    /// Held-out images in the fixed evaluation batch.
    #[config(default = 64)]
    pub eval_size: usize,
    /// A PNG grid of EMA samples for `sample_prompts` every this many steps (0: never).
    #[config(default = 1000)]
    pub sample_every: usize,
    #[config(default = "default_prompts()")]
    pub sample_prompts: Vec<String>,
    #[config(default = 3.0)]
    pub sample_guidance: f64,
    #[config(default = 25)]
    pub sample_steps: usize,
    /// Directory for checkpoints, logs, plots and samples.
    #[config(default = "String::from(\"runs/train\")")]
    pub out_dir: String,
    /// The distillation recipe (teacher and stage); `None` trains on the diffusion loss.
    /// `glide distill` fills it in, so a run's `config.json` says how it was trained.
    #[config(default = "None")]
    pub distill: Option<DistillSpec>,
}

/// A config of type `T` from JSON text, every option the text lacks, at any level, taken from
/// `defaults`.
pub(crate) fn parse_filled<T: Serialize + serde::de::DeserializeOwned>(
    text: &str,
    defaults: &T,
) -> Result<T, String> {
    let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let defaults = serde_json::to_value(defaults).map_err(|e| e.to_string())?;
    fill_defaults(&mut v, &defaults);
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Adds each key of `defaults` that `v` lacks, recursing into objects both have.
fn fill_defaults(v: &mut serde_json::Value, defaults: &serde_json::Value) {
    if let (Some(v), Some(defaults)) = (v.as_object_mut(), defaults.as_object()) {
        for (k, d) in defaults {
            match v.get_mut(k) {
                Some(own) => fill_defaults(own, d),
                None => {
                    v.insert(k.clone(), d.clone());
                }
            }
        }
    }
}

/// Prompts the sample grids show: training emoji in several styles.
pub fn default_prompts() -> Vec<String> {
    [
        "a red apple",
        "a cat face, 3d render",
        "a rocket, twemoji style",
        "pizza, noto style",
        "a rainbow in openmoji style",
        "a fox",
        "a red heart, glossy 3d",
        "a deciduous tree",
    ]
    .map(String::from)
    .to_vec()
}

/// A setting that cannot work, said so the user can fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the config names no data: set `data.shards` (a shard directory) or `data.folder`")]
    NoData,
    #[error("`batch_size` must be at least 1 and divisible by the number of devices ({0})")]
    BatchSize(usize),
    #[error("`{0}` must be between 0 and 1")]
    Fraction(&'static str),
    #[error("`{0}` must be at least 1")]
    Zero(&'static str),
    #[error(
        "`model.num_channels` must be a multiple of 32 (GLIDE's group norm has 32 groups), got {0}"
    )]
    Channels(usize),
    #[error("`model`: {0}")]
    Model(#[from] glide_model::config::OptionsError),
    #[error(
        "`batch_size` must be divisible by the number of devices ({0}) and give each at least 2 \
         pairs: the contrastive loss needs another caption to tell apart"
    )]
    ContrastiveBatch(usize),
    #[error("`clip.image_size` ({0}) must be a multiple of `clip.patch_size` ({1})")]
    Patches(usize, usize),
}

impl TrainConfig {
    /// How many non-finite steps in a row stop the run (`max_nonfinite_steps`, default 5).
    pub fn nonfinite_limit(&self) -> usize {
        self.max_nonfinite_steps.unwrap_or(5).max(1)
    }

    /// What the logged `loss` is, for plot titles.
    pub fn loss_name(&self) -> String {
        let snr = self
            .min_snr_gamma
            .map_or(String::new(), |g| format!(", min-SNR γ = {g} weights"));
        match (&self.distill, self.model.predict_v) {
            (Some(spec), _) => format!(
                "{} distillation: x₀ MSE onto the teacher's targets",
                match spec.stage {
                    DistillStage::Guidance => "guidance",
                    DistillStage::Progressive { .. } => "progressive",
                    DistillStage::Trajectory { .. } => "trajectory",
                }
            ),
            (None, true) => format!("loss: v MSE{snr}"),
            (None, false) => format!("loss (hybrid: ε MSE + vb{snr})"),
        }
    }

    /// Parses a config, taking every option it lacks, at any level, from its default (files
    /// written before an option existed keep working; burn's `Config` derive applies defaults
    /// only in `new`, not when deserialising).
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_filled(text, &Self::new(GlideConfig::new(), DataConfig::new()))
    }

    /// [`Self::parse`] of a file.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        Self::parse(&std::fs::read_to_string(path).map_err(|e| e.to_string())?)
    }

    /// Checks the settings that do not depend on the data.
    pub fn validate(&self, devices: usize) -> Result<(), ConfigError> {
        if self.data.shards.is_none() && self.data.folder.is_none() {
            return Err(ConfigError::NoData);
        }
        if self.model.num_channels == 0 || !self.model.num_channels.is_multiple_of(32) {
            return Err(ConfigError::Channels(self.model.num_channels));
        }
        self.model.validate()?;
        if self.batch_size == 0 || !self.batch_size.is_multiple_of(devices.max(1)) {
            return Err(ConfigError::BatchSize(devices));
        }
        for (name, v) in [
            ("p_uncond", self.p_uncond),
            ("ema_decay", self.ema_decay),
            ("data.heldout_fraction", self.data.heldout_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::Fraction(name));
            }
        }
        for (name, v) in [
            ("log_every", self.log_every),
            ("checkpoint_every", self.checkpoint_every),
            ("eval_every", self.eval_every),
            ("sample_steps", self.sample_steps),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }

    /// Learning rate at step `step` (from 0): linear warm-up, then constant (as GLIDE) or
    /// `lr_decay`'s cosine.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.step_settings().lr_at(step)
    }

    /// EMA decay for the update after `n` earlier updates.
    pub fn ema_decay_at(&self, n: usize) -> f64 {
        self.step_settings().ema_decay_at(n)
    }

    /// What an optimisation step needs from this config.
    pub fn step_settings(&self) -> StepSettings {
        StepSettings {
            seed: self.seed,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            lr_decay: self.lr_decay.clone(),
            weight_decay: self.weight_decay,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            grad_clip: self.grad_clip,
            ema_decay: self.ema_decay,
            sequential: self.model.dropout > 0.0,
        }
    }
}

/// How to start a run (the recipe itself is the [`TrainConfig`]).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `<out_dir>/checkpoint.safetensors`.
    pub resume: bool,
    /// Start from these weights (fine-tuning; a distillation run's student starts as its
    /// teacher); the vocabulary comes with them.
    pub init: Option<PathBuf>,
    /// Stop (with a checkpoint) once this many steps are done, as if interrupted.
    pub stop_after: Option<usize>,
    /// No progress bar (tests).
    pub quiet: bool,
}

/// Which distillation a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum DistillStage {
    /// Guidance distillation (stage 1): the teacher is a classifier-free guided base model (ε or v).
    Guidance,
    /// Progressive distillation (stage 2): the teacher is a student of `teacher_steps` steps;
    /// this one learns `teacher_steps / 2`.
    Progressive { teacher_steps: usize },
    /// Fine-tuning a student of `steps` steps (1, 2, 4 or 8) on the teacher's stored guided
    /// chains: the "teacher" is a folder of `glide distill trajectories`.
    Trajectory { steps: usize },
}

/// A distillation run's teacher (weights, or for [`DistillStage::Trajectory`] a chain folder)
/// and stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillSpec {
    pub teacher: PathBuf,
    pub stage: DistillStage,
}
