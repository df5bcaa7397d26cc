//! GLIDE's cascaded inpainting as the original notebook runs it: the base inpainting model fills
//! the mask at 64 px, then the upsampling inpainting model fills it at 256 px from that sample.
//!
//! The upsampling inpainting model (10 input channels: x_t, the masked picture, the mask, the
//! bilinearly upsampled base sample) sees the picture and the mask at its own size; like the base
//! stage, the notebook's `denoised_fn` overwrites the known region of the predicted x₀ at every
//! step, and the known region of the result is the input, pasted exactly after the last step.
//! Everything else is the text-to-image cascade's upsampler stage ([`crate::cascade`]): the caption
//! without guidance, the base sample rounded to 8 bits, x_T = 0.997 · N(0, I), `fast27`, DDPM.

use burn::tensor::{Tensor, backend::Backend};
use glide_diffusion::NoiseRng;
use glide_diffusion::sampling::{KnownRegion, ModelFn, SampleOptions, Steps};
use glide_model::ImageCond;

use crate::cascade::quantize_8bit;
use crate::edit::keep_known;
use crate::mask::rgb8_to_chw;
use crate::{
    Cascade, EditInput, EditRequest, GenerateRequest, PipelineError, Text2Im, UpsampleOptions,
    UserMask,
};

/// The two stages' inputs from the picture at the upsampler's side `high` (RGB bytes) and the
/// painted mask: the base stage sees the picture box-averaged down to `low` (an exact divisor of
/// `high`; GLIDE's is 64 of 256), each stage the mask at its own size. The CLI and the web worker
/// both build them here, so they feed the models the same numbers.
pub fn cascade_inputs(
    rgb: &[u8],
    mask: Option<&UserMask>,
    low: usize,
    high: usize,
) -> Result<(EditInput, EditInput), PipelineError> {
    if rgb.len() != 3 * high * high {
        return Err(PipelineError::EditSize(high));
    }
    if low == 0 || !high.is_multiple_of(low) {
        return Err(PipelineError::UpsamplerSize {
            base: low,
            up: high,
        });
    }
    let f = high / low;
    let n = (f * f) as u32;
    let mut small = vec![0u8; 3 * low * low];
    for y in 0..low {
        for x in 0..low {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..f {
                    for dx in 0..f {
                        sum += u32::from(rgb[((y * f + dy) * high + x * f + dx) * 3 + c]);
                    }
                }
                small[(y * low + x) * 3 + c] = ((sum + n / 2) / n) as u8;
            }
        }
    }
    let at = |pixels: &[u8], s: usize| EditInput {
        image: rgb8_to_chw(pixels, s, s),
        keep: mask.map(|m| m.keep_at(s)),
    };
    Ok((at(&small, low), at(rgb, high)))
}

impl<B: Backend> Cascade<B> {
    /// Pairs a base inpainting model with an upsampling inpainting model whose input is its output
    /// size (`base-inpaint` + `upsample-inpaint`).
    pub fn new_inpaint(base: Text2Im<B>, upsampler: Text2Im<B>) -> Result<Self, PipelineError> {
        if !base.config.inpaint || base.config.super_res {
            return Err(PipelineError::NotInpaintModel);
        }
        if !(upsampler.config.super_res && upsampler.config.inpaint) {
            return Err(PipelineError::NotUpsampleInpaint);
        }
        if upsampler.config.image_size <= base.config.image_size {
            return Err(PipelineError::UpsamplerSize {
                base: base.config.image_size,
                up: upsampler.config.image_size,
            });
        }
        Ok(Self { base, upsampler })
    }

    /// Both models inpaint: the cascade edits pictures (built by [`Cascade::new_inpaint`]).
    pub fn edits(&self) -> bool {
        self.base.config.inpaint
    }

    /// Stage 1: the base inpainting model's edit of `low` (the picture and mask at its size).
    pub fn edit_steps<'m>(
        &'m self,
        req: &EditRequest,
        low: &EditInput,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        if !self.edits() {
            return Err(PipelineError::NotInpaintModel);
        }
        self.base.edit(req, low)
    }

    /// Stage 2: the upsampling inpainting model's chain from `low_res` (the base stage's sample)
    /// with `high` (the picture and mask at its size), seeded with `req.seed + 1`.
    pub fn upsample_edit_steps<'m>(
        &'m self,
        low_res: Tensor<B, 4>,
        req: &EditRequest,
        high: &EditInput,
        options: &UpsampleOptions,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        self.upsampler
            .upsample_edit(low_res, &req.generate, high, options)
    }
}

