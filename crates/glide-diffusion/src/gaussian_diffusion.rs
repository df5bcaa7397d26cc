//! `GaussianDiffusion` and `SpacedDiffusion` (guided-diffusion), with learned-range variance for
//! ε models and the fixed posterior variance for v models ([`ModelMeanType`]).
//!
//! Coefficients are f64 tables indexed on the CPU; like `_extract_into_tensor`, each gathered value
//! is cast to f32 and broadcast over `[B, 1, 1, 1]` before it meets a tensor.

use std::collections::BTreeSet;

use burn::tensor::{Tensor, backend::Backend};

use crate::schedule::{NoiseSchedule, get_named_beta_schedule};
use crate::{DiffusionError, space_timesteps};

/// A diffusion chain: its betas and every derived table, plus the map from chain index to the
/// original timestep the model was trained on (`timestep_map`, the identity for an unspaced chain).
#[derive(Debug, Clone)]
pub struct GaussianDiffusion {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f64>,
    pub alphas_cumprod_next: Vec<f64>,
    pub sqrt_alphas_cumprod: Vec<f64>,
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    pub log_one_minus_alphas_cumprod: Vec<f64>,
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    pub posterior_variance: Vec<f64>,
    pub posterior_log_variance_clipped: Vec<f64>,
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
    /// `log(betas)`: the upper end of the learned-range variance.
    pub log_betas: Vec<f64>,
    /// Chain index → original timestep shown to the model.
    pub timestep_map: Vec<usize>,
    /// Length of the chain this one was respaced from (1000 for GLIDE).
    pub original_num_steps: usize,
    /// What the model's first output channels predict.
    pub model_mean_type: ModelMeanType,
}

/// What the model's first C output channels predict: guided-diffusion's `ModelMeanType`, with
/// Salimans & Ho's v where it also has `PREVIOUS_X` and `START_X` (which GLIDE never uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelMeanType {
    /// ε, the noise (GLIDE and OpenAI's released weights). The next C channels are the
    /// learned-range variance values.
    #[default]
    Epsilon,
    /// v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (Salimans & Ho 2022: our distilled students, and bases trained
    /// with `predict_v`). x₀ = √ᾱ_t·x_t − √(1−ᾱ_t)·v stays well conditioned at t = 999, where an
    /// ε model's x₀ divides its error by √ᾱ ≈ 5e-5. Sampled with the fixed posterior variance β̃_t;
    /// the variance channels are unused.
    V,
}

impl ModelMeanType {
    /// The mean type of a model config's `predict_v` flag.
    pub fn from_predict_v(predict_v: bool) -> Self {
        if predict_v { Self::V } else { Self::Epsilon }
    }
}

/// What `p_mean_variance` returns.
pub struct MeanVariance<B: Backend> {
    pub mean: Tensor<B, 4>,
    pub variance: Tensor<B, 4>,
    pub log_variance: Tensor<B, 4>,
    pub pred_xstart: Tensor<B, 4>,
    pub eps: Tensor<B, 4>,
}

impl GaussianDiffusion {
    /// A chain with the given betas (each in (0, 1]).
    pub fn new(betas: Vec<f64>) -> Self {
        let n = betas.len();
        let timestep_map = (0..n).collect();
        Self::with_map(betas, timestep_map, n)
    }

    /// The full 1000-step (or `steps`-step) chain of a named schedule.
    pub fn from_schedule(schedule: NoiseSchedule, steps: usize) -> Self {
        Self::new(get_named_beta_schedule(schedule, steps))
    }

    /// `SpacedDiffusion`: keeps the original steps in `use_timesteps` and re-derives betas so that
    /// the kept ᾱ values are unchanged.
    pub fn spaced(base_betas: &[f64], use_timesteps: &BTreeSet<usize>) -> Self {
        let base = Self::new(base_betas.to_vec());
        let mut last_alpha_cumprod = 1.0;
        let mut new_betas = Vec::new();
        let mut timestep_map = Vec::new();
        for (i, &alpha_cumprod) in base.alphas_cumprod.iter().enumerate() {
            if use_timesteps.contains(&i) {
                new_betas.push(1.0 - alpha_cumprod / last_alpha_cumprod);
                last_alpha_cumprod = alpha_cumprod;
                timestep_map.push(i);
            }
        }
        Self::with_map(new_betas, timestep_map, base_betas.len())
    }

    /// `create_gaussian_diffusion`: a named schedule of `steps` steps, respaced with
    /// `timestep_respacing` (empty = every step).
    pub fn create(
        schedule: NoiseSchedule,
        steps: usize,
        timestep_respacing: &str,
    ) -> Result<Self, DiffusionError> {
        let betas = get_named_beta_schedule(schedule, steps);
        let respacing = if timestep_respacing.is_empty() {
            steps.to_string()
        } else {
            timestep_respacing.to_string()
        };
        Ok(Self::spaced(&betas, &space_timesteps(steps, &respacing)?))
    }

