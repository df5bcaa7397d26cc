//! The text-to-image pipeline.

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use glide_diffusion::guidance::classifier_free_guidance;
use glide_diffusion::sampling::{CondFn, ModelFn, SampleOptions, Sampler, Steps};
use glide_diffusion::{DiffusionError, GaussianDiffusion, ModelMeanType, NoiseRng, NoiseSchedule};
use glide_model::weights::{StateDict, WeightsError, config_from_metadata, load_state_dict};
use glide_model::{GlideConfig, ImageCond, Text2ImUNet, TextEmb};
use glide_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

/// What to generate. The same struct travels from the web page to its worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt: String,
    /// Replaces the empty caption in the unconditional branch.
    #[serde(default)]
    pub negative: String,
    /// GLIDE's guidance scale s: ε = ε(∅) + s·(ε(c) − ε(∅)); 1 = no guidance.
    pub guidance_scale: f64,
    /// Number of sampling steps: `space_timesteps(T, "steps")`.
    pub steps: usize,
    /// An original respacing string ("100", "fast27", "ddim25", "10,15,20"); overrides `steps`.
    #[serde(default)]
    pub respacing: Option<String>,
    pub sampler: Sampler,
    /// DDIM's η.
    #[serde(default)]
    pub eta: f64,
    pub seed: u64,
    pub batch_size: usize,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative: String::new(),
            guidance_scale: 3.0,
            steps: 50,
            respacing: None,
            sampler: Sampler::Ddpm,
            eta: 0.0,
            seed: 0,
            batch_size: 1,
        }
    }
}

impl GenerateRequest {
    /// The respacing string this request samples with.
    pub fn respacing(&self) -> String {
        self.respacing
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| self.steps.to_string())
    }

    /// Generation parameters as PNG text entries.
    pub fn png_text(&self, model: &str) -> Vec<(String, String)> {
        vec![
            ("prompt".into(), self.prompt.clone()),
            ("negative".into(), self.negative.clone()),
            ("seed".into(), self.seed.to_string()),
            ("steps".into(), self.respacing()),
            ("sampler".into(), self.sampler.name().into()),
            ("guidance".into(), self.guidance_scale.to_string()),
            ("model".into(), model.into()),
            ("software".into(), "glide-rs".into()),
        ]
    }
}

/// The guidance scales a distilled student is trained for (s = 1 + w, w ∈ [0, 8]).
pub const STUDENT_GUIDANCE: (f64, f64) = (1.0, 9.0);

/// Errors a user can cause, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Diffusion(#[from] DiffusionError),
    #[error("steps must be at least 1 (got 0)")]
    NoSteps,
    #[error(
        "one request makes 1 to 64 images (they are sampled as one batch, in memory), not {0}; ask \
         for fewer (--n), and run again with another seed for more"
    )]
    BatchSize(usize),
    #[error("the guidance scale must be a finite number ≥ 0 (got {0})")]
    Guidance(f64),
    #[error(
        "this is an inpainting or super-resolution model; text-to-image needs a base model \
         (inpainting comes with `glide inpaint`)"
    )]
    NotText2Im,
    #[error(
        "the --upsampler weights are not a super-resolution model; pass an upsampler such as \
         the converted upsample.pt"
    )]
    NotUpsampler,
    #[error(
        "the upsampler makes {up} px images from a {base} px base; pass an upsampler larger than \
         the base model"
    )]
    UpsamplerSize { base: usize, up: usize },
    #[error(
        "these weights are not an upsampling inpainting model; pass upsample-inpaint weights \
         (the converted upsample_inpaint.pt) as the upsampler of an inpainting cascade"
    )]
    NotUpsampleInpaint,
    #[error(
        "the CLIP model sees {clip} px images but the diffusion model makes {model} px; use a \
         noised CLIP trained at the model's size"
    )]
    ClipSize { clip: usize, model: usize },
    #[error(
        "this CLIP reads another vocabulary than the diffusion model; train it for this model \
         (`\"vocab_from\"`: the model's weights, in the `glide train-clip` config)"
    )]
    ClipVocab,
    #[error(
        "these weights are not an inpainting model; use the replacement method (--method replace) \
         or inpainting weights (www/models/inpaint.safetensors)"
    )]
    NotInpaintModel,
    #[error("an inpainting model needs its mask channels; use --method model (or auto)")]
    InpaintModelNeedsModelMethod,
    #[error("the strength must be in (0, 1] (got {0}); 1 redraws from pure noise")]
    Strength(f64),
    #[error("the image and mask to edit must be {0}×{0} (the model's size); resize them first")]
    EditSize(usize),
    #[error(
        "the mask marks nothing to regenerate: paint the area to fill in (white in a mask file)"
    )]
    EmptyMask,
    #[error(
        "this distilled model was trained for guidance scales 1 to 9 (got {0}); pick one in that range"
    )]
    StudentGuidance(f64),
    #[error(transparent)]
    Vocab(#[from] glide_tokenizer::TokenizerError),
    #[error(
        "the model's `vocab` metadata is not valid JSON ({0}); re-export it with `glide train`"
    )]
    VocabJson(String),
}

