//! Progressive distillation (Salimans & Ho 2022): one DDIM step of the student matches two DDIM
//! steps of the teacher, a w-conditioned student of twice as many steps, on the nested grid.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use glide_diffusion::GaussianDiffusion;
use glide_diffusion::distill::{GRID, ddim_between, grid_t, one_step_target};
use glide_model::ImageCond;
use rand::Rng;

use crate::batch::Batch;
use crate::distill::{StudentTargets, Targets, TeacherNet, draws, to_vec};

/// A student of `teacher_steps / 2` steps learns from one of `teacher_steps`.
pub struct ProgressiveDistillation<TB: Backend> {
    pub teacher: TeacherNet<TB>,
    pub teacher_steps: usize,
}

impl<TB: Backend> StudentTargets for ProgressiveDistillation<TB> {
    fn base(&self) -> &GaussianDiffusion {
        &self.teacher.base
    }

    /// The targets of `batch[lo..hi]`: z_t of the data at a student grid point, and the x̃ from
    /// which one DDIM step lands where the teacher's two steps do.
    fn targets(&self, batch: &Batch, lo: usize, hi: usize) -> Targets {
        let tc = &self.teacher;
        let (x_start, noise) = tc.data_tensors(batch, lo, hi);
        let (mut rngs, w) = draws(batch.step, lo, hi);
        let stride = GRID / self.teacher_steps;
        let student_steps = self.teacher_steps / 2;
        let (mut from, mut mid, mut to) = (Vec::new(), Vec::new(), Vec::new());
        for r in &mut rngs {
            let k = r.random_range(1..=student_steps);
            let i = k * 2 * stride;
            from.push(i);
            mid.push(i - stride);
            to.push(i - 2 * stride);
        }
        let nt = tc.base.num_timesteps();
        let t: Vec<usize> = from.iter().map(|&i| grid_t(i, nt)).collect();
        let t_mid: Vec<usize> = mid.iter().map(|&i| grid_t(i, nt)).collect();
        let z = tc.base.q_sample(x_start, &t, noise);
        let (tokens, mask) = batch.text_tensors::<TB>(lo, hi, &tc.device);
        let text = tc.model.encode_text(tokens, mask);
        let x0_of = |z: Tensor<TB, 4>, t: &[usize]| {
            let ts: Vec<f32> = t.iter().map(|&v| v as f32).collect();
            let v = tc.model.forward_with_guidance_weight(
                z.clone(),
                tc.floats(&ts),
                &text,
                &ImageCond::none(),
                Some(tc.floats(&w)),
            );
            let v = v.narrow(1, 0, 3);
            tc.base.predict_xstart_from_v(z, t, v).clamp(-1.0, 1.0)
        };
        let x0_a = x0_of(z.clone(), &t);
        let z1 = ddim_between(&tc.base, z.clone(), x0_a, &from, &mid);
        let x0_b = x0_of(z1.clone(), &t_mid);
        let z2 = ddim_between(&tc.base, z1, x0_b, &mid, &to);
        let target = one_step_target(&tc.base, z.clone(), z2, &from, &to);
        Targets {
            z: to_vec(z),
            t,
            w,
            target: to_vec(target),
        }
    }
}