    fn with_map(betas: Vec<f64>, timestep_map: Vec<usize>, original_num_steps: usize) -> Self {
        assert!(
            betas.iter().all(|&b| b > 0.0 && b <= 1.0),
            "betas must lie in (0, 1]"
        );
        let n = betas.len();
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alphas_cumprod.push(acc);
        }
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alphas_cumprod[..n - 1].iter().copied())
            .collect();
        let alphas_cumprod_next: Vec<f64> = alphas_cumprod[1..]
            .iter()
            .copied()
            .chain(std::iter::once(0.0))
            .collect();
        let map = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();
        let posterior_variance =
            map(&|i| betas[i] * (1.0 - alphas_cumprod_prev[i]) / (1.0 - alphas_cumprod[i]));
        // The posterior variance is 0 at the start of the chain: clip its log there.
        let posterior_log_variance_clipped = map(&|i| {
            let v = if i == 0 && n > 1 {
                posterior_variance[1]
            } else {
                posterior_variance[i]
            };
            v.ln()
        });
        Self {
            sqrt_alphas_cumprod: map(&|i| alphas_cumprod[i].sqrt()),
            sqrt_one_minus_alphas_cumprod: map(&|i| (1.0 - alphas_cumprod[i]).sqrt()),
            log_one_minus_alphas_cumprod: map(&|i| (1.0 - alphas_cumprod[i]).ln()),
            sqrt_recip_alphas_cumprod: map(&|i| (1.0 / alphas_cumprod[i]).sqrt()),
            sqrt_recipm1_alphas_cumprod: map(&|i| (1.0 / alphas_cumprod[i] - 1.0).sqrt()),
            posterior_mean_coef1: map(&|i| {
                betas[i] * alphas_cumprod_prev[i].sqrt() / (1.0 - alphas_cumprod[i])
            }),
            posterior_mean_coef2: map(&|i| {
                (1.0 - alphas_cumprod_prev[i]) * alphas[i].sqrt() / (1.0 - alphas_cumprod[i])
            }),
            log_betas: map(&|i| betas[i].ln()),
            posterior_variance,
            posterior_log_variance_clipped,
            alphas_cumprod,
            alphas_cumprod_prev,
            alphas_cumprod_next,
            betas,
            timestep_map,
            original_num_steps,
            model_mean_type: ModelMeanType::Epsilon,
        }
    }

    /// This chain for a model that predicts `model_mean_type` (chains are built for ε).
    pub fn with_model_mean_type(mut self, model_mean_type: ModelMeanType) -> Self {
        self.model_mean_type = model_mean_type;
        self
    }

    /// Number of steps in this chain.
    pub fn num_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// The original timesteps the model is shown for chain indices `t` (`_WrappedModel`).
    pub fn model_timesteps(&self, t: &[usize]) -> Vec<usize> {
        t.iter().map(|&i| self.timestep_map[i]).collect()
    }

    /// `_extract_into_tensor`: `arr[t]` cast to f32, shaped `[B, 1, 1, 1]`.
    pub fn extract<B: Backend>(arr: &[f64], t: &[usize], device: &B::Device) -> Tensor<B, 4> {
        let v: Vec<f32> = t.iter().map(|&i| arr[i] as f32).collect();
        Tensor::<B, 1>::from_floats(v.as_slice(), device).reshape([t.len(), 1, 1, 1])
    }

    /// Diffuses `x_start` to step `t`: √ᾱ_t·x₀ + √(1−ᾱ_t)·ε.
    pub fn q_sample<B: Backend>(
        &self,
        x_start: Tensor<B, 4>,
        t: &[usize],
        noise: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let d = x_start.device();
        Self::extract::<B>(&self.sqrt_alphas_cumprod, t, &d) * x_start
            + Self::extract::<B>(&self.sqrt_one_minus_alphas_cumprod, t, &d) * noise
    }

    /// Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x₀).
    pub fn q_posterior_mean_variance<B: Backend>(
        &self,
        x_start: Tensor<B, 4>,
        x_t: Tensor<B, 4>,
        t: &[usize],
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let d = x_t.device();
        let shape = x_t.shape();
        let mean = Self::extract::<B>(&self.posterior_mean_coef1, t, &d) * x_start
            + Self::extract::<B>(&self.posterior_mean_coef2, t, &d) * x_t;
        let var = Self::extract::<B>(&self.posterior_variance, t, &d).expand(shape.clone());
        let log_var = Self::extract::<B>(&self.posterior_log_variance_clipped, t, &d).expand(shape);
        (mean, var, log_var)
    }

    /// x₀ = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε.
    pub fn predict_xstart_from_eps<B: Backend>(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        eps: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let d = x_t.device();
        Self::extract::<B>(&self.sqrt_recip_alphas_cumprod, t, &d) * x_t
            - Self::extract::<B>(&self.sqrt_recipm1_alphas_cumprod, t, &d) * eps
    }

    /// ε = (√(1/ᾱ_t)·x_t − x₀) / √(1/ᾱ_t − 1).
    pub fn predict_eps_from_xstart<B: Backend>(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        pred_xstart: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let d = x_t.device();
        (Self::extract::<B>(&self.sqrt_recip_alphas_cumprod, t, &d) * x_t - pred_xstart)
            / Self::extract::<B>(&self.sqrt_recipm1_alphas_cumprod, t, &d)
    }

    /// `_predict_xstart`: x₀ from the model's prediction (the first C channels), as
    /// [`Self::model_mean_type`] says.
    pub fn predict_xstart<B: Backend>(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        model_pred: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        match self.model_mean_type {
            ModelMeanType::Epsilon => self.predict_xstart_from_eps(x_t, t, model_pred),
            ModelMeanType::V => self.predict_xstart_from_v(x_t, t, model_pred),
        }
    }

    /// `p_mean_variance` for a model output `[pred, var_values]` (2C channels) at chain indices
    /// `t`. An ε model has the learned-range variance of Nichol & Dhariwal 2021 (eq. 15):
    /// log Σ = ((var+1)/2)·log β_t + (1 − (var+1)/2)·log β̃_t; a v model the fixed β̃_t.
    ///
    /// `denoised_fn` post-processes the predicted x₀ before clipping (inpainting uses it).
    pub fn p_mean_variance<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        x: Tensor<B, 4>,
        t: &[usize],
        clip_denoised: bool,
        denoised_fn: Option<&dyn Fn(Tensor<B, 4>) -> Tensor<B, 4>>,
    ) -> MeanVariance<B> {
        let d = x.device();
        let c = x.dims()[1];
        let pred = model_output.clone().narrow(1, 0, c);
        let min_log = Self::extract::<B>(&self.posterior_log_variance_clipped, t, &d);
        let (pred_xstart, eps, log_variance) = match self.model_mean_type {
            ModelMeanType::Epsilon => {
                let model_var_values = model_output.narrow(1, c, c);
                let max_log = Self::extract::<B>(&self.log_betas, t, &d);
                let frac = (model_var_values + 1.0) / 2.0;
                let log_variance = frac.clone() * max_log + (frac.neg() + 1.0) * min_log;
                let pred_xstart = self.predict_xstart_from_eps(x.clone(), t, pred.clone());
                (pred_xstart, pred, log_variance)
            }
            ModelMeanType::V => {
                let pred_xstart = self.predict_xstart_from_v(x.clone(), t, pred);
                let eps = self.predict_eps_from_xstart(x.clone(), t, pred_xstart.clone());
                (pred_xstart, eps, min_log.expand(x.shape()))
            }
        };
        let variance = log_variance.clone().exp();
        self.finish_mean_variance(
            pred_xstart,
            eps,
            variance,
            log_variance,
            x,
            t,
            clip_denoised,
            denoised_fn,
        )
    }

    /// x₀ = √ᾱ_t·x_t − √(1−ᾱ_t)·v.
    pub fn predict_xstart_from_v<B: Backend>(
        &self,
        x_t: Tensor<B, 4>,
        t: &[usize],
        v: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        self.alpha_minus_sigma(x_t, t, v)
    }

    /// √ᾱ_t·a − √(1−ᾱ_t)·b: x₀ from (x_t, v), and v from (ε, x₀).
    pub(crate) fn alpha_minus_sigma<B: Backend>(
        &self,
        a: Tensor<B, 4>,
        t: &[usize],
        b: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let d = a.device();
        Self::extract::<B>(&self.sqrt_alphas_cumprod, t, &d) * a
            - Self::extract::<B>(&self.sqrt_one_minus_alphas_cumprod, t, &d) * b
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_mean_variance<B: Backend>(
        &self,
        mut pred_xstart: Tensor<B, 4>,
        eps: Tensor<B, 4>,
        variance: Tensor<B, 4>,
        log_variance: Tensor<B, 4>,
        x: Tensor<B, 4>,
        t: &[usize],
        clip_denoised: bool,
        denoised_fn: Option<&dyn Fn(Tensor<B, 4>) -> Tensor<B, 4>>,
    ) -> MeanVariance<B> {
        if let Some(f) = denoised_fn {
            pred_xstart = f(pred_xstart);
        }
        if clip_denoised {
            pred_xstart = pred_xstart.clamp(-1.0, 1.0);
        }
        let (mean, _, _) = self.q_posterior_mean_variance(pred_xstart.clone(), x, t);
        MeanVariance {
            mean,
            variance,
            log_variance,
            pred_xstart,
            eps,
        }
    }

    /// `condition_mean` (Sohl-Dickstein et al. 2015): a classifier's (here CLIP's) gradient
    /// ∇ₓ log p(y | x_t) moves the mean by Σ·∇; DDPM then samples around the new mean. GLIDE's
    /// CLIP guidance is this with `grad = s · ∇ₓ (z_i(x_t, t) · z_text)`.
    pub fn condition_mean<B: Backend>(&self, out: &mut MeanVariance<B>, grad: Tensor<B, 4>) {
        out.mean = out.mean.clone() + out.variance.clone() * grad;
    }

    /// `condition_score` (Song et al. 2021, for DDIM, which has no Σ to scale by): the gradient
    /// shifts the score, ε′ = ε − √(1 − ᾱ_t)·∇, and x₀ and the mean are recomputed from ε′.
    pub fn condition_score<B: Backend>(
        &self,
        out: &mut MeanVariance<B>,
        x: Tensor<B, 4>,
        t: &[usize],
        grad: Tensor<B, 4>,
    ) {
        let d = x.device();
        let eps = self.predict_eps_from_xstart(x.clone(), t, out.pred_xstart.clone())
            - Self::extract::<B>(&self.sqrt_one_minus_alphas_cumprod, t, &d) * grad;
        out.pred_xstart = self.predict_xstart_from_eps(x.clone(), t, eps.clone());
        out.mean = self
            .q_posterior_mean_variance(out.pred_xstart.clone(), x, t)
            .0;
        out.eps = eps;
    }

    /// `p_sample`: x_{t−1} = μ + 𝟙[t≠0]·exp(½ log Σ)·z.
    pub fn p_sample<B: Backend>(
        &self,
        out: &MeanVariance<B>,
        t: &[usize],
        noise: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let nonzero = nonzero_mask::<B>(t, &noise.device());
        out.mean.clone() + nonzero * (out.log_variance.clone() * 0.5).exp() * noise
    }

    /// `ddim_sample`: Song et al. 2021, eq. 12, with σ_t = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_{t−1}).
    pub fn ddim_sample<B: Backend>(
        &self,
        out: &MeanVariance<B>,
        x: Tensor<B, 4>,
        t: &[usize],
        eta: f64,
        noise: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let d = x.device();
        // Re-derive ε from the (possibly clipped) x₀, as the original does.
        let eps = self.predict_eps_from_xstart(x, t, out.pred_xstart.clone());
        let alpha_bar = Self::extract::<B>(&self.alphas_cumprod, t, &d);
        let alpha_bar_prev = Self::extract::<B>(&self.alphas_cumprod_prev, t, &d);
        let sigma = ((alpha_bar_prev.clone().neg() + 1.0) / (alpha_bar.clone().neg() + 1.0)).sqrt()
            * (alpha_bar / alpha_bar_prev.clone())
                .neg()
                .add_scalar(1.0)
                .sqrt()
            * eta;
        let mean_pred = out.pred_xstart.clone() * alpha_bar_prev.clone().sqrt()
            + (alpha_bar_prev.neg() + 1.0 - sigma.clone().powi_scalar(2)).sqrt() * eps;
        let nonzero = nonzero_mask::<B>(t, &d);
        mean_pred + nonzero * sigma * noise
    }
}

