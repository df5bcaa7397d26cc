//! GLIDE's cascade as the original notebook runs it: a 64 px base sample with classifier-free
//! guidance, then the text-conditioned upsampler to 256 px.
//!
//! The upsampler sees the caption (no guidance), the base sample quantised to 8 bits
//! (`((x + 1)·127.5).round() / 127.5 − 1`, as the notebook passes `low_res`), and starts from
//! x_T = 0.997 · N(0, I) (the notebook's `upsample_temp`); it samples with DDPM on the `fast27`
//! respacing. Each stage is a [`Steps`] iterator, so the CLI and the web worker can report
//! progress per stage.

use burn::tensor::{Tensor, backend::Backend};
use glide_diffusion::NoiseRng;
use glide_diffusion::sampling::{ModelFn, SampleOptions, Sampler, Steps};
use glide_model::ImageCond;

use crate::{GenerateRequest, PipelineError, Text2Im};

/// How the upsampler stage samples; the defaults are the original notebook's.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsampleOptions {
    /// The upsampler's respacing ("fast27").
    pub respacing: String,
    /// x_T = temperature · N(0, I) (0.997).
    pub temperature: f64,
    pub sampler: Sampler,
}

impl Default for UpsampleOptions {
    fn default() -> Self {
        Self {
            respacing: "fast27".into(),
            temperature: 0.997,
            sampler: Sampler::Ddpm,
        }
    }
}

impl UpsampleOptions {
    /// The upsampler stage's request for a batch of `b` from the base stage's `req`: unguided,
    /// this respacing and sampler, seeded with `req.seed + 1` so the stages draw independent noise.
    pub(crate) fn request(&self, req: &GenerateRequest, b: usize) -> GenerateRequest {
        GenerateRequest {
            guidance_scale: 1.0,
            respacing: Some(self.respacing.clone()),
            sampler: self.sampler,
            seed: req.seed.wrapping_add(1),
            batch_size: b,
            ..req.clone()
        }
    }
}

/// The base model and its upsampler.
pub struct Cascade<B: Backend> {
    pub base: Text2Im<B>,
    pub upsampler: Text2Im<B>,
}

/// `low_res` as the notebook hands it to the upsampler: rounded to the 8-bit levels of a PNG.
pub fn quantize_8bit<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 127.5 - 1.0
}

impl<B: Backend> Cascade<B> {
    /// Pairs a text-to-image model with a super-resolution model whose input is its output size.
    pub fn new(base: Text2Im<B>, upsampler: Text2Im<B>) -> Result<Self, PipelineError> {
        if base.config.inpaint || base.config.super_res {
            return Err(PipelineError::NotText2Im);
        }
        if !upsampler.config.super_res || upsampler.config.inpaint {
            return Err(PipelineError::NotUpsampler);
        }
        if upsampler.config.image_size <= base.config.image_size {
            return Err(PipelineError::UpsamplerSize {
                base: base.config.image_size,
                up: upsampler.config.image_size,
            });
        }
        Ok(Self { base, upsampler })
    }

    /// Stage 1: the base model's guided sample for `req` (as [`Text2Im::generate`]).
    pub fn base_steps<'m>(
        &'m self,
        req: &GenerateRequest,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        self.base.generate(req)
    }

    /// Stage 2: the upsampler's chain from `low_res` (the base sample, `[B, 3, h, w]` in [-1, 1])
    /// for `req.prompt`, seeded with `req.seed + 1` so the stages draw independent noise.
    pub fn upsample_steps<'m>(
        &'m self,
        low_res: Tensor<B, 4>,
        req: &GenerateRequest,
        options: &UpsampleOptions,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        self.upsampler.upsample(low_res, req, options)
    }

    /// Both stages to the end: `(base sample, upsampled sample)`. `on_step(stage, step, total)`
    /// is called after every model evaluation (stage 0 = base, 1 = upsampler).
    pub fn run(
        &self,
        req: &GenerateRequest,
        options: &UpsampleOptions,
        mut on_step: impl FnMut(usize, usize, usize),
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>), PipelineError> {
        let mut last = None;
        let mut steps = self.base_steps(req)?;
        let total = steps.total();
        for step in steps.by_ref() {
            on_step(0, step.step, total);
            last = Some(step.sample);
        }
        let low = last.ok_or(PipelineError::NoSteps)?;
        let mut steps = self.upsample_steps(low.clone(), req, options)?;
        let total = steps.total();
        let mut up = None;
        for step in steps.by_ref() {
            on_step(1, step.step, total);
            up = Some(step.sample);
        }
        Ok((low, up.ok_or(PipelineError::NoSteps)?))
    }
}

