//! Distillation (Meng et al. 2023; Salimans & Ho 2022), the parts its three objectives share
//! (the objectives `guidance`, `progressive` and `trajectory`). The student has the teacher's
//! architecture plus a guidance embedding, predicts v, starts from the teacher's weights, and is
//! trained with the x-space loss weighted by max(SNR, 1) ([`student_losses`]) onto per-example
//! [`Targets`] that the stage's teacher computes without gradients and hands over as plain
//! numbers, so the teacher can live on the inner backend.
//!
//! Scales are drawn per example as s = 1 + w, w ~ U[0, `MAX_W`] (a stored chain keeps its own),
//! and timesteps from the nested grid (`glide_diffusion::distill`), the only ones a student is
//! ever sampled at.

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use glide_diffusion::distill::{MAX_W, snr_weight, x_loss};
use glide_diffusion::losses::LossTerms;
use glide_diffusion::{GaussianDiffusion, ModelMeanType, NoiseSchedule};
use glide_model::weights::{StateDict, config_from_metadata};
use glide_model::{GlideConfig, ImageCond, Text2ImUNet};
use glide_tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::TrainError;
use crate::batch::{Batch, mix};
pub use crate::config::{DistillSpec, DistillStage};
use crate::trajectories::STRIDE;

/// What the student is regressed onto, per example of a batch slice.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The noised input `[n, 3, S, S]`.
    pub z: Vec<f32>,
    /// Original timesteps of `z`.
    pub t: Vec<usize>,
    /// Guidance weights w = s − 1.
    pub w: Vec<f32>,
    /// The target x̃ `[n, 3, S, S]`.
    pub target: Vec<f32>,
}

/// What a distillation stage regresses its student onto.
pub trait StudentTargets: Sync {
    /// The targets of `batch[lo..hi]`.
    fn targets(&self, batch: &Batch, lo: usize, hi: usize) -> Targets;
    /// The unspaced chain the student's timesteps and x-space loss live on.
    fn base(&self) -> &GaussianDiffusion;
}

/// Per-example draws (w, then the stage's grid position), fixed by (batch step, row), and the
/// drawn w ~ U[0, MAX_W] of each row of `lo..hi`.
pub fn draws(step: usize, lo: usize, hi: usize) -> (Vec<ChaCha8Rng>, Vec<f32>) {
    let mut rngs: Vec<ChaCha8Rng> = (lo..hi)
        .map(|r| ChaCha8Rng::seed_from_u64(mix(0x0d15_7111 ^ step as u64, r as u64)))
        .collect();
    let w = rngs
        .iter_mut()
        .map(|r| r.random_range(0.0..=MAX_W) as f32)
        .collect();
    (rngs, w)
}

/// A frozen teacher network and the chain that reads its output (ε or v).
pub struct TeacherNet<B: Backend> {
    pub model: Text2ImUNet<B>,
    pub config: GlideConfig,
    /// The unspaced chain (original timesteps).
    pub base: GaussianDiffusion,
    /// Tokens and mask of the empty caption (the unconditional branch).
    pub empty: (Vec<i64>, Vec<bool>),
    pub device: B::Device,
}

impl<B: Backend> TeacherNet<B> {
    /// Loads the teacher weights at `path`.
    pub fn load(
        path: &PathBuf,
        tokenizer: &Tokenizer,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::Io(path.clone(), e))?;
        let state = StateDict::from_safetensors(&bytes)?;
        let config = config_from_metadata(&state)?.with_dropout(0.0);
        let model = glide_model::weights::load_state_dict(config.init::<B>(device), &state)?;
        let schedule: NoiseSchedule = config.noise_schedule.parse()?;
        let (rows, mask) = tokenizer.model_tokens_and_mask("", config.text_ctx);
        Ok(Self {
            model,
            base: GaussianDiffusion::from_schedule(schedule, config.diffusion_steps)
                .with_model_mean_type(ModelMeanType::from_predict_v(config.predict_v)),
            config,
            empty: (rows.into_iter().map(i64::from).collect(), mask),
            device: device.clone(),
        })
    }

    /// The data images and the noise of `batch[lo..hi]`, `[n, 3, S, S]` each.
    pub fn data_tensors(
        &self,
        batch: &Batch,
        lo: usize,
        hi: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let px = batch.x_start.len() / batch.len();
        let side = ((px / 3) as f64).sqrt() as usize;
        let rows = |v: &[f32]| self.tensor4(v[lo * px..hi * px].to_vec(), hi - lo, 3, side);
        (rows(&batch.x_start), rows(&batch.noise))
    }

    /// `[n, C, S, S]` from a flat vector.
    pub fn tensor4(&self, v: Vec<f32>, n: usize, c: usize, s: usize) -> Tensor<B, 4> {
        Tensor::from_data(TensorData::new(v, [n, c, s, s]), &self.device)
    }

    pub fn floats(&self, v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_floats(v, &self.device)
    }
}

