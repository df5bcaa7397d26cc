//! Editing: inpainting (GLIDE §3.3) and image-to-image (SDEdit, Meng et al. 2021, which the GLIDE
//! paper uses for sketch edits), for the CLI and the web worker alike.
//!
//! * An inpainting model (7 input channels) sees the masked image and the mask, and the original
//!   notebook's `denoised_fn` overwrites the known region of the predicted x₀ at every step.
//! * A base model uses the paper's baseline: after every step the known region of x_t is replaced
//!   by `q_sample(image, t)`.
//!
//! Either way the known region of the result is the input, pasted exactly after the last step.
//! With `strength` < 1 sampling starts from the image noised part-way down the chain (SDEdit).

use burn::tensor::{Tensor, TensorData, backend::Backend};
use glide_diffusion::NoiseRng;
use glide_diffusion::sampling::{DenoisedFn, KnownRegion, ModelFn, SampleOptions, Steps};
use glide_model::ImageCond;
use serde::{Deserialize, Serialize};

use crate::{GenerateRequest, PipelineError, Text2Im};

/// How the known region is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EditMethod {
    /// The inpainting model when the weights are one, else the replacement trick.
    #[default]
    Auto,
    /// An inpainting model (7 input channels) with the notebook's `denoised_fn`.
    Model,
    /// Replace the known region of x_t by `q_sample(image, t)` after every step (any model).
    Replace,
}

impl std::str::FromStr for EditMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "model" | "inpaint" => Ok(Self::Model),
            "replace" => Ok(Self::Replace),
            _ => Err(format!(
                "unknown edit method {s:?}: use auto, model or replace"
            )),
        }
    }
}

/// An edit: the generation settings (prompt, guidance, steps, sampler, seed, batch) plus how much
/// of the picture to redo. The same struct travels from the web page to its worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditRequest {
    #[serde(flatten)]
    pub generate: GenerateRequest,
    /// SDEdit's strength in (0, 1]: the fraction of the chain to run, starting from the image
    /// noised to that level. 1 starts from pure noise (plain inpainting).
    #[serde(default = "one")]
    pub strength: f64,
    #[serde(default)]
    pub method: EditMethod,
}

fn one() -> f64 {
    1.0
}

impl Default for EditRequest {
    fn default() -> Self {
        Self {
            generate: GenerateRequest {
                // GLIDE used s = 5 for its editing figures.
                guidance_scale: 5.0,
                ..GenerateRequest::default()
            },
            strength: 1.0,
            method: EditMethod::Auto,
        }
    }
}

/// The picture to edit at the model's size: `[3, S, S]` in [-1, 1], and optionally the model's keep
/// mask `[S, S]` (1 = keep, from [`crate::mask::UserMask::keep_at`]). No mask = change everything
/// (image-to-image).
#[derive(Debug, Clone, PartialEq)]
pub struct EditInput {
    pub image: Vec<f32>,
    pub keep: Option<Vec<f32>>,
}

impl EditInput {
    /// The picture `[b, 3, s, s]` and the keep mask `[b, 1, s, s]`, repeated over a batch of `b`.
    pub(crate) fn tensors<B: Backend>(
        &self,
        b: usize,
        s: usize,
        d: &B::Device,
    ) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
        let image = Tensor::<B, 4>::from_data(TensorData::new(self.image.clone(), [1, 3, s, s]), d)
            .repeat_dim(0, b);
        let keep = self.keep.as_ref().map(|k| {
            Tensor::<B, 4>::from_data(TensorData::new(k.clone(), [1, 1, s, s]), d).repeat_dim(0, b)
        });
        (image, keep)
    }
}

/// The original notebook's `denoised_fn` for inpainting models: the predicted x₀ where the mask
/// regenerates, the picture where it keeps (`mask` 1 = keep).
pub(crate) fn keep_known<'m, B: Backend>(
    mask: Tensor<B, 4>,
    image: Tensor<B, 4>,
) -> DenoisedFn<'m, B> {
    Box::new(move |x0: Tensor<B, 4>| x0 * (mask.clone().neg() + 1.0) + image.clone() * mask.clone())
}

impl<B: Backend> Text2Im<B> {
    /// The method an edit runs with on these weights.
    pub fn edit_method(&self, method: EditMethod) -> Result<EditMethod, PipelineError> {
        match (method, self.config.inpaint) {
            (EditMethod::Auto, true) | (EditMethod::Model, true) => Ok(EditMethod::Model),
            (EditMethod::Auto, false) | (EditMethod::Replace, false) => Ok(EditMethod::Replace),
            (EditMethod::Model, false) => Err(PipelineError::NotInpaintModel),
            // An inpainting model cannot run without its extra channels.
            (EditMethod::Replace, true) => Err(PipelineError::InpaintModelNeedsModelMethod),
        }
    }

    /// Starts an edit. Each `next()` runs one (batched, guided) model evaluation; after the last,
    /// the sample equals `input.image` wherever `input.keep` is 1.
    pub fn edit<'m>(
        &'m self,
        req: &EditRequest,
        input: &EditInput,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        let g = &req.generate;
        if self.config.super_res {
            return Err(PipelineError::NotText2Im);
        }
        self.validate_sampling(g)?;
        if !(req.strength > 0.0 && req.strength <= 1.0) {
            return Err(PipelineError::Strength(req.strength));
        }
        let s = self.config.image_size;
        if input.image.len() != 3 * s * s || input.keep.as_ref().is_some_and(|k| k.len() != s * s) {
            return Err(PipelineError::EditSize(s));
        }
        if let Some(keep) = &input.keep
            && keep.iter().all(|&k| k >= 0.5)
        {
            return Err(PipelineError::EmptyMask);
        }
        let method = self.edit_method(req.method)?;
        let b = g.batch_size;
        let d = self.device();
        let (image, keep) = input.tensors::<B>(b, s, d);

