//! A CLIP run's recipe: the towers, the data, whether images are noised, and the optimisation.

use burn::config::Config;
use glide_model::clip::ClipConfig;

use crate::config::{ConfigError, DataConfig, parse_filled};
use crate::optim::{LrDecay, StepSettings};

/// How `glide train-clip` trains a CLIP on (image, caption) pairs with the contrastive loss.
#[derive(Config, Debug)]
pub struct ClipTrainConfig {
    /// The towers; `n_vocab` is set from the vocabulary, and `image_size` is what the images are
    /// resized to (the size of the diffusion model it will guide or score).
    pub clip: ClipConfig,
    pub data: DataConfig,
    /// The noise schedule of the diffusion model the CLIP reads noisy images of
    /// (`clip.n_timesteps` is its number of steps).
    #[config(default = "String::from(\"squaredcos_cap_v2\")")]
    pub noise_schedule: String,
    /// `true`: images are noised with `q_sample` at a uniform t, as GLIDE trains its guiding
    /// noised CLIP; `false`: clean images at t = 0 only (the evaluation CLIP).
    #[config(default = true)]
    pub noised: bool,
    /// Weights whose pruned vocabulary the CLIP reads (the diffusion model it will guide or
    /// score: token ids must mean the same in both); `None` prunes GPT-2 to the captions.
    #[config(default = "None")]
    pub vocab_from: Option<String>,
    #[config(default = 64)]
    pub batch_size: usize,
    #[config(default = 20000)]
    pub steps: usize,
    /// Stop (with a checkpoint) after this many minutes of wall time over all invocations.
    #[config(default = "None")]
    pub max_minutes: Option<f64>,
    #[config(default = 3e-4)]
    pub lr: f64,
    #[config(default = 200)]
    pub warmup_steps: usize,
    /// Cosine decay of `lr` over a span of steps (`None`: constant after the warm-up).
    #[config(default = "None")]
    pub lr_decay: Option<LrDecay>,
    #[config(default = 0.0)]
    pub weight_decay: f64,
    #[config(default = 0.9)]
    pub beta_1: f64,
    #[config(default = 0.98)]
    pub beta_2: f64,
    #[config(default = 1e-6)]
    pub epsilon: f64,
    #[config(default = "Some(1.0)")]
    pub grad_clip: Option<f64>,
    #[config(default = 0.999)]
    pub ema_decay: f64,
    #[config(default = 0)]
    pub seed: u64,
    #[config(default = 10)]
    pub log_every: usize,
    #[config(default = 500)]
    pub checkpoint_every: usize,
    #[config(default = 250)]
    pub eval_every: usize,
    /// Held-out examples for the loss and the retrieval accuracy.
    #[config(default = 128)]
    pub eval_size: usize,
    #[config(default = "String::from(\"runs/clip\")")]
    pub out_dir: String,
}

impl ClipTrainConfig {
    /// Parses a config, taking every option it lacks from its default.
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_filled(text, &Self::new(ClipConfig::new(), DataConfig::new()))
    }

    /// [`Self::parse`] of a file.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        Self::parse(&std::fs::read_to_string(path).map_err(|e| e.to_string())?)
    }

    /// Checks the settings that do not depend on the data: each worker's share of the batch
    /// needs two pairs for the contrastive loss to have a negative.
    pub fn validate(&self, devices: usize) -> Result<(), ConfigError> {
        if self.data.shards.is_none() && self.data.folder.is_none() {
            return Err(ConfigError::NoData);
        }
        let devices = devices.max(1);
        if !self.batch_size.is_multiple_of(devices) || self.batch_size / devices < 2 {
            return Err(ConfigError::ContrastiveBatch(devices));
        }
        for (name, v) in [
            ("steps", self.steps),
            ("log_every", self.log_every),
            ("checkpoint_every", self.checkpoint_every),
            ("eval_every", self.eval_every),
            ("clip.patch_size", self.clip.patch_size),
            ("clip.max_text_len", self.clip.max_text_len),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !self.clip.image_size.is_multiple_of(self.clip.patch_size) {
            return Err(ConfigError::Patches(
                self.clip.image_size,
                self.clip.patch_size,
            ));
        }
        Ok(())
    }

    /// What an optimisation step needs from this config (the towers have no dropout).
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
            sequential: false,
        }
    }
}
