//! Training GLIDE (the original release ships no training code): the hybrid loss of the skeleton,
//! 20% empty captions for classifier-free guidance, burn's AdamW with warm-up and global-norm
//! clipping, an EMA with warm-up, held-out losses, sample grids, and exact resume from
//! checkpoints. Runs on any burn autodiff backend: flex (CPU), wgpu, cuda; several devices
//! through burn's multi-device optimiser step.

pub mod batch;
pub mod checkpoint;
pub mod clip_eval;
pub mod clip_train;
pub mod config;
pub mod distill;
pub mod distill_eval;
pub mod ema;
pub mod eval;
pub mod hooks;
pub mod inpaint_eval;
pub mod log;
pub mod masks;
pub mod objective;
pub mod optim;
pub mod rounds;
pub mod run_loop;
pub mod run_state;
pub mod step;
pub mod teacher_data;
pub mod trainer;
pub mod trajectories;

use std::path::PathBuf;

pub use config::{DataConfig, TrainConfig, TrainOptions};
pub use distill::{DistillSpec, DistillStage};
pub use trainer::{TrainOutcome, train};

/// Everything that can stop a run, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Data(#[from] glide_data::DataError),
    #[error(
        "no training shards (train-*.tar) in {0}; build them with `glide data emoji --out {0}`"
    )]
    NoTrainShards(String),
    #[error(
        "the data has no training images left; check `data.limit`, `data.groups` and the data source"
    )]
    EmptyData,
    #[error("{0}: {1}; check the path and that the disk is writable")]
    Io(PathBuf, std::io::Error),
    #[error(
        "checkpoint {0} cannot be used ({1}); it may be truncated: resume from an earlier copy or \
         start over without --resume"
    )]
    BadCheckpoint(PathBuf, String),
    #[error("no checkpoint to resume at {0}; start without --resume")]
    NoCheckpoint(PathBuf),
    #[error(
        "the checkpoint was written for other model options than this config's; resume with the \
         config it was written with"
    )]
    OptionsChanged,
    #[error(transparent)]
    Weights(#[from] glide_model::WeightsError),
    #[error(transparent)]
    Options(#[from] glide_model::config::OptionsError),
    #[error(transparent)]
    Pipeline(#[from] glide_pipeline::text2im::PipelineError),
    #[error(
        "the evaluation CLIP reads {0} px images but the samples are {1} px; use a CLIP trained at \
         the model's image size"
    )]
    ClipSize(usize, usize),
    #[error("CLIP guidance needs a guiding CLIP: pass --guide-clip FILE (not the evaluation CLIP)")]
    NoGuideClip,
    #[error("cannot distil: {0}")]
    Distill(String),
    #[error(transparent)]
    Diffusion(#[from] glide_diffusion::DiffusionError),
    #[error(transparent)]
    Tokenizer(#[from] glide_tokenizer::TokenizerError),
    #[error(transparent)]
    OptimState(#[from] optim::OptimStateError),
    #[error(
        "{0} has no pruned vocabulary to read captions with; name weights trained by `glide train` \
         in `vocab_from`, or set it to null to prune GPT-2's vocabulary to the captions"
    )]
    NoVocab(PathBuf),
    #[error(
        "the loss or its gradients were not finite ({0}) for {2} steps in a row, up to step {1}; \
         those steps were skipped and the last checkpoint was kept: lower `lr`, enable \
         `grad_clip`, or check the data"
    )]
    NonFinite(f64, usize, usize),
}
