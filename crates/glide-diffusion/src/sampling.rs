//! Samplers, k-diffusion style: each one function with the same signature, returning an iterator
//! that runs one model evaluation per `next()` and yields the new x and the predicted x₀, so a
//! progress bar and a live preview are the same code path.
//!
//! The model is any `FnMut(x_t, original_timesteps) -> [pred, var_values]`; the sampler maps
//! chain indices to the original timesteps (`timestep_map`) before calling it.

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::{GaussianDiffusion, NoiseRng};

/// A denoising model as the samplers see it: `(x_t, original timesteps) -> [pred, var_values]`
/// (`pred` is ε or v as the chain's `model_mean_type` says).
pub trait ModelFn<B: Backend>: FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4> {}
impl<B: Backend, F: FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4>> ModelFn<B> for F {}

/// Post-processing of the predicted x₀ before clipping (`denoised_fn`).
pub type DenoisedFn<'a, B> = Box<dyn Fn(Tensor<B, 4>) -> Tensor<B, 4> + 'a>;

/// A guidance gradient `(x_t, original timesteps) -> s·∇ₓ log p(y | x_t)` (`cond_fn`), e.g.
/// CLIP guidance: DDPM moves the mean by it ([`GaussianDiffusion::condition_mean`]), DDIM the
/// score ([`GaussianDiffusion::condition_score`]).
pub type CondFn<'a, B> = Box<dyn FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4> + 'a>;

/// Options shared by the samplers.
pub struct SampleOptions<'a, B: Backend> {
    /// Clamp the predicted x₀ to [-1, 1] (the original's default).
    pub clip_denoised: bool,
    /// DDIM's η (0 = deterministic); ignored by DDPM.
    pub eta: f64,
    /// Applied to the predicted x₀ at every step (e.g. to paste a known region).
    pub denoised_fn: Option<DenoisedFn<'a, B>>,
    /// Pixels whose values are given (inpainting, masked image-to-image); see [`KnownRegion`].
    pub known: Option<KnownRegion<B>>,
    /// Chain index of the given x (SDEdit starts from a noised image part-way down the chain);
    /// `None` is the top of the chain, x_T.
    pub start_t: Option<usize>,
    /// Classifier (CLIP) guidance, see [`CondFn`].
    pub cond_fn: Option<CondFn<'a, B>>,
}

/// Pixels that are given: after the last step they are pasted exactly, so the output equals
/// `image` wherever `mask` is 1. With `replace_noisy` they are also replaced after every step by
/// `q_sample(image, t−1)`: the paper's inpainting baseline for a model never trained to inpaint
/// (GLIDE §3.3; Sohl-Dickstein et al. 2015, Song et al. 2021).
#[derive(Debug, Clone)]
pub struct KnownRegion<B: Backend> {
    /// `[B, C, H, W]` in [-1, 1].
    pub image: Tensor<B, 4>,
    /// `[B, 1, H, W]`, 1 = keep (given), 0 = generate.
    pub mask: Tensor<B, 4>,
    pub replace_noisy: bool,
}

impl<B: Backend> KnownRegion<B> {
    /// `mask·known + (1 − mask)·x`.
    pub fn paste(&self, known: Tensor<B, 4>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let m = self.mask.clone();
        known * m.clone() + x * (m.neg() + 1.0)
    }
}

impl<B: Backend> Default for SampleOptions<'_, B> {
    fn default() -> Self {
        Self {
            clip_denoised: true,
            eta: 0.0,
            denoised_fn: None,
            known: None,
            start_t: None,
            cond_fn: None,
        }
    }
}

/// One finished step.
pub struct SampleStep<B: Backend> {
    /// 1-based number of steps done.
    pub step: usize,
    /// Steps in the chain.
    pub total: usize,
    /// Chain index just sampled from.
    pub t: usize,
    /// x_{t−1}; after the last step, the sample.
    pub sample: Tensor<B, 4>,
    /// The model's (clipped) x₀ prediction at this step.
    pub pred_xstart: Tensor<B, 4>,
}