impl<B: Backend> Text2Im<B> {
    /// An upsampling inpainting model's chain for `req.prompt` from `low_res`, keeping the known
    /// region of `input` (see the module's head). Without a mask everything is upsampled anew.
    pub fn upsample_edit<'m>(
        &'m self,
        low_res: Tensor<B, 4>,
        req: &GenerateRequest,
        input: &EditInput,
        options: &UpsampleOptions,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        if !(self.config.super_res && self.config.inpaint) {
            return Err(PipelineError::NotUpsampleInpaint);
        }
        let s = self.config.image_size;
        if input.image.len() != 3 * s * s || input.keep.as_ref().is_some_and(|k| k.len() != s * s) {
            return Err(PipelineError::EditSize(s));
        }
        let b = low_res.dims()[0];
        let req = options.request(req, b);
        self.validate_sampling(&req)?;
        let d = self.device();
        let (image, keep) = input.tensors::<B>(b, s, d);
        let mask = keep
            .clone()
            .unwrap_or_else(|| Tensor::zeros([b, 1, s, s], d));
        let cond = ImageCond::new(Some((image.clone(), mask)), Some(quantize_8bit(low_res)), s);
        let denoised_fn = keep.clone().map(|m| keep_known(m, image.clone()));
        let known = keep.map(|mask| KnownRegion {
            image,
            mask,
            replace_noisy: false,
        });
        let diffusion = self.diffusion(&req)?;
        let text = self.encode_prompt(&req);
        let mut rng = NoiseRng::new(req.seed);
        let x_t = rng.randn::<B, 4>([b, 3, s, s], d) * options.temperature;
        let options = SampleOptions {
            denoised_fn,
            known,
            ..SampleOptions::default()
        };
        Ok(self.sample_with(text, &req, cond, diffusion, x_t, rng, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::tests::model;
    use glide_model::GlideConfig;

    fn configs() -> (GlideConfig, GlideConfig) {
        let base = GlideConfig::tiny()
            .with_image_size(16)
            .with_channel_mult(vec![1, 2])
            .with_inpaint(true);
        let up = base
            .clone()
            .with_image_size(32)
            .with_noise_schedule("linear".into())
            .with_super_res(true);
        (base, up)
    }

    /// A picture at side `s` and a keep mask: the left half kept.
    fn input(s: usize) -> EditInput {
        let image = (0..3 * s * s)
            .map(|i| ((i % 17) as f32 / 8.0) - 1.0)
            .collect();
        let keep = (0..s * s)
            .map(|i| f32::from(u8::from(i % s < s / 2)))
            .collect();
        EditInput {
            image,
            keep: Some(keep),
        }
    }

    #[test]
    fn both_stages_keep_the_known_region_and_the_upsampler_reads_the_base_sample() {
        let (base, up) = configs();
        let c = Cascade::new_inpaint(model(base, 1), model(up, 2)).unwrap();
        let req = EditRequest {
            generate: GenerateRequest {
                prompt: "a red apple".into(),
                steps: 3,
                batch_size: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let opts = UpsampleOptions {
            respacing: "3".into(),
            ..Default::default()
        };
        let (low_in, high_in) = (input(16), input(32));
        let low = c.edit_steps(&req, &low_in).unwrap().run();
        assert_eq!(low.dims(), [2, 3, 16, 16]);
        let up = c
            .upsample_edit_steps(low.clone(), &req, &high_in, &opts)
            .unwrap()
            .run();
        assert_eq!(up.dims(), [2, 3, 32, 32]);
        let got: Vec<f32> = up.clone().into_data().to_vec().unwrap();
        let keep = high_in.keep.as_ref().unwrap();
        for img in 0..2 {
            for c in 0..3 {
                for p in 0..32 * 32 {
                    let v = got[(img * 3 + c) * 32 * 32 + p];
                    if keep[p] == 1.0 {
                        assert_eq!(v, high_in.image[c * 32 * 32 + p], "kept pixel {p} changed");
                    }
                }
            }
        }
        // The regenerated half depends on the base sample.
        let other = c
            .upsample_edit_steps(
                Tensor::zeros([2, 3, 16, 16], &Default::default()),
                &req,
                &high_in,
                &opts,
            )
            .unwrap()
            .run();
        let diff = (other - up).abs().max().into_scalar();
        assert!(diff > 1e-3, "the low-res input changed nothing ({diff})");
    }

    #[test]
    fn the_base_stage_sees_the_box_average_and_each_stage_its_own_mask() {
        // 4×4 → 2×2: each low pixel is the rounded mean of its 2×2 block.
        let rgb: Vec<u8> = (0..48).map(|i| (i * 5) as u8).collect();
        let mut mask = UserMask::filled(4, 4, false);
        mask.regenerate[0] = true;
        let (low, high) = cascade_inputs(&rgb, Some(&mask), 2, 4).unwrap();
        let mean = |c: usize| {
            let v = [0, 1, 4, 5].map(|p| u32::from(rgb[p * 3 + c]));
            ((v.iter().sum::<u32>() + 2) / 4) as f32 / 127.5 - 1.0
        };
        for c in 0..3 {
            assert_eq!(low.image[c * 4], mean(c));
        }
        assert_eq!(high.image, rgb8_to_chw(&rgb, 4, 4));
        assert_eq!(low.keep.unwrap(), mask.keep_at(2));
        assert_eq!(high.keep.unwrap(), mask.keep_at(4));
        assert!(matches!(
            cascade_inputs(&rgb, None, 3, 4),
            Err(PipelineError::UpsamplerSize { .. })
        ));
        assert!(matches!(
            cascade_inputs(&rgb[..12], None, 2, 4),
            Err(PipelineError::EditSize(4))
        ));
    }

    #[test]
    fn wrong_pairs_and_sizes_are_refused() {
        let (base, up) = configs();
        let plain_up = up.clone().with_inpaint(false);
        let err = Cascade::new_inpaint(model(base.clone(), 1), model(plain_up, 2))
            .err()
            .unwrap();
        assert!(matches!(err, PipelineError::NotUpsampleInpaint), "{err}");
        let err = Cascade::new_inpaint(
            model(base.clone().with_inpaint(false), 1),
            model(up.clone(), 2),
        )
        .err()
        .unwrap();
        assert!(matches!(err, PipelineError::NotInpaintModel), "{err}");
        let c = Cascade::new_inpaint(model(base, 1), model(up, 2)).unwrap();
        let low = Tensor::zeros([1, 3, 16, 16], &Default::default());
        let err = c
            .upsample_edit_steps(
                low,
                &EditRequest::default(),
                &input(16),
                &UpsampleOptions::default(),
            )
            .err()
            .unwrap();
        assert!(matches!(err, PipelineError::EditSize(32)), "{err}");
    }
}
