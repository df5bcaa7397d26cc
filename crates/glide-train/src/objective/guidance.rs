//! Guidance distillation (Meng et al. 2023, stage 1): one forward of the student at scale
//! s = 1 + w matches the teacher's classifier-free guided x̂₀ at s, the teacher being a base model
//! (ε or v) evaluated on `[cond; uncond]` as sampling does.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use glide_diffusion::GaussianDiffusion;
use glide_diffusion::distill::{GRID, grid_t};
use glide_diffusion::guidance::classifier_free_guidance_per_row;
use glide_model::ImageCond;
use rand::Rng;

use crate::batch::Batch;
use crate::distill::{StudentTargets, Targets, TeacherNet, draws, to_vec};

/// The student learns the teacher's guided prediction, scale drawn per example.
pub struct GuidanceDistillation<TB: Backend> {
    pub teacher: TeacherNet<TB>,
}

impl<TB: Backend> StudentTargets for GuidanceDistillation<TB> {
    fn base(&self) -> &GaussianDiffusion {
        &self.teacher.base
    }

    /// The targets of `batch[lo..hi]`: z_t of the data at a grid timestep and the teacher's
    /// guided x̂₀ there (clipped).
    fn targets(&self, batch: &Batch, lo: usize, hi: usize) -> Targets {
        let tc = &self.teacher;
        let n = hi - lo;
        let ctx = batch.tokens.len() / batch.len();
        let (x_start, noise) = tc.data_tensors(batch, lo, hi);
        let (mut rngs, w) = draws(batch.step, lo, hi);
        // Only the 64 grid points are ever sampled from (Meng et al. draw t anywhere).
        let nt = tc.base.num_timesteps();
        let t: Vec<usize> = rngs
            .iter_mut()
            .map(|r| grid_t(r.random_range(1..=GRID), nt))
            .collect();
        let z = tc.base.q_sample(x_start, &t, noise);
        // [cond; uncond] in one forward, as sampling does.
        let mut all_tokens = batch.tokens[lo * ctx..hi * ctx].to_vec();
        let mut all_mask = batch.mask[lo * ctx..hi * ctx].to_vec();
        for _ in 0..n {
            all_tokens.extend_from_slice(&tc.empty.0);
            all_mask.extend_from_slice(&tc.empty.1);
        }
        let text = tc.model.encode_text(
            Tensor::<TB, 2, Int>::from_data(TensorData::new(all_tokens, [2 * n, ctx]), &tc.device),
            Tensor::<TB, 2, Bool>::from_data(TensorData::new(all_mask, [2 * n, ctx]), &tc.device),
        );
        let ts: Vec<f32> = [&t[..], &t[..]]
            .concat()
            .iter()
            .map(|&v| v as f32)
            .collect();
        let out = tc.model.forward_with_text(
            Tensor::cat(vec![z.clone(), z.clone()], 0),
            tc.floats(&ts),
            &text,
            &ImageCond::none(),
        );
        let scales: Vec<f32> = w.iter().map(|&w| w + 1.0).collect();
        let guided = classifier_free_guidance_per_row(out, &scales, 3).narrow(1, 0, 3);
        let x0 = tc
            .base
            .predict_xstart(z.clone(), &t, guided)
            .clamp(-1.0, 1.0);
        Targets {
            z: to_vec(z),
            t,
            w,
            target: to_vec(x0),
        }
    }
}