/// `[n, 3, S, S]` tensors as flat vectors.
pub fn to_vec<B: Backend>(x: Tensor<B, 4>) -> Vec<f32> {
    x.into_data().convert::<f32>().to_vec().expect("f32")
}

/// The student's loss on `batch[lo..hi]` given its targets: `loss` is the weighted x-space loss,
/// `mse` the unweighted one; `vb` is 0 (students have no variance term).
pub fn student_losses<B: Backend>(
    student: &Text2ImUNet<B>,
    base: &GaussianDiffusion,
    batch: &Batch,
    lo: usize,
    hi: usize,
    targets: Targets,
    device: &B::Device,
) -> LossTerms<B> {
    let n = hi - lo;
    let px = batch.x_start.len() / batch.len();
    let side = ((px / 3) as f64).sqrt() as usize;
    let img =
        |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, [n, 3, side, side]), device);
    let z = img(targets.z);
    let target = img(targets.target);
    let (tokens, mask) = batch.text_tensors::<B>(lo, hi, device);
    let text = student.encode_text(tokens, mask);
    let ts: Vec<f32> = targets.t.iter().map(|&v| v as f32).collect();
    let out = student.forward_with_guidance_weight(
        z.clone(),
        Tensor::from_floats(ts.as_slice(), device),
        &text,
        &ImageCond::none(),
        Some(Tensor::from_floats(targets.w.as_slice(), device)),
    );
    let loss = x_loss(base, out.clone(), z.clone(), &targets.t, target.clone());
    let weights = snr_weight(base, &targets.t);
    let w = Tensor::<B, 1>::from_floats(
        weights
            .iter()
            .map(|&x| x as f32)
            .collect::<Vec<_>>()
            .as_slice(),
        device,
    );
    let mse = loss.clone().detach() / w;
    LossTerms {
        vb: mse.zeros_like(),
        mse,
        loss,
    }
}

/// The student's options for a teacher's: a guidance embedding and v prediction; progressive
/// rounds halve the teacher's step count.
pub fn student_config(
    teacher: &GlideConfig,
    stage: DistillStage,
) -> Result<GlideConfig, TrainError> {
    let is_student = teacher.guidance_embed && teacher.predict_v;
    match stage {
        DistillStage::Guidance if is_student => Err(TrainError::Distill(
            "the teacher is already a distilled student; guidance distillation starts from a \
             base model (www/models/base.safetensors)"
                .into(),
        )),
        DistillStage::Guidance => Ok(teacher
            .clone()
            .with_guidance_embed(true)
            .with_predict_v(true)
            .with_student_steps(None)),
        DistillStage::Trajectory { .. } if !is_student => Err(TrainError::Distill(
            "trajectory fine-tuning starts from a distilled student; pass --init with one \
             (runs/distill/student-4.safetensors)"
                .into(),
        )),
        DistillStage::Trajectory { steps } => {
            if !matches!(steps, 1 | 2 | 4 | 8) {
                return Err(TrainError::Distill(format!(
                    "the stored chains keep every {STRIDE}th grid point, so a student of 1, 2, 4 \
                     or 8 steps can learn from them, not {steps}; pass --student-steps 4"
                )));
            }
            Ok(teacher.clone().with_student_steps(Some(steps)))
        }
        DistillStage::Progressive { .. } if !is_student => Err(TrainError::Distill(
            "progressive distillation needs a guidance-distilled teacher; run `glide distill \
             guidance` first"
                .into(),
        )),
        DistillStage::Progressive { teacher_steps } => {
            glide_diffusion::distill::student_positions(teacher_steps)
                .map_err(|e| TrainError::Distill(e.to_string()))?;
            if teacher_steps < 2 {
                return Err(TrainError::Distill(
                    "a 1-step teacher cannot be halved".into(),
                ));
            }
            if let Some(own) = teacher.student_steps
                && own != teacher_steps
            {
                return Err(TrainError::Distill(format!(
                    "the teacher samples with {own} steps, not {teacher_steps}; pass --from {own}"
                )));
            }
            Ok(teacher.clone().with_student_steps(Some(teacher_steps / 2)))
        }
    }
}