/// The tokenizer a weights file asks for: GPT-2 restricted to its `vocab` metadata when it carries
/// a pruned vocabulary, the full GPT-2 vocabulary otherwise.
pub fn tokenizer_for(state: &StateDict) -> Result<Tokenizer, PipelineError> {
    match state.metadata.get("vocab") {
        None => Ok(Tokenizer::gpt2()),
        Some(json) => {
            let vocab: glide_tokenizer::PrunedVocab =
                serde_json::from_str(json).map_err(|e| PipelineError::VocabJson(e.to_string()))?;
            Ok(Tokenizer::gpt2().with_pruned(&vocab)?)
        }
    }
}

/// A loaded text-to-image model with its tokenizer.
pub struct Text2Im<B: Backend> {
    pub model: Text2ImUNet<B>,
    pub config: GlideConfig,
    pub tokenizer: Tokenizer,
    device: B::Device,
}

impl<B: Backend> Text2Im<B> {
    pub fn new(model: Text2ImUNet<B>, config: GlideConfig, device: B::Device) -> Self {
        Self {
            model,
            config,
            tokenizer: Tokenizer::gpt2(),
            device,
        }
    }

    /// Loads a safetensors file whose metadata holds the GLIDE `options`; every key must fit.
    pub fn from_safetensors(bytes: &[u8], device: &B::Device) -> Result<Self, PipelineError> {
        Self::from_state_dict(StateDict::from_safetensors(bytes)?, device)
    }

