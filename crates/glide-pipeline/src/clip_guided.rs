//! CLIP-guided sampling (GLIDE §2.4 and §3.2): at every step the mean (DDPM) or the score (DDIM)
//! moves along `s · ∇ₓ logit_scale · ⟨z_i(x_t, t), z_text⟩`, the gradient of a noise-aware CLIP's
//! similarity between the noisy image and the caption. Combines with classifier-free guidance:
//! the UNet still runs `[cond; uncond]` when the request's guidance scale is not 1.
//!
//! The image tower runs on an autodiff backend `A` whose inner backend is the pipeline's; the
//! UNet stays in inference.

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use glide_diffusion::sampling::{CondFn, ModelFn, Steps};
use glide_model::clip::{NoisedClip, clip_cond_grad};
use glide_model::weights::StateDict;
use glide_tokenizer::ClipTokenizer;

use crate::{GenerateRequest, PipelineError, Text2Im};

/// A noised CLIP from its weights (one file, or the two `glide convert` writes for the released
/// towers) for a diffusion model whose `vocab` metadata is `model_vocab`. A CLIP trained by
/// `glide train-clip` reads the token ids of the model it was trained for and names their
/// vocabulary; one that names another is refused ([`PipelineError::ClipVocab`]).
///
/// Its parameters are frozen (`no_grad`): guidance differentiates with respect to the image
/// only. With trainable parameters every scoring or text forward on the autodiff backend leaves
/// a graph that is never consumed, and burn's graph cleaner visits every graph at each backward,
/// so each guided step gets slower the longer a process runs.
pub fn load_noised_clip<A: burn::tensor::backend::Backend>(
    states: &[StateDict],
    model_vocab: Option<&str>,
    device: &A::Device,
) -> Result<NoisedClip<A>, PipelineError> {
    for state in states {
        if let Some(vocab) = state.metadata.get("vocab")
            && Some(vocab.as_str()) != model_vocab
        {
            return Err(PipelineError::ClipVocab);
        }
    }
    Ok(NoisedClip::from_states(states, device)?.no_grad())
}

