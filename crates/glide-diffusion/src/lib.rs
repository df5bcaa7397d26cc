//! Gaussian diffusion as GLIDE uses it, under the names of `guided_diffusion/gaussian_diffusion.py`
//! and `respace.py` so the two can be read side by side.
//!
//! * [`schedule`]: the `linear` and `squaredcos_cap_v2` beta schedules, in f64.
//! * [`respace`]: `space_timesteps` and the respaced chain; the model is shown the original timestep.
//! * [`GaussianDiffusion`]: `q_sample`, `q_posterior_mean_variance`, `p_mean_variance` (learned-range
//!   variance) and the one-step updates of DDPM and DDIM.
//! * [`sampling`]: the samplers, each an iterator over steps.
//! * [`guidance`]: classifier-free guidance on the predicted (ε or v) channels.
//! * [`losses`]: the hybrid training loss (eps MSE + rescaled VLB), the v MSE and min-SNR-γ weights.
//! * [`noise`]: the one seeded CPU generator every backend draws its noise from.
//! * [`distill`]: the nested step grid and the regression targets of guided and progressive
//!   distillation.
//!
//! The model is any function of `(x_t, original timesteps)` returning `[pred, var_values]`
//! (6 channels), `pred` being ε or v as the chain's [`ModelMeanType`] says.

pub mod distill;
pub mod gaussian_diffusion;
pub mod guidance;
pub mod losses;
pub mod noise;
pub mod respace;
pub mod sampling;
pub mod schedule;

pub use gaussian_diffusion::{GaussianDiffusion, MeanVariance, ModelMeanType};
pub use noise::NoiseRng;
pub use respace::space_timesteps;
pub use sampling::{KnownRegion, SampleOptions, SampleStep, Sampler, Steps};
pub use schedule::{NoiseSchedule, get_named_beta_schedule};

/// Errors a user can cause through the diffusion settings.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DiffusionError {
    #[error(
        "cannot split {total} steps into sections of {wanted:?}: each section needs at most as many \
         steps as it has; use fewer steps (e.g. \"100\") or a comma list that fits"
    )]
    SectionTooLarge { total: usize, wanted: Vec<usize> },
    #[error(
        "cannot create exactly {0} steps with an integer stride (the \"ddimN\" respacing); pick \
         another N, e.g. ddim25 or ddim50, or use a plain step count"
    )]
    NoDdimStride(usize),
    #[error(
        "the respacing {0:?} is not understood: use a step count (\"100\"), \"fast27\", \"ddimN\" or \
         a comma list of counts per section (\"10,15,20\")"
    )]
    BadRespacing(String),
    #[error("unknown noise schedule {0:?}: use \"linear\" or \"squaredcos_cap_v2\"")]
    UnknownSchedule(String),
    #[error(
        "a distilled student takes 1, 2, 4, 8, 16, 32 or 64 steps on the nested grid (got {0})"
    )]
    StudentSteps(usize),
}
