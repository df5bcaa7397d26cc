//! Training objectives, one type per file: what the loss of a batch is. The loop
//! only calls [`Objective::losses`] and never knows which one runs.
//!
//! * [`hybrid::Hybrid`]: GLIDE's diffusion loss (ε MSE + VLB, or the v MSE), optionally
//!   min-SNR-γ weighted; plain or inpainting (the batch's keep masks).
//! * [`guidance::GuidanceDistillation`], [`progressive::ProgressiveDistillation`],
//!   [`trajectory::TrajectoryFineTune`]: the three distillation stages (`crate::distill`).

pub mod contrastive;
pub mod guidance;
pub mod hybrid;
pub mod progressive;
pub mod trajectory;

use std::ops::Range;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use glide_diffusion::losses::LossTerms;
use glide_diffusion::{GaussianDiffusion, ModelMeanType, NoiseSchedule};
use glide_model::Text2ImUNet;
use glide_tokenizer::Tokenizer;

use crate::TrainError;
use crate::batch::{Batch, TrainData};
use crate::config::TrainConfig;
use crate::distill::{DistillStage, StudentTargets, TeacherNet, student_losses};

/// A training objective for a model `M` (the UNet by default). The model trains on the autodiff
/// backend `B`; held-out losses are taken on its inner backend (the live model's `valid()` copy
/// and the EMA model).
pub trait Objective<B: AutodiffBackend, M: AutodiffModule<B> = Text2ImUNet<B>>: Sync {
    /// Per-example loss terms (each `[n]`) of `model` on `batch[rows]`: `loss` is what is
    /// minimised, `mse` and `vb` are logged.
    fn losses(
        &self,
        model: &M,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B>;

    /// The loss terms reported for the held-out batch.
    fn heldout_losses(
        &self,
        model: &M::InnerModule,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B::InnerBackend>;
}

/// A distillation stage as an objective: the student's x-space loss ([`student_losses`]) onto
/// the stage's targets, held out as trained.
pub struct Distillation<T: StudentTargets>(pub T);

impl<T: StudentTargets> Distillation<T> {
    fn student<SB: Backend>(
        &self,
        model: &Text2ImUNet<SB>,
        batch: &Batch,
        rows: Range<usize>,
        device: &SB::Device,
    ) -> LossTerms<SB> {
        let (lo, hi) = (rows.start, rows.end);
        let targets = self.0.targets(batch, lo, hi);
        student_losses(model, self.0.base(), batch, lo, hi, targets, device)
    }
}

impl<B: AutodiffBackend, T: StudentTargets> Objective<B> for Distillation<T> {
    fn losses(
        &self,
        model: &Text2ImUNet<B>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B> {
        self.student(model, batch, rows, device)
    }

    fn heldout_losses(
        &self,
        model: &Text2ImUNet<B::InnerBackend>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B::InnerBackend> {
        self.student(model, batch, rows, device)
    }
}

/// The objective of a run: its diffusion loss, or with `cfg.distill` the stage's distillation
/// (the teacher on the inner backend). `cfg.model` is the run's final architecture.
pub fn for_run<B: AutodiffBackend>(
    cfg: &TrainConfig,
    data: &TrainData,
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<Box<dyn Objective<B>>, TrainError> {
    let schedule: NoiseSchedule = cfg.model.noise_schedule.parse()?;
    let diffusion = GaussianDiffusion::from_schedule(schedule, cfg.model.diffusion_steps)
        .with_model_mean_type(ModelMeanType::from_predict_v(cfg.model.predict_v));
    let Some(spec) = &cfg.distill else {
        return Ok(Box::new(hybrid::Hybrid {
            diffusion,
            min_snr_gamma: cfg.min_snr_gamma,
        }));
    };
    let teacher = || TeacherNet::<B::InnerBackend>::load(&spec.teacher, tokenizer, device);
    Ok(match spec.stage {
        DistillStage::Guidance => Box::new(Distillation(guidance::GuidanceDistillation {
            teacher: teacher()?,
        })),
        DistillStage::Progressive { teacher_steps } => {
            Box::new(Distillation(progressive::ProgressiveDistillation {
                teacher: teacher()?,
                teacher_steps,
            }))
        }
        DistillStage::Trajectory { steps } => {
            Box::new(Distillation(trajectory::TrajectoryFineTune::<
                B::InnerBackend,
            >::load(
                &spec.teacher,
                steps,
                diffusion,
                data,
                cfg.p_uncond,
                device,
            )?))
        }
    })
}
