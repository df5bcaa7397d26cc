//! Guided and progressive distillation (Meng et al. 2023, "On Distillation of Guided Diffusion
//! Models"; Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models"):
//! the nested step grid, a student's chain, and the regression targets.
//!
//! Grid positions are i = 0..=64 with t_i = round(999·i/64) for i ≥ 1 (t_64 = 999); position 0
//! is the data itself (ᾱ = 1). A student of N steps evaluates at positions 64/N·k, k = N..1, and
//! its last step lands on the data. Each halving keeps every second position, so grids nest.
//! (GLIDE's "ddimN" respacing neither nests nor starts at t = 999.)

use std::collections::BTreeSet;

use burn::tensor::{Tensor, backend::Backend};

use crate::{DiffusionError, GaussianDiffusion, NoiseSchedule};

/// Positions of the finest grid.
pub const GRID: usize = 64;

/// Largest guidance weight w a student learns (s = 1 + w ≤ 9); training draws w ~ U[0, MAX_W].
pub const MAX_W: f64 = 8.0;

/// The original timestep of grid position `i` (1..=64) in a chain of `num_timesteps`.
pub fn grid_t(i: usize, num_timesteps: usize) -> usize {
    ((num_timesteps - 1) as f64 * i as f64 / GRID as f64).round() as usize
}

/// Grid positions a student of `steps` steps evaluates at, from the noisiest (64) down.
pub fn student_positions(steps: usize) -> Result<Vec<usize>, DiffusionError> {
    if steps == 0 || steps > GRID || !GRID.is_multiple_of(steps) || !steps.is_power_of_two() {
        return Err(DiffusionError::StudentSteps(steps));
    }
    let stride = GRID / steps;
    Ok((1..=steps).rev().map(|k| k * stride).collect())
}

/// The chain a student samples on: the original timesteps of [`student_positions`], so the
/// samplers' DDIM (η = 0) goes t_64 → … → t_{64/N} → data.
pub fn student_diffusion(
    schedule: NoiseSchedule,
    num_timesteps: usize,
    steps: usize,
) -> Result<GaussianDiffusion, DiffusionError> {
    let keep: BTreeSet<usize> = student_positions(steps)?
        .into_iter()
        .map(|i| grid_t(i, num_timesteps))
        .collect();
    let betas = crate::get_named_beta_schedule(schedule, num_timesteps);
    Ok(GaussianDiffusion::spaced(&betas, &keep))
}

/// ᾱ at grid position `i` of the unspaced chain `base` (1 at position 0).
pub fn alpha_bar_at(base: &GaussianDiffusion, i: usize) -> f64 {
    if i == 0 {
        1.0
    } else {
        base.alphas_cumprod[grid_t(i, base.num_timesteps())]
    }
}

fn column<B: Backend>(v: Vec<f64>, device: &B::Device) -> Tensor<B, 4> {
    let n = v.len();
    let f: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
    Tensor::<B, 1>::from_floats(f.as_slice(), device).reshape([n, 1, 1, 1])
}

/// One deterministic DDIM step per row from position `from[r]` to `to[r]` given a predicted x₀:
/// z' = α'·x₀ + σ'·(z − α·x₀)/σ.
pub fn ddim_between<B: Backend>(
    base: &GaussianDiffusion,
    z: Tensor<B, 4>,
    x0: Tensor<B, 4>,
    from: &[usize],
    to: &[usize],
) -> Tensor<B, 4> {
    let d = z.device();
    let (mut c_x0, mut c_z) = (Vec::new(), Vec::new());
    for (&i, &j) in from.iter().zip(to) {
        let (a, a2) = (alpha_bar_at(base, i), alpha_bar_at(base, j));
        let (s, s2) = ((1.0 - a).sqrt(), (1.0 - a2).sqrt());
        // z' = (α' − σ'α/σ)·x₀ + (σ'/σ)·z
        c_x0.push(a2.sqrt() - s2 * a.sqrt() / s);
        c_z.push(s2 / s);
    }
    column::<B>(c_x0, &d) * x0 + column::<B>(c_z, &d) * z
}

/// The x₀ that takes one DDIM step from `z` at position `from` straight to `z2` at `to`
/// (Salimans & Ho, Algorithm 2): x̃ = (z₂ − (σ₂/σ)·z) / (α₂ − (σ₂/σ)·α). At `to` = 0 it is z₂.
pub fn one_step_target<B: Backend>(
    base: &GaussianDiffusion,
    z: Tensor<B, 4>,
    z2: Tensor<B, 4>,
    from: &[usize],
    to: &[usize],
) -> Tensor<B, 4> {
    let d = z.device();
    let (mut c_z2, mut c_z) = (Vec::new(), Vec::new());
    for (&i, &j) in from.iter().zip(to) {
        let (a, a2) = (alpha_bar_at(base, i), alpha_bar_at(base, j));
        let ratio = (1.0 - a2).sqrt() / (1.0 - a).sqrt();
        let denom = a2.sqrt() - ratio * a.sqrt();
        c_z2.push(1.0 / denom);
        c_z.push(-ratio / denom);
    }
    column::<B>(c_z2, &d) * z2 + column::<B>(c_z, &d) * z
}

