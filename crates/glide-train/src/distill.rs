//! Distillation objectives for the trainer (Meng et al. 2023; Salimans & Ho 2022). The student
//! has the teacher's architecture plus a guidance embedding, predicts v, starts from the teacher's
//! weights, and is trained with the x-space loss weighted by max(SNR, 1):
//!
//! * **guidance**: one forward at scale s matches the teacher's classifier-free guided x̂₀ at s
//!   (teacher: an ε model, two branches `[cond; uncond]`);
//! * **progressive**: one DDIM step of the student matches two DDIM steps of the teacher (a
//!   w-conditioned student of twice as many steps) on the nested grid;
//! * **trajectory**: one DDIM step of the student, from a state of the teacher's own stored
//!   guided chain, lands where that chain is 64/N grid points later (`crate::trajectories`).
//!
//! Scales are drawn per example as s = 1 + w, w ~ U[0, 8] (a stored chain keeps its own), and
//! timesteps from the nested grid (`glide_diffusion::distill`), the only ones a student is ever
//! sampled at. Teacher targets are computed without gradients and handed over as plain numbers,
//! so the teacher can live on the inner backend.

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use glide_diffusion::NoiseSchedule;
use glide_diffusion::distill::{GRID, ddim_between, grid_t, one_step_target, snr_weight, x_loss};
use glide_diffusion::guidance::classifier_free_guidance_per_row;
use glide_diffusion::losses::LossTerms;
use glide_diffusion::{GaussianDiffusion, ModelMeanType};
use glide_model::weights::{StateDict, config_from_metadata};
use glide_model::{GlideConfig, ImageCond, Text2ImUNet};
use glide_tokenizer::Tokenizer;
use std::collections::HashMap;

use crate::TrainError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::batch::{Batch, mix};
use crate::trajectories::{STRIDE, Trajectory, load_trajectories};

/// Largest guidance weight w (s = 1 + w ≤ 9).
pub const MAX_W: f64 = 8.0;

/// Which distillation a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A frozen teacher and what it is for.
pub struct Teacher<B: Backend> {
    /// The teacher network (none for [`DistillStage::Trajectory`]).
    pub model: Option<Text2ImUNet<B>>,
    /// The stored chains by data key ([`DistillStage::Trajectory`] only).
    pub chains: HashMap<String, Trajectory>,
    pub stage: DistillStage,
    /// The unspaced chain (original timesteps), reading the teacher network's output as ε or v.
    pub base: GaussianDiffusion,
    /// Tokens and mask of the empty caption (the unconditional branch).
    pub empty: (Vec<i64>, Vec<bool>),
    pub device: B::Device,
}

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

/// Per-example draws (w, and the grid step for progressive rounds), fixed by (batch step, row).
fn draws(step: usize, row: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(0x0d15_7111 ^ step as u64, row as u64))
}

impl<B: Backend> Teacher<B> {
    fn tensor4(&self, v: Vec<f32>, n: usize, c: usize, s: usize) -> Tensor<B, 4> {
        Tensor::from_data(TensorData::new(v, [n, c, s, s]), &self.device)
    }

    fn floats(&self, v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_floats(v, &self.device)
    }