impl<B: burn::tensor::backend::Backend> Text2Im<B> {
    /// The caption's normalised CLIP text embedding, repeated `n` times (`[n, n_embd]`). A tower
    /// with CLIP's vocabulary (49,408: the released noised CLIP) reads CLIP's BPE as GLIDE feeds
    /// it (`padded_tokens_and_len`: start and end tokens, zero padding, the length with both);
    /// any other reads this pipeline's tokens (GPT-2 BPE; the embedding rows of the model's
    /// pruned vocabulary, which `glide train-clip` trains with), cut to its context, at the last
    /// token.
    pub fn clip_text_embedding<A: AutodiffBackend<InnerBackend = B>>(
        &self,
        clip: &NoisedClip<A>,
        caption: &str,
        n: usize,
    ) -> Result<Tensor<B, 2>, PipelineError> {
        let ctx = clip.config.max_text_len;
        let (ids, len): (Vec<i64>, usize) = if clip.config.n_vocab == ClipTokenizer::N_VOCAB {
            let (ids, len) = ClipTokenizer::load()?.padded_tokens_and_len(caption, ctx);
            (ids.into_iter().map(i64::from).collect(), len)
        } else {
            let ids = self.tokenizer.encode_prefix(caption, ctx);
            let mut ids: Vec<i64> = self
                .tokenizer
                .to_rows(&ids)
                .into_iter()
                .map(i64::from)
                .collect();
            let len = ids.len().max(1);
            ids.resize(ctx, 0);
            (ids, len)
        };
        let device = self.device();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, ctx]), device);
        let lens = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![len as i64], [1]), device);
        Ok(clip
            .text_embeddings(Tensor::from_inner(tokens), Tensor::from_inner(lens))
            .inner()
            .repeat_dim(0, n))
    }

    /// [`Text2Im::generate`] with CLIP guidance of scale `clip_scale` (the paper's s for CLIP).
    pub fn generate_clip_guided<'m, A: AutodiffBackend<InnerBackend = B>>(
        &'m self,
        req: &GenerateRequest,
        clip: &'m NoisedClip<A>,
        clip_scale: f64,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        self.validate(req)?;
        if clip.config.image_size != self.config.image_size {
            return Err(PipelineError::ClipSize {
                clip: clip.config.image_size,
                model: self.config.image_size,
            });
        }
        if !clip_scale.is_finite() || clip_scale < 0.0 {
            return Err(PipelineError::Guidance(clip_scale));
        }
        let b = req.batch_size;
        let z_t = self.clip_text_embedding(clip, &req.prompt, b)?;
        let logit_scale = clip.config.logit_scale;
        let cond_fn: CondFn<'m, B> = Box::new(move |x: Tensor<B, 4>, t: &[usize]| {
            clip_cond_grad(&clip.image, logit_scale, z_t.clone(), x, t, clip_scale).0
        });
        self.sample_text(self.encode_prompt(req), b, req, None, Some(cond_fn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use glide_model::GlideConfig;
    use glide_model::clip::ClipConfig;
    use glide_model::weights::{StateDict, fixture_style_init};

    type A = Autodiff<Flex>;

    /// The reference noised CLIP (16 px) from the shared fixtures.
    fn clip() -> NoisedClip<A> {
        let bytes = glide_model::check::reference_fixture("noised_clip_tiny.safetensors");
        let state = StateDict::from_safetensors(&bytes).unwrap();
        let config: ClipConfig = serde_json::from_str(&state.metadata["config"]).unwrap();
        NoisedClip::from_state(config, &state, &Default::default()).unwrap()
    }

    /// A tower with CLIP's vocabulary reads CLIP's BPE with GLIDE's start/end tokens and length
    /// (the released noised CLIP's case); the tiny fixture's vocabulary reads GPT-2 tokens.
    #[test]
    fn a_clip_vocabulary_tower_reads_clip_bpe_with_start_and_end_tokens() {
        let device = Default::default();
        let mut config: ClipConfig = clip().config;
        config.n_vocab = ClipTokenizer::N_VOCAB;
        config.max_text_len = 8;
        let tower = NoisedClip::<A> {
            text: config.text_encoder(&device),
            image: config.image_encoder(&device),
            config,
        };
        let pipe = Text2Im::new(
            GlideConfig::tiny().init::<Flex>(&device),
            GlideConfig::tiny(),
            device,
        );
        let got = pipe.clip_text_embedding(&tower, "A Red Apple", 1).unwrap();
        // <|startoftext|> a red apple <|endoftext|>, zeros; length 5 (scripts/clip-tokenizer-cases.py).
        let ids = vec![49406i64, 320, 736, 3055, 49407, 0, 0, 0];
        let tokens = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [1, 8]), &device);
        let lens = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![5i64], [1]), &device);
        let want = tower
            .text_embeddings(Tensor::from_inner(tokens), Tensor::from_inner(lens))
            .inner();
        got.into_data().assert_eq(&want.into_data(), true);
    }

    /// A loaded CLIP is frozen: its forward passes on an autodiff backend are not tracked (with
    /// trainable parameters each left a graph that slowed every later backward), while the
    /// guidance gradient with respect to the image is still there.
    #[test]
    fn a_loaded_clip_is_frozen_and_still_gives_the_image_gradient() {
        let bytes = glide_model::check::reference_fixture("noised_clip_tiny.safetensors");
        let state = StateDict::from_safetensors(&bytes).unwrap();
        let device = Default::default();
        let trainable =
            NoisedClip::<A>::from_states(std::slice::from_ref(&state), &device).unwrap();
        let clip = load_noised_clip::<A>(&[state], None, &device).unwrap();
        let size = clip.config.image_size;
        let x = Tensor::<Flex, 4>::ones([1, 3, size, size], &device);
        struct Trainable(usize, usize);
        impl burn::module::ModuleVisitor<A> for Trainable {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<A, D>>) {
                self.0 += usize::from(param.val().is_require_grad());
                self.1 += 1;
            }
        }
        let trainable_params = |c: &NoisedClip<A>| {
            let mut v = Trainable(0, 0);
            c.visit(&mut v);
            (v.0, v.1)
        };
        let (n, all) = trainable_params(&trainable);
        assert!(
            n == all && all > 0,
            "{n} of {all} parameters trainable after from_states"
        );
        let (n, all) = trainable_params(&clip);
        assert_eq!(
            n, 0,
            "{n} of {all} parameters of the loaded CLIP are trainable"
        );
        let z_t = Tensor::<Flex, 2>::ones([1, clip.config.n_embd], &device);
        let (grad, _) = clip_cond_grad(&clip.image, clip.config.logit_scale, z_t, x, &[10], 1.0);
        assert!(
            grad.abs().sum().into_scalar() > 0.0,
            "no gradient for the image"
        );
    }

    #[test]
    fn clip_guidance_raises_the_clip_similarity_of_the_sample() {
        let config = GlideConfig::tiny()
            .with_image_size(16)
            .with_channel_mult(vec![1, 2]);
        let device = Default::default();
        let model = fixture_style_init(config.init::<Flex>(&device), 5, false);
        let pipe = Text2Im::new(model, config, device);
        let clip = clip();
        let req = GenerateRequest {
            prompt: "a red apple".into(),
            steps: 6,
            batch_size: 2,
            guidance_scale: 1.0,
            ..Default::default()
        };
        // CLIP's similarity of the final samples at t = 0, for guidance scales 0 and 30.
        let similarity = |scale: f64| {
            let x = pipe.generate_clip_guided(&req, &clip, scale).unwrap().run();
            let z_t = pipe.clip_text_embedding(&clip, &req.prompt, 2).unwrap();
            let z_i = clip
                .image_embeddings(Tensor::from_inner(x), &[0, 0])
                .inner();
            (z_t * z_i).sum().into_scalar()
        };
        let (plain, guided) = (similarity(0.0), similarity(30.0));
        eprintln!("CLIP similarity of the samples: {plain} unguided, {guided} guided");
        assert!(guided > plain + 0.05, "similarity {plain} → {guided}");
        let small = Text2Im::new(
            fixture_style_init(
                GlideConfig::tiny().init::<Flex>(&Default::default()),
                5,
                false,
            ),
            GlideConfig::tiny(),
            Default::default(),
        );
        let err = small.generate_clip_guided(&req, &clip, 3.0).err().unwrap();
        assert!(
            matches!(
                err,
                PipelineError::ClipSize {
                    clip: 16,
                    model: 32
                }
            ),
            "{err}"
        );
    }
}