        let diffusion = self.diffusion(g)?;
        let n = diffusion.num_timesteps();
        // strength·n steps, the first at chain index ⌈strength·n⌉ − 1.
        let start_t = (req.strength < 1.0)
            .then(|| ((req.strength * n as f64).ceil() as usize).clamp(1, n) - 1);
        let mut rng = NoiseRng::new(g.seed);
        let noise = rng.randn::<B, 4>([b, 3, s, s], d);
        let x_t = match start_t {
            Some(t) => diffusion.q_sample(image.clone(), &vec![t; b], noise),
            None => noise,
        };

        let cond = if method == EditMethod::Model {
            // No mask: the model's "regenerate everything" input (all-zero mask).
            let m = keep
                .clone()
                .unwrap_or_else(|| Tensor::zeros([b, 1, s, s], d));
            ImageCond::new(Some((image.clone(), m)), None, s)
        } else {
            ImageCond::none()
        };
        let denoised_fn = match (&keep, method) {
            (Some(m), EditMethod::Model) => Some(keep_known(m.clone(), image.clone())),
            _ => None,
        };
        let known = keep.map(|mask| KnownRegion {
            image: image.clone(),
            mask,
            replace_noisy: method == EditMethod::Replace,
        });
        let options = SampleOptions {
            eta: g.eta,
            denoised_fn,
            known,
            start_t,
            ..SampleOptions::default()
        };
        let text = self.encode_prompt(g);
        Ok(self.sample_with(text, g, cond, diffusion, x_t, rng, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use glide_diffusion::Sampler;
    use glide_model::GlideConfig;
    use glide_model::weights::fixture_style_init;

    fn pipe(inpaint: bool) -> Text2Im<Flex> {
        let d = Default::default();
        let cfg = GlideConfig::tiny()
            .with_image_size(16)
            .with_channel_mult(vec![1, 2])
            .with_inpaint(inpaint);
        let model = fixture_style_init(cfg.init::<Flex>(&d), 3, false);
        Text2Im::new(model, cfg, d)
    }

    fn input() -> EditInput {
        let image: Vec<f32> = (0..3 * 256)
            .map(|i| ((i % 17) as f32 / 8.0) - 1.0)
            .collect();
        // Regenerate the left half.
        let keep = (0..256)
            .map(|i| if i % 16 < 8 { 0.0 } else { 1.0 })
            .collect();
        EditInput {
            image,
            keep: Some(keep),
        }
    }

    fn req(strength: f64) -> EditRequest {
        EditRequest {
            generate: GenerateRequest {
                prompt: "a red apple".into(),
                steps: 4,
                seed: 3,
                sampler: Sampler::Ddim,
                guidance_scale: 5.0,
                ..Default::default()
            },
            strength,
            method: EditMethod::Auto,
        }
    }

    fn run(p: &Text2Im<Flex>, r: &EditRequest, i: &EditInput) -> Vec<f32> {
        p.edit(r, i).unwrap().run().into_data().to_vec().unwrap()
    }

    #[test]
    fn known_pixels_are_the_input_exactly_for_both_methods() {
        let i = input();
        for inpaint in [false, true] {
            let p = pipe(inpaint);
            for strength in [1.0, 0.5] {
                let out = run(&p, &req(strength), &i);
                let keep = i.keep.as_ref().unwrap();
                let mut changed = 0;
                for c in 0..3 {
                    for j in 0..256 {
                        let (a, b) = (out[c * 256 + j], i.image[c * 256 + j]);
                        if keep[j] == 1.0 {
                            assert_eq!(a, b, "kept pixel {j} changed (inpaint model: {inpaint})");
                        } else if (a - b).abs() > 1e-3 {
                            changed += 1;
                        }
                    }
                }
                assert!(changed > 100, "the masked area was not generated");
            }
        }
    }

    #[test]
    fn strength_runs_part_of_the_chain_and_stays_near_the_image() {
        let p = pipe(false);
        let i = EditInput {
            keep: None,
            ..input()
        };
        let steps: Vec<_> = p.edit(&req(0.5), &i).unwrap().map(|s| s.t).collect();
        assert_eq!(steps, [1, 0]);
        let dist = |s: f64| {
            let out = run(&p, &req(s), &i);
            out.iter()
                .zip(&i.image)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
        };
        assert!(
            dist(0.25) < dist(1.0),
            "a light edit moved further than a full one"
        );
    }

    #[test]
    fn bad_edits_are_errors() {
        let p = pipe(false);
        let i = input();
        assert!(matches!(
            p.edit(&req(0.0), &i).err(),
            Some(PipelineError::Strength(_))
        ));
        let all_keep = EditInput {
            keep: Some(vec![1.0; 256]),
            ..input()
        };
        assert!(matches!(
            p.edit(&req(1.0), &all_keep).err(),
            Some(PipelineError::EmptyMask)
        ));
        let small = EditInput {
            image: vec![0.0; 3 * 64],
            keep: None,
        };
        assert!(p.edit(&req(1.0), &small).is_err());
        let model = EditRequest {
            method: EditMethod::Model,
            ..req(1.0)
        };
        assert!(matches!(
            p.edit(&model, &i).err(),
            Some(PipelineError::NotInpaintModel)
        ));
        // Text-to-image refuses inpainting weights.
        assert!(pipe(true).generate(&req(1.0).generate).is_err());
    }
}