    /// The targets of `batch[lo..hi]`.
    pub fn targets(&self, batch: &Batch, lo: usize, hi: usize) -> Targets {
        let n = hi - lo;
        let px = batch.x_start.len() / batch.len();
        let side = ((px / 3) as f64).sqrt() as usize;
        let ctx = batch.tokens.len() / batch.len();
        let x_start = self.tensor4(batch.x_start[lo * px..hi * px].to_vec(), n, 3, side);
        let noise = self.tensor4(batch.noise[lo * px..hi * px].to_vec(), n, 3, side);
        let mut rngs: Vec<ChaCha8Rng> = (lo..hi).map(|r| draws(batch.step, r)).collect();
        let mut w: Vec<f32> = rngs
            .iter_mut()
            .map(|r| r.random_range(0.0..=MAX_W) as f32)
            .collect();
        let tokens = batch.tokens[lo * ctx..hi * ctx].to_vec();
        let mask = batch.mask[lo * ctx..hi * ctx].to_vec();
        let model = || {
            self.model
                .as_ref()
                .expect("this stage's teacher is a network")
        };
        let (z, t, target) = match self.stage {
            DistillStage::Trajectory { steps } => {
                let stride = GRID / steps;
                let nt = self.base.num_timesteps();
                let (mut z, mut z2) = (Vec::with_capacity(n * px), Vec::with_capacity(n * px));
                let (mut from, mut to) = (Vec::new(), Vec::new());
                for (r, rng) in (lo..hi).zip(&mut rngs) {
                    let chain = &self.chains[&batch.keys[r]];
                    let i = rng.random_range(1..=steps) * stride;
                    z.extend_from_slice(chain.at(i));
                    z2.extend_from_slice(chain.at(i - stride));
                    from.push(i);
                    to.push(i - stride);
                    // the chain's own scale, not a drawn one
                    w[r - lo] = (chain.guidance - 1.0) as f32;
                }
                let z = self.tensor4(z, n, 3, side);
                let z2 = self.tensor4(z2, n, 3, side);
                let target = one_step_target(&self.base, z.clone(), z2, &from, &to);
                (z, from.iter().map(|&i| grid_t(i, nt)).collect(), target)
            }
            DistillStage::Guidance => {
                // Only the 64 grid points are ever sampled from (Meng et al. draw t anywhere).
                let nt = self.base.num_timesteps();
                let t: Vec<usize> = rngs
                    .iter_mut()
                    .map(|r| grid_t(r.random_range(1..=GRID), nt))
                    .collect();
                let z = self.base.q_sample(x_start, &t, noise);
                // [cond; uncond] in one forward, as sampling does.
                let mut all_tokens = tokens;
                let mut all_mask = mask;
                for _ in 0..n {
                    all_tokens.extend_from_slice(&self.empty.0);
                    all_mask.extend_from_slice(&self.empty.1);
                }
                let text = model().encode_text(
                    Tensor::<B, 2, Int>::from_data(
                        TensorData::new(all_tokens, [2 * n, ctx]),
                        &self.device,
                    ),
                    Tensor::<B, 2, Bool>::from_data(
                        TensorData::new(all_mask, [2 * n, ctx]),
                        &self.device,
                    ),
                );
                let ts: Vec<f32> = [&t[..], &t[..]]
                    .concat()
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let out = model().forward_with_text(
                    Tensor::cat(vec![z.clone(), z.clone()], 0),
                    self.floats(&ts),
                    &text,
                    &ImageCond::none(),
                );
                let scales: Vec<f32> = w.iter().map(|&w| w + 1.0).collect();
                let guided = classifier_free_guidance_per_row(out, &scales, 3).narrow(1, 0, 3);
                let x0 = self
                    .base
                    .predict_xstart(z.clone(), &t, guided)
                    .clamp(-1.0, 1.0);
                (z, t, x0)
            }
            DistillStage::Progressive { teacher_steps } => {
                let stride = GRID / teacher_steps;
                let student_steps = teacher_steps / 2;
                let (mut from, mut mid, mut to) = (Vec::new(), Vec::new(), Vec::new());
                for r in &mut rngs {
                    let k = r.random_range(1..=student_steps);
                    let i = k * 2 * stride;
                    from.push(i);
                    mid.push(i - stride);
                    to.push(i - 2 * stride);
                }
                let nt = self.base.num_timesteps();
                let t: Vec<usize> = from.iter().map(|&i| grid_t(i, nt)).collect();
                let t_mid: Vec<usize> = mid.iter().map(|&i| grid_t(i, nt)).collect();
                let z = self.base.q_sample(x_start, &t, noise);
                let (tokens, mask) = batch.text_tensors::<B>(lo, hi, &self.device);
                let text = model().encode_text(tokens, mask);
                let x0_of = |z: Tensor<B, 4>, t: &[usize]| {
                    let ts: Vec<f32> = t.iter().map(|&v| v as f32).collect();
                    let v = model().forward_guided(
                        z.clone(),
                        self.floats(&ts),
                        &text,
                        &ImageCond::none(),
                        Some(self.floats(&w)),
                    );
                    let v = v.narrow(1, 0, 3);
                    self.base.predict_xstart_from_v(z, t, v).clamp(-1.0, 1.0)
                };
                let x0_a = x0_of(z.clone(), &t);
                let z1 = ddim_between(&self.base, z.clone(), x0_a, &from, &mid);
                let x0_b = x0_of(z1.clone(), &t_mid);
                let z2 = ddim_between(&self.base, z1, x0_b, &mid, &to);
                let target = one_step_target(&self.base, z.clone(), z2, &from, &to);
                (z, t, target)
            }
        };
        let to_vec =
            |x: Tensor<B, 4>| -> Vec<f32> { x.into_data().convert::<f32>().to_vec().expect("f32") };
        Targets {
            z: to_vec(z),
            t,
            w,
            target: to_vec(target),
        }
    }
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
    let out = student.forward_guided(
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

/// The run's teacher: a network (a base ε or v model, or an earlier student), or for
/// [`DistillStage::Trajectory`] a folder of stored chains, whose diffusion is the student's.
pub fn load_teacher<TB: Backend>(
    spec: &crate::trainer::DistillSpec,
    device: &TB::Device,
    tokenizer: &Tokenizer,
    student: &GlideConfig,
) -> Result<Teacher<TB>, TrainError> {
    let (rows, mask) = tokenizer.model_tokens_and_mask("", student.text_ctx);
    let empty = (rows.into_iter().map(i64::from).collect(), mask);
    if let DistillStage::Trajectory { .. } = spec.stage {
        let schedule: NoiseSchedule = student.noise_schedule.parse()?;
        return Ok(Teacher {
            model: None,
            chains: load_trajectories(&spec.teacher)?,
            stage: spec.stage,
            base: GaussianDiffusion::from_schedule(schedule, student.diffusion_steps),
            empty,
            device: device.clone(),
        });
    }
    let bytes =
        std::fs::read(&spec.teacher).map_err(|e| TrainError::Io(spec.teacher.clone(), e))?;
    let state = StateDict::from_safetensors(&bytes)?;
    let config = config_from_metadata(&state)?.with_dropout(0.0);
    let model = glide_model::weights::load_state_dict(config.init::<TB>(device), &state)?;
    let schedule: NoiseSchedule = config.noise_schedule.parse()?;
    Ok(Teacher {
        model: Some(model),
        chains: HashMap::new(),
        stage: spec.stage,
        base: GaussianDiffusion::from_schedule(schedule, config.diffusion_steps)
            .with_model_mean_type(ModelMeanType::from_predict_v(config.predict_v)),
        empty,
        device: device.clone(),
    })
}

impl<B: Backend> Teacher<B> {
    /// Checks that every example of a trajectory run has its chain, with the same caption (the
    /// folder reader and the chain files must agree), and that no caption is dropped.
    pub fn check_chains<'a>(
        &self,
        examples: impl Iterator<Item = &'a crate::batch::Example>,
        p_uncond: f64,
    ) -> Result<(), TrainError> {
        if self.model.is_some() {
            return Ok(());
        }
        if p_uncond != 0.0 {
            return Err(TrainError::Distill(
                "each stored chain was drawn for its caption, so a trajectory run cannot drop \
                 captions; set \"p_uncond\": 0 in the config"
                    .into(),
            ));
        }
        for ex in examples {
            let Some(chain) = self.chains.get(&ex.key) else {
                return Err(TrainError::Distill(format!(
                    "the image {} has no chain ({0}.safetensors); point data.folder at a folder \
                     written by `glide distill trajectories`",
                    ex.key
                )));
            };
            if ex.captions.first().map_or("", String::as_str) != chain.caption {
                return Err(TrainError::Distill(format!(
                    "the caption of {} differs from its chain's; redraw the folder with `glide \
                     distill trajectories`",
                    ex.key
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use glide_diffusion::distill::ddim_between;

    #[test]
    fn trajectory_targets_take_one_ddim_step_to_the_chains_next_kept_state() {
        let device = Default::default();
        let base = GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
        let side = 4;
        let px = 3 * side * side;
        let chain = |seed: u64, guidance: f64| Trajectory {
            caption: format!("chain {seed}"),
            guidance,
            states: (0..=GRID / STRIDE)
                .map(|k| {
                    glide_diffusion::NoiseRng::new(seed * 100 + k as u64)
                        .randn_vec(px)
                        .into_iter()
                        .map(|v| v * 0.5)
                        .collect()
                })
                .collect(),
        };
        let chains: HashMap<String, Trajectory> = [("a", chain(1, 2.5)), ("b", chain(2, 7.0))]
            .into_iter()
            .map(|(k, c)| (k.to_string(), c))
            .collect();
        let teacher = Teacher::<Flex> {
            model: None,
            chains: chains.clone(),
            stage: DistillStage::Trajectory { steps: 4 },
            base: base.clone(),
            empty: (vec![0; 2], vec![false; 2]),
            device,
        };
        let keys = ["a", "b", "a", "b", "b", "a"];
        let n = keys.len();
        let batch = Batch {
            step: 3,
            x_start: vec![0.0; n * px],
            tokens: vec![0; n * 2],
            mask: vec![true; n * 2],
            t: vec![0; n],
            noise: vec![0.0; n * px],
            captions: vec![String::new(); n],
            keys: keys.iter().map(|k| k.to_string()).collect(),
            keep: Vec::new(),
        };
        let tg = teacher.targets(&batch, 1, n);
        let m = n - 1;
        let positions: Vec<usize> =
            tg.t.iter()
                .map(|&t| (1..=GRID).find(|&i| grid_t(i, 1000) == t).unwrap())
                .collect();
        let to: Vec<usize> = positions.iter().map(|&i| i - 16).collect();
        assert!(positions.iter().all(|i| [16, 32, 48, 64].contains(i)));
        let img = |v: Vec<f32>| {
            Tensor::<Flex, 4>::from_data(TensorData::new(v, [m, 3, side, side]), &device)
        };
        let z = img(tg.z.clone());
        let landed: Vec<f32> = ddim_between(&base, z, img(tg.target.clone()), &positions, &to)
            .into_data()
            .to_vec()
            .unwrap();
        for r in 0..m {
            let c = &chains[keys[r + 1]];
            assert_eq!(&tg.z[r * px..(r + 1) * px], c.at(positions[r]));
            assert!((tg.w[r] - (c.guidance as f32 - 1.0)).abs() < 1e-6);
            let err = landed[r * px..(r + 1) * px]
                .iter()
                .zip(c.at(to[r]))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-3, "row {r}: {err}");
        }
    }
}