/// Salimans & Ho's "truncated SNR" weight max(ᾱ/(1−ᾱ), 1) per original timestep.
pub fn snr_weight(base: &GaussianDiffusion, t: &[usize]) -> Vec<f64> {
    t.iter()
        .map(|&t| {
            let a = base.alphas_cumprod[t];
            (a / (1.0 - a)).max(1.0)
        })
        .collect()
}

/// The student's x-space loss per row: max(SNR, 1)·mean((α·z − σ·v̂ − x̃)²), with the student's
/// x̂₀ taken from its v prediction (the first `target` channels of `student_out`).
pub fn x_loss<B: Backend>(
    base: &GaussianDiffusion,
    student_out: Tensor<B, 4>,
    z: Tensor<B, 4>,
    t: &[usize],
    target: Tensor<B, 4>,
) -> Tensor<B, 1> {
    let c = target.dims()[1];
    let v = student_out.narrow(1, 0, c);
    let x0 = base.predict_xstart_from_v(z, t, v);
    let w = column::<B>(snr_weight(base, t), &target.device());
    crate::losses::mean_flat((x0 - target).powi_scalar(2) * w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    fn base() -> GaussianDiffusion {
        GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000)
    }

    #[test]
    fn grids_nest_and_start_at_999() {
        assert_eq!(grid_t(64, 1000), 999);
        assert_eq!(grid_t(16, 1000), 250);
        assert_eq!(student_positions(4).unwrap(), [64, 48, 32, 16]);
        for n in [2, 4, 8, 16, 32] {
            let coarse: BTreeSet<_> = student_positions(n).unwrap().into_iter().collect();
            let fine: BTreeSet<_> = student_positions(2 * n).unwrap().into_iter().collect();
            assert!(coarse.is_subset(&fine), "{n} ⊄ {}", 2 * n);
        }
        for bad in [0, 3, 48, 128] {
            assert!(student_positions(bad).is_err());
        }
        let d = student_diffusion(NoiseSchedule::SquaredcosCapV2, 1000, 4).unwrap();
        assert_eq!(d.timestep_map, [250, 500, 749, 999]);
        // the last step lands on the data: ᾱ_prev of the first chain entry is 1
        assert_eq!(d.alphas_cumprod_prev[0], 1.0);
    }

    #[test]
    fn one_step_target_reproduces_two_steps() {
        // Two DDIM steps with any x₀ predictions; one step with the target lands on the same z.
        let b = base();
        let dev = Default::default();
        let z = Tensor::<Flex, 4>::random([3, 3, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let x0a = Tensor::<Flex, 4>::random([3, 3, 4, 4], Distribution::Uniform(-1.0, 1.0), &dev);
        let x0b = Tensor::<Flex, 4>::random([3, 3, 4, 4], Distribution::Uniform(-1.0, 1.0), &dev);
        let (from, mid, to) = ([64, 32, 8], [48, 24, 4], [32, 16, 0]);
        let z1 = ddim_between(&b, z.clone(), x0a, &from, &mid);
        let z2 = ddim_between(&b, z1, x0b, &mid, &to);
        let target = one_step_target(&b, z.clone(), z2.clone(), &from, &to);
        let direct = ddim_between(&b, z, target, &from, &to);
        let err: f32 = (direct - z2).abs().max().into_scalar();
        assert!(err < 1e-3, "{err}");
    }

    #[test]
    fn the_x_loss_is_zero_for_the_true_v_and_weights_by_snr() {
        let b = base();
        let dev = Default::default();
        let x0 = Tensor::<Flex, 4>::random([2, 3, 4, 4], Distribution::Uniform(-1.0, 1.0), &dev);
        let eps = Tensor::<Flex, 4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let t = [10, 999];
        let z = b.q_sample(x0.clone(), &t, eps.clone());
        // v = α·ε − σ·x₀
        let a = GaussianDiffusion::extract::<Flex>(&b.sqrt_alphas_cumprod, &t, &dev);
        let s = GaussianDiffusion::extract::<Flex>(&b.sqrt_one_minus_alphas_cumprod, &t, &dev);
        let v = a * eps - s * x0.clone();
        let out = Tensor::cat(vec![v.clone(), v.zeros_like()], 1);
        let l: Vec<f32> = x_loss(&b, out, z, &t, x0).into_data().to_vec().unwrap();
        assert!(l.iter().all(|&x| x < 1e-8), "{l:?}");
        let w = snr_weight(&b, &t);
        assert!(w[0] > 100.0 && w[1] == 1.0, "{w:?}");
    }
}