/// The samplers by name, for command lines and UIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    #[default]
    Ddpm,
    Ddim,
}

impl Sampler {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Ddim => "ddim",
        }
    }

    /// Starts this sampler (see [`sample_ddpm`] and [`sample_ddim`]).
    pub fn sample<'a, B, M>(
        self,
        diffusion: GaussianDiffusion,
        model: M,
        x_t: Tensor<B, 4>,
        rng: NoiseRng,
        options: SampleOptions<'a, B>,
    ) -> Steps<'a, B, M>
    where
        B: Backend,
        M: FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4>,
    {
        match self {
            Self::Ddpm => sample_ddpm(diffusion, model, x_t, rng, options),
            Self::Ddim => sample_ddim(diffusion, model, x_t, rng, options),
        }
    }
}

impl std::str::FromStr for Sampler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ddpm" => Ok(Self::Ddpm),
            "ddim" => Ok(Self::Ddim),
            _ => Err(format!("unknown sampler {s:?}: use ddpm or ddim")),
        }
    }
}

/// A running sampler; see [`sample_ddpm`] and [`sample_ddim`].
pub struct Steps<'a, B: Backend, M> {
    diffusion: GaussianDiffusion,
    model: M,
    x: Tensor<B, 4>,
    rng: NoiseRng,
    options: SampleOptions<'a, B>,
    kind: Sampler,
    next_t: Option<usize>,
}

/// Ancestral sampling: Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2,
/// with the learned variances of Nichol & Dhariwal 2021 (`p_sample_loop`).
pub fn sample_ddpm<'a, B, M>(
    diffusion: GaussianDiffusion,
    model: M,
    x_t: Tensor<B, 4>,
    rng: NoiseRng,
    options: SampleOptions<'a, B>,
) -> Steps<'a, B, M>
where
    B: Backend,
    M: FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4>,
{
    Steps::new(diffusion, model, x_t, rng, options, Sampler::Ddpm)
}

/// Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12, with η from the options
/// (`ddim_sample_loop`).
pub fn sample_ddim<'a, B, M>(
    diffusion: GaussianDiffusion,
    model: M,
    x_t: Tensor<B, 4>,
    rng: NoiseRng,
    options: SampleOptions<'a, B>,
) -> Steps<'a, B, M>
where
    B: Backend,
    M: FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4>,
{
    Steps::new(diffusion, model, x_t, rng, options, Sampler::Ddim)
}

impl<'a, B, M> Steps<'a, B, M>
where
    B: Backend,
    M: FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4>,
{
    fn new(
        diffusion: GaussianDiffusion,
        model: M,
        x: Tensor<B, 4>,
        rng: NoiseRng,
        options: SampleOptions<'a, B>,
        kind: Sampler,
    ) -> Self {
        let n = diffusion.num_timesteps();
        let next_t = match options.start_t {
            Some(t) => Some(t.min(n.saturating_sub(1))).filter(|_| n > 0),
            None => n.checked_sub(1),
        };
        Self {
            diffusion,
            model,
            x,
            rng,
            options,
            kind,
            next_t,
        }
    }

    /// Steps this run takes (fewer than the chain when it starts part-way, see `start_t`).
    pub fn total(&self) -> usize {
        let n = self.diffusion.num_timesteps();
        self.options.start_t.map_or(n, |s| s.min(n - 1) + 1)
    }

    /// Runs every remaining step and returns the final sample.
    pub fn run(mut self) -> Tensor<B, 4> {
        for step in self.by_ref() {
            drop(step);
        }
        self.x
    }

    /// The current x (x_T before the first step).
    pub fn current(&self) -> &Tensor<B, 4> {
        &self.x
    }
}