impl<B: Backend> Text2Im<B> {
    /// A super-resolution model's chain for `req.prompt` from `low_res` (see [`Cascade`]).
    pub fn upsample<'m>(
        &'m self,
        low_res: Tensor<B, 4>,
        req: &GenerateRequest,
        options: &UpsampleOptions,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        if !self.config.super_res || self.config.inpaint {
            return Err(PipelineError::NotUpsampler);
        }
        let b = low_res.dims()[0];
        let req = options.request(req, b);
        self.validate_sampling(&req)?;
        let diffusion = self.diffusion(&req)?;
        let text = self.encode_prompt(&req);
        let s = self.config.image_size;
        let cond = ImageCond::new(None, Some(quantize_8bit(low_res)), s);
        let mut rng = NoiseRng::new(req.seed);
        let x_t = rng.randn::<B, 4>([b, 3, s, s], self.device()) * options.temperature;
        Ok(self.sample_with(
            text,
            &req,
            cond,
            diffusion,
            x_t,
            rng,
            SampleOptions::default(),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::backend::Flex;
    use glide_model::GlideConfig;
    use glide_model::weights::fixture_style_init;

    /// A pipeline with the fixtures' style of random weights.
    pub(crate) fn model(config: GlideConfig, seed: u64) -> Text2Im<Flex> {
        let device = Default::default();
        let m = fixture_style_init(config.init::<Flex>(&device), seed, false);
        Text2Im::new(m, config, device)
    }

    fn cascade() -> Cascade<Flex> {
        let tiny = GlideConfig::tiny()
            .with_image_size(16)
            .with_channel_mult(vec![1, 2]);
        let up = tiny
            .clone()
            .with_image_size(32)
            .with_noise_schedule("linear".into())
            .with_super_res(true);
        Cascade::new(model(tiny, 1), model(up, 2)).unwrap()
    }

    fn req() -> GenerateRequest {
        GenerateRequest {
            prompt: "a red apple".into(),
            steps: 3,
            batch_size: 2,
            ..Default::default()
        }
    }

    #[test]
    fn both_stages_run_at_their_sizes_and_repeat_for_a_seed() {
        let c = cascade();
        let opts = UpsampleOptions {
            respacing: "4".into(),
            ..Default::default()
        };
        let mut seen = Vec::new();
        let (low, up) = c
            .run(&req(), &opts, |stage, step, total| {
                seen.push((stage, step, total))
            })
            .unwrap();
        assert_eq!(low.dims(), [2, 3, 16, 16]);
        assert_eq!(up.dims(), [2, 3, 32, 32]);
        assert_eq!(seen.first(), Some(&(0, 1, 3)));
        assert_eq!(seen.last(), Some(&(1, 4, 4)));
        assert_eq!(seen.len(), 7);
        let (low2, up2) = c.run(&req(), &opts, |_, _, _| {}).unwrap();
        low.into_data().assert_eq(&low2.into_data(), true);
        up.clone().into_data().assert_eq(&up2.into_data(), true);
        // The upsampler's output depends on the base sample it is given.
        let other = c
            .upsample_steps(
                Tensor::zeros([2, 3, 16, 16], &Default::default()),
                &req(),
                &opts,
            )
            .unwrap()
            .run();
        let diff = (other - up).abs().max().into_scalar();
        assert!(diff > 1e-3, "the low-res input changed nothing ({diff})");
    }

    #[test]
    fn the_low_res_input_is_rounded_to_8_bit_levels_and_the_start_scaled() {
        let x =
            Tensor::<Flex, 4>::from_floats([[[[-1.2, -0.3, 0.1234, 0.999]]]], &Default::default());
        let q: Vec<f32> = quantize_8bit(x).into_data().to_vec().unwrap();
        for (v, want) in q.iter().zip([0.0f32, 89.0, 143.0, 255.0]) {
            assert!(
                ((v + 1.0) * 127.5 - want).abs() < 1e-3,
                "{v} is not level {want}"
            );
        }
        // x_T of the upsampler is temperature · N(0, I): the first step's input differs by 0.997.
        let c = cascade();
        let low = Tensor::zeros([1, 3, 16, 16], &Default::default());
        let start = |temperature| {
            let opts = UpsampleOptions {
                respacing: "2".into(),
                temperature,
                ..Default::default()
            };
            let r = GenerateRequest {
                batch_size: 1,
                ..req()
            };
            let steps = c.upsample_steps(low.clone(), &r, &opts).unwrap();
            steps.current().clone()
        };
        let (a, b) = (start(1.0), start(0.997));
        let ratio = (b.abs().sum() / a.abs().sum()).into_scalar();
        assert!((ratio - 0.997).abs() < 1e-5, "{ratio}");
    }

    #[test]
    fn wrong_pairs_are_refused() {
        let tiny = GlideConfig::tiny();
        let err = Cascade::new(model(tiny.clone(), 1), model(tiny.clone(), 2))
            .err()
            .unwrap();
        assert!(matches!(err, PipelineError::NotUpsampler), "{err}");
        let up = tiny.clone().with_super_res(true);
        let err = Cascade::new(model(up.clone(), 1), model(up, 2))
            .err()
            .unwrap();
        assert!(matches!(err, PipelineError::NotText2Im), "{err}");
        let small_up = tiny
            .clone()
            .with_image_size(16)
            .with_channel_mult(vec![1, 2])
            .with_super_res(true);
        let err = Cascade::new(model(tiny, 1), model(small_up, 2))
            .err()
            .unwrap();
        assert!(matches!(err, PipelineError::UpsamplerSize { .. }), "{err}");
    }
}