    /// A pipeline from weights already read (one file, or the shards of a sharded model merged
    /// with [`StateDict::merge`]); the config and vocabulary come from their metadata. Given by
    /// value, the weights are consumed as they are applied (no second copy).
    pub fn from_state_dict<'a>(
        state: impl Into<std::borrow::Cow<'a, StateDict>>,
        device: &B::Device,
    ) -> Result<Self, PipelineError> {
        let state = state.into();
        let config = config_from_metadata(&state)?;
        let tokenizer = tokenizer_for(&state)?;
        let model = load_state_dict(config.init::<B>(device), state)?;
        Ok(Self::new(model, config, device.clone()).with_tokenizer(tokenizer))
    }

    /// Replaces the tokenizer (a model with a pruned vocabulary needs its own).
    pub fn with_tokenizer(mut self, tokenizer: Tokenizer) -> Self {
        self.tokenizer = tokenizer;
        self
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Whether these weights are a distilled student (guidance weight as an input).
    pub fn is_student(&self) -> bool {
        self.config.guidance_embed
    }

    /// UNet evaluations per image per step: 2 with classifier-free guidance (`[cond; uncond]`),
    /// 1 without it or for a student (guidance is an input).
    pub fn evaluations_per_step(&self, req: &GenerateRequest) -> usize {
        if self.is_guided(req) { 2 } else { 1 }
    }

    fn is_guided(&self, req: &GenerateRequest) -> bool {
        req.guidance_scale != 1.0 && !self.is_student()
    }

    /// The respaced chain a request samples on. A progressively distilled student uses its own
    /// step count on the nested grid (`glide_diffusion::distill`), a guidance-distilled one the
    /// request's count on that grid.
    pub fn diffusion(&self, req: &GenerateRequest) -> Result<GaussianDiffusion, PipelineError> {
        let schedule: NoiseSchedule = self.config.noise_schedule.parse()?;
        if self.is_student() {
            let steps = self.config.student_steps.unwrap_or(req.steps);
            return Ok(glide_diffusion::distill::student_diffusion(
                schedule,
                self.config.diffusion_steps,
                steps,
            )?
            .with_model_mean_type(self.model_mean_type()));
        }
        Ok(
            GaussianDiffusion::create(schedule, self.config.diffusion_steps, &req.respacing())?
                .with_model_mean_type(self.model_mean_type()),
        )
    }

    /// What the model's first output channels predict (ε, or v for students and v-trained bases).
    pub fn model_mean_type(&self) -> ModelMeanType {
        ModelMeanType::from_predict_v(self.config.predict_v)
    }

    /// Tokens and mask of several captions, `[N, text_ctx]`.
    pub fn tokenize(&self, captions: &[&str]) -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
        let ctx = self.config.text_ctx;
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for c in captions {
            let (t, m) = self.tokenizer.model_tokens_and_mask(c, ctx);
            ids.extend(t.into_iter().map(|x| x as i64));
            mask.extend(m);
        }
        let n = captions.len();
        (
            Tensor::from_data(TensorData::new(ids, [n, ctx]), &self.device),
            Tensor::from_data(TensorData::new(mask, [n, ctx]), &self.device),
        )
    }

    /// Starts sampling. Each `next()` runs one (batched, guided) model evaluation.
    ///
    /// The caption (and the negative prompt) is encoded once here. With guidance the model sees
    /// the batch `[cond (B); uncond (B)]` in one forward; at s = 1 only the conditional half runs.
    /// x_T and every step's noise come from `NoiseRng::new(seed)` on the CPU.
    pub fn generate<'m>(
        &'m self,
        req: &GenerateRequest,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        self.validate(req)?;
        let b = req.batch_size;
        let text = self.encode_prompt(req);
        self.sample_text(text, b, req, None, None)
    }

    /// The request's caption (and negative caption, when guided), encoded once and repeated to
    /// `[cond × B; uncond × B]`.
    pub(crate) fn encode_prompt(&self, req: &GenerateRequest) -> TextEmb<B> {
        let captions: Vec<&str> = if self.is_guided(req) {
            vec![&req.prompt, &req.negative]
        } else {
            vec![&req.prompt]
        };
        let (tokens, mask) = self.tokenize(&captions);
        self.model
            .encode_text(tokens, mask)
            .repeat_interleave(req.batch_size)
    }

    /// Like [`Self::generate`], but one image per prompt, all in one batch (`req.prompt` and
    /// `req.batch_size` are not used). Evaluations sample many captions this way.
    pub fn generate_each<'m>(
        &'m self,
        prompts: &[&str],
        req: &GenerateRequest,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        self.each_with(prompts, req, None)
    }

    /// [`Self::generate_each`] on a given chain instead of the request's respacing (the teacher's
    /// chains on the nested distillation grid, `glide_diffusion::distill::student_diffusion`).
    pub fn generate_each_on<'m>(
        &'m self,
        prompts: &[&str],
        req: &GenerateRequest,
        diffusion: GaussianDiffusion,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        self.each_with(prompts, req, Some(diffusion))
    }

    fn each_with<'m>(
        &'m self,
        prompts: &[&str],
        req: &GenerateRequest,
        diffusion: Option<GaussianDiffusion>,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        self.validate(&GenerateRequest {
            batch_size: prompts.len(),
            ..req.clone()
        })?;
        let b = prompts.len();
        let mut captions = prompts.to_vec();
        if self.is_guided(req) {
            captions.extend(std::iter::repeat_n(req.negative.as_str(), b));
        }
        let (tokens, mask) = self.tokenize(&captions);
        let text = self.model.encode_text(tokens, mask);
        self.sample_text(text, b, req, diffusion, None)
    }

    pub(crate) fn validate(&self, req: &GenerateRequest) -> Result<(), PipelineError> {
        if self.config.inpaint || self.config.super_res {
            return Err(PipelineError::NotText2Im);
        }
        self.validate_sampling(req)
    }

    /// Checks of a request that hold for every kind of sampling.
    pub(crate) fn validate_sampling(&self, req: &GenerateRequest) -> Result<(), PipelineError> {
        if req.respacing.is_none() && req.steps == 0 {
            return Err(PipelineError::NoSteps);
        }
        if !(1..=64).contains(&req.batch_size) {
            return Err(PipelineError::BatchSize(req.batch_size));
        }
        if !req.guidance_scale.is_finite() || req.guidance_scale < 0.0 {
            return Err(PipelineError::Guidance(req.guidance_scale));
        }
        if self.is_student()
            && !(STUDENT_GUIDANCE.0..=STUDENT_GUIDANCE.1).contains(&req.guidance_scale)
        {
            return Err(PipelineError::StudentGuidance(req.guidance_scale));
        }
        Ok(())
    }

    /// The sampling chain for `b` images given their encoded captions `[cond (b); uncond (b)]`
    /// (just `[cond (b)]` at s = 1), from x_T = `NoiseRng::new(seed)`, on `diffusion` (None: the
    /// request's chain), with an optional classifier (CLIP) guidance gradient.
    pub(crate) fn sample_text<'m>(
        &'m self,
        text: TextEmb<B>,
        b: usize,
        req: &GenerateRequest,
        diffusion: Option<GaussianDiffusion>,
        cond_fn: Option<CondFn<'m, B>>,
    ) -> Result<Steps<'m, B, impl ModelFn<B> + 'm>, PipelineError> {
        let diffusion = match diffusion {
            Some(d) => d,
            None => self.diffusion(req)?,
        };
        let s = self.config.image_size;
        let mut rng = NoiseRng::new(req.seed);
        let x_t = rng.randn::<B, 4>([b, 3, s, s], &self.device);
        let options = SampleOptions {
            eta: req.eta,
            cond_fn,
            ..SampleOptions::default()
        };
        Ok(self.sample_with(text, req, ImageCond::none(), diffusion, x_t, rng, options))
    }

    /// The guided model function (one batched forward of `[cond; uncond]`) on `diffusion`, from
    /// `x_t`. `cond` holds the extra input channels of one half of the batch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sample_with<'m, 'o: 'm>(
        &'m self,
        text: TextEmb<B>,
        req: &GenerateRequest,
        cond: ImageCond<B>,
        diffusion: GaussianDiffusion,
        x_t: Tensor<B, 4>,
        rng: NoiseRng,
        options: SampleOptions<'o, B>,
    ) -> Steps<'m, B, impl ModelFn<B> + use<'m, 'o, B>> {
        let guided = self.is_guided(req);
        let cond = if guided { cond.repeat(2) } else { cond };
        let scale = req.guidance_scale;
        let model = &self.model;
        let device = self.device.clone();
        let student = self.is_student();
        let mut options = options;
        // Any chain (the request's, a student grid) reads the model's output as its config says.
        let diffusion = diffusion.with_model_mean_type(self.model_mean_type());
        let mut sampler = req.sampler;
        if student {
            // One evaluation per step with w = s − 1 as an input; students sample with DDIM, η = 0.
            options.eta = 0.0;
            sampler = glide_diffusion::Sampler::Ddim;
        }
        // A student's guidance weight w = s − 1, one per image, made once for the whole chain.
        let w = student.then(|| {
            let w = vec![(scale - 1.0) as f32; x_t.dims()[0]];
            Tensor::<B, 1>::from_floats(w.as_slice(), &device)
        });
        let model_fn = move |x: Tensor<B, 4>, t: &[usize]| {
            if let Some(w) = &w {
                let ts: Vec<f32> = t.iter().map(|&v| v as f32).collect();
                let ts = Tensor::<B, 1>::from_floats(ts.as_slice(), &device);
                return model.forward_with_guidance_weight(x, ts, &text, &cond, Some(w.clone()));
            }
            let (x, ts) = if guided {
                (Tensor::cat(vec![x.clone(), x], 0), [t, t].concat())
            } else {
                (x, t.to_vec())
            };
            let ts: Vec<f32> = ts.iter().map(|&v| v as f32).collect();
            let ts = Tensor::<B, 1>::from_floats(ts.as_slice(), &device);
            let out = model.forward_with_text(x, ts, &text, &cond);
            if guided {
                classifier_free_guidance(out, scale, 3)
            } else {
                out
            }
        };
        sampler.sample(diffusion, model_fn, x_t, rng, options)
    }
}

#[cfg(test)]
mod tests;