/// `(t != 0)` as `[B, 1, 1, 1]` floats: no noise is added on the last step.
fn nonzero_mask<B: Backend>(t: &[usize], device: &B::Device) -> Tensor<B, 4> {
    let v: Vec<f32> = t.iter().map(|&i| if i != 0 { 1.0 } else { 0.0 }).collect();
    Tensor::<B, 1>::from_floats(v.as_slice(), device).reshape([t.len(), 1, 1, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_keeps_alphas_cumprod() {
        let betas = get_named_beta_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
        let full = GaussianDiffusion::new(betas.clone());
        let keep = space_timesteps(1000, "27").unwrap();
        let spaced = GaussianDiffusion::spaced(&betas, &keep);
        assert_eq!(spaced.num_timesteps(), 27);
        for (i, &orig) in spaced.timestep_map.iter().enumerate() {
            let a = spaced.alphas_cumprod[i];
            let b = full.alphas_cumprod[orig];
            assert!((a - b).abs() < 1e-12 * b.max(1e-300) + 1e-15, "{i}");
        }
        assert_eq!(*spaced.timestep_map.last().unwrap(), 999);
    }

    #[test]
    fn posterior_variance_is_positive_after_the_first_step() {
        let d = GaussianDiffusion::from_schedule(NoiseSchedule::Linear, 1000);
        assert_eq!(d.posterior_variance[0], 0.0);
        assert!(d.posterior_variance[1..].iter().all(|&v| v > 0.0));
        assert_eq!(
            d.posterior_log_variance_clipped[0],
            d.posterior_variance[1].ln()
        );
    }
}