impl<B, M> Iterator for Steps<'_, B, M>
where
    B: Backend,
    M: FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4>,
{
    type Item = SampleStep<B>;

    fn next(&mut self) -> Option<SampleStep<B>> {
        let i = self.next_t?;
        let batch = self.x.dims()[0];
        let t = vec![i; batch];
        let model_t = self.diffusion.model_timesteps(&t);
        let model_output = (self.model)(self.x.clone(), &model_t);
        let mut out = self.diffusion.p_mean_variance(
            model_output,
            self.x.clone(),
            &t,
            self.options.clip_denoised,
            self.options.denoised_fn.as_deref(),
        );
        if let Some(cond_fn) = self.options.cond_fn.as_mut() {
            let grad = cond_fn(self.x.clone(), &model_t);
            match self.kind {
                Sampler::Ddpm => self.diffusion.condition_mean(&mut out, grad),
                Sampler::Ddim => self
                    .diffusion
                    .condition_score(&mut out, self.x.clone(), &t, grad),
            }
        }
        let noise = self.rng.randn::<B, 4>(self.x.dims(), &self.x.device());
        let mut sample = match self.kind {
            Sampler::Ddpm => self.diffusion.p_sample(&out, &t, noise),
            Sampler::Ddim => {
                self.diffusion
                    .ddim_sample(&out, self.x.clone(), &t, self.options.eta, noise)
            }
        };
        let mut pred_xstart = out.pred_xstart;
        if let Some(known) = &self.options.known {
            if i == 0 {
                sample = known.paste(known.image.clone(), sample);
            } else if known.replace_noisy {
                let z = self.rng.randn::<B, 4>(known.image.dims(), &self.x.device());
                let noisy = self
                    .diffusion
                    .q_sample(known.image.clone(), &vec![i - 1; batch], z);
                sample = known.paste(noisy, sample);
            }
            // The preview shows the final picture: the given pixels where they are given.
            pred_xstart = known.paste(known.image.clone(), pred_xstart);
        }
        self.x = sample.clone();
        self.next_t = i.checked_sub(1);
        let total = self.diffusion.num_timesteps();
        let first = self.options.start_t.map_or(total, |s| s.min(total - 1) + 1);
        Some(SampleStep {
            step: first - i,
            total: first,
            t: i,
            sample,
            pred_xstart,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoiseSchedule;
    use burn::backend::Flex;

    /// The mean of the final sample of a 4-step chain whose model predicts ε = 0, with a
    /// guidance gradient of `g` everywhere (None: unguided).
    fn final_mean(sampler: Sampler, g: Option<f32>) -> f32 {
        let d = GaussianDiffusion::spaced(
            &crate::get_named_beta_schedule(NoiseSchedule::SquaredcosCapV2, 1000),
            &crate::space_timesteps(1000, "4").unwrap(),
        );
        let model = |x: Tensor<Flex, 4>, _: &[usize]| {
            let [b, _, h, w] = x.dims();
            Tensor::zeros([b, 6, h, w], &x.device())
        };
        let mut rng = NoiseRng::new(3);
        let x_t = rng.randn::<Flex, 4>([1, 3, 8, 8], &Default::default());
        let options = SampleOptions {
            cond_fn: g.map(|g| {
                Box::new(move |x: Tensor<Flex, 4>, t: &[usize]| {
                    // The gradient sees the original timesteps, as the original's wrapped cond_fn.
                    assert!([0, 333, 666, 999].contains(&t[0]), "{t:?}");
                    x.zeros_like() + g
                }) as CondFn<'_, Flex>
            }),
            ..SampleOptions::default()
        };
        let out = sampler.sample(d, model, x_t, rng, options).run();
        out.mean().into_scalar()
    }

    #[test]
    fn a_guidance_gradient_pulls_both_samplers_along_it() {
        for sampler in [Sampler::Ddpm, Sampler::Ddim] {
            let plain = final_mean(sampler, None);
            let up = final_mean(sampler, Some(1.0));
            let down = final_mean(sampler, Some(-1.0));
            assert!(
                up > plain + 1e-3 && down < plain - 1e-3,
                "{sampler:?}: {down} {plain} {up}"
            );
        }
    }
}
