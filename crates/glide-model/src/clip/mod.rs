//! GLIDE's noised CLIP (`glide_text2im/clip`): a text tower and a noise-aware image tower whose
//! normalised embeddings' dot product guides sampling (GLIDE §2.4, CLIP guidance).
//!
//! Parameters keep the original names (`blocks.block_0.f_attn.f_q.w`, …), with `text.` / `image.`
//! in front when both towers are in one file (as in `noised_clip_tiny`); [`torch_to_burn`] maps
//! them to our module paths.

pub mod encoders;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};

pub use encoders::{ImageEncoder, TextEncoder};

use crate::weights::{LoadReport, StateDict, WeightsError, apply_named};

/// The noised CLIP's options, named as in glide-text2im's `clip/config.yaml`.
#[derive(Config, Debug, PartialEq)]
pub struct ClipConfig {
    #[config(default = 64)]
    pub image_size: usize,
    #[config(default = 4)]
    pub patch_size: usize,
    #[config(default = 65536)]
    pub n_vocab: usize,
    #[config(default = 77)]
    pub max_text_len: usize,
    /// Width of the joint embedding space.
    #[config(default = 512)]
    pub n_embd: usize,
    #[config(default = 64)]
    pub n_head_state_text: usize,
    #[config(default = 8)]
    pub n_head_text: usize,
    #[config(default = 12)]
    pub n_xf_blocks_text: usize,
    #[config(default = 64)]
    pub n_head_state_image: usize,
    #[config(default = 12)]
    pub n_head_image: usize,
    #[config(default = 12)]
    pub n_xf_blocks_image: usize,
    #[config(default = 1000)]
    pub n_timesteps: usize,
    /// exp of the learned temperature; the guidance objective is `logit_scale · ⟨z_t, z_i⟩`.
    #[config(default = 100.0)]
    pub logit_scale: f64,
}

impl ClipConfig {
    pub fn text_encoder<B: Backend>(&self, device: &B::Device) -> TextEncoder<B> {
        TextEncoder::new(
            (self.n_vocab, self.max_text_len, self.n_embd),
            (
                self.n_head_text,
                self.n_head_state_text,
                self.n_xf_blocks_text,
            ),
            device,
        )
    }

    pub fn image_encoder<B: Backend>(&self, device: &B::Device) -> ImageEncoder<B> {
        ImageEncoder::new(
            (
                self.image_size,
                self.patch_size,
                self.n_timesteps,
                self.n_embd,
            ),
            (
                self.n_head_image,
                self.n_head_state_image,
                self.n_xf_blocks_image,
            ),
            device,
        )
    }
}

/// Original key (without the tower prefix) → our module path.
pub fn torch_to_burn(key: &str) -> String {
    let mut k = key.strip_prefix("blocks.").unwrap_or(key).to_string();
    if let Some(rest) = k.strip_prefix("block_") {
        k = format!("blocks.{rest}");
    }
    match k.rsplit_once('.') {
        Some((base, "w")) => format!("{base}.weight"),
        Some((base, "b")) => format!("{base}.bias"),
        Some((base, "g")) => format!("{base}.weight"),
        _ => k,
    }
}

/// Our module path → original key (norm gains are `g`, other weights `w`, biases `b`).
pub fn burn_to_torch(path: &str) -> String {
    let k = match path.strip_prefix("blocks.") {
        Some(rest) => format!("blocks.block_{rest}"),
        None => format!("blocks.{path}"),
    };
    let norm = k.contains(".ln.") || k.ends_with(".ln");
    match k.rsplit_once('.') {
        Some((base, "weight")) if norm => format!("{base}.g"),
        Some((base, "weight")) => format!("{base}.w"),
        Some((base, "bias")) => format!("{base}.b"),
        _ => k,
    }
}

/// Applies one tower's parameters (original names, no prefix); every key must fit.
fn load_tower<B: Backend, M: burn::module::Module<B>>(
    tower: M,
    state: &StateDict,
) -> Result<M, WeightsError> {
    let (tower, report): (M, LoadReport) =
        apply_named(tower, state, &torch_to_burn, &burn_to_torch);
    if report.is_clean() {
        Ok(tower)
    } else {
        Err(WeightsError::Incompatible(report))
    }
}

/// `z / (‖z‖ + 1e-12)` over the last axis.
fn normalize<B: Backend>(z: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = z.clone().powf_scalar(2.0).sum_dim(1).sqrt() + 1e-12;
    z / norm
}

/// Both towers of a noised CLIP.
#[derive(Module, Debug)]
pub struct NoisedClip<B: Backend> {
    #[module(skip)]
    pub config: ClipConfig,
    pub text: TextEncoder<B>,
    pub image: ImageEncoder<B>,
}

/// A module path of [`NoisedClip`] (`text.…` / `image.…`) → the original key with its tower
/// prefix, as `noised_clip_tiny` and [`NoisedClip::from_state`] name them.
fn clip_path_to_torch(path: &str) -> String {
    match path.split_once('.') {
        Some((tower, rest)) => format!("{tower}.{}", burn_to_torch(rest)),
        None => path.to_string(),
    }
}

impl<B: Backend> NoisedClip<B> {
    /// Towers ready to train (burn's default initialisers draw from the backend's seeded RNG):
    /// token, position and timestep embeddings ~ N(0, 0.02²) (positions 0.01²), the patch
    /// projection ~ N(0, 1/fan_in), as CLIP initialises them.
    pub fn init(config: ClipConfig, device: &B::Device) -> Self {
        let mut text = config.text_encoder(device);
        let mut image = config.image_encoder(device);
        let emb = |p: &burn::module::Param<Tensor<B, 2>>, std| {
            let normal = Distribution::Normal(0.0, std);
            burn::module::Param::from_tensor(Tensor::random(p.val().dims(), normal, device))
        };
        text.input.w_voc = emb(&text.input.w_voc, 0.02);
        text.input.w_pos = emb(&text.input.w_pos, 0.01);
        image.input.w_pos = emb(&image.input.w_pos, 0.01);
        image.input.w_t = emb(&image.input.w_t, 0.02);
        let [n, c, p, _] = image.input.patch_proj.val().dims();
        let fan_in = (c * p * p) as f64;
        let normal = Distribution::Normal(0.0, fan_in.sqrt().recip());
        image.input.patch_proj =
            burn::module::Param::from_tensor(Tensor::random([n, c, p, p], normal, device));
        Self {
            text,
            image,
            config,
        }
    }

    /// Both towers under their original names (`text.*`, `image.*`) with the config as
    /// metadata: what [`Self::from_states`] reads back.
    pub fn state_dict(&self) -> StateDict {
        let mut state = StateDict::from_named(self, &clip_path_to_torch);
        state.metadata.insert(
            "config".into(),
            serde_json::to_string(&self.config).expect("a config serialises"),
        );
        state
    }

    /// From a state dict holding `text.*` and `image.*` (the original key names after the prefix).
    pub fn from_state(
        config: ClipConfig,
        state: &StateDict,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let text = config.text_encoder(device);
        let image = config.image_encoder(device);
        Self {
            config,
            text,
            image,
        }
        .with_state(state)
    }

    /// These towers with the parameters of `state` (`text.*`, `image.*`; original names), each
    /// keeping its parameter id (an EMA or optimiser matched to this model stays matched).
    pub fn with_state(self, state: &StateDict) -> Result<Self, WeightsError> {
        Ok(Self {
            text: load_tower(self.text, &state.strip_prefix("text."))?,
            image: load_tower(self.image, &state.strip_prefix("image."))?,
            config: self.config,
        })
    }

    /// From one file holding both towers (`text.*`, `image.*` and a `config` metadata entry, as
    /// `noised_clip_tiny`) or from the two files `glide convert` writes for `clip_text_enc.pt` and
    /// `clip_image_enc.pt` (each with its tower's `config` and `preset`).
    pub fn from_states(states: &[StateDict], device: &B::Device) -> Result<Self, WeightsError> {
        let mut config = serde_json::to_value(ClipConfig::new()).expect("a config serialises");
        let mut merged = StateDict::default();
        for state in states {
            let prefix = match state.metadata.get("preset").map(String::as_str) {
                Some("clip-image-encoder") => "image.",
                Some("clip-text-encoder") => "text.",
                _ => "",
            };
            for (k, v) in &state.tensors {
                merged.tensors.insert(format!("{prefix}{k}"), v.clone());
            }
            let text = state
                .metadata
                .get("config")
                .ok_or(WeightsError::NoClipConfig)?;
            let part: serde_json::Value =
                serde_json::from_str(text).map_err(|e| WeightsError::OptionsJson(e.to_string()))?;
            if let (Some(c), Some(p)) = (config.as_object_mut(), part.as_object()) {
                c.extend(p.clone());
            }
        }
        let config: ClipConfig =
            serde_json::from_value(config).map_err(|e| WeightsError::OptionsJson(e.to_string()))?;
        Self::from_state(config, &merged, device)
    }

    /// Normalised text embeddings (`CLIPModel.text_embeddings` after tokenisation).
    ///
    /// # Shapes
    /// - tokens: `[B, max_text_len]`, lens: `[B]` → `[B, n_embd]`
    pub fn text_embeddings(
        &self,
        tokens: Tensor<B, 2, Int>,
        lens: Tensor<B, 1, Int>,
    ) -> Tensor<B, 2> {
        normalize(self.text.forward(tokens, lens))
    }

    /// Normalised image embeddings of `x` in [-1, 1] at original timesteps `t`.
    ///
    /// # Shapes
    /// - x: `[B, 3, S, S]` → `[B, n_embd]`
    pub fn image_embeddings(&self, x: Tensor<B, 4>, t: &[usize]) -> Tensor<B, 2> {
        image_embeddings(&self.image, x, t)
    }
}

fn timesteps<B: Backend>(t: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let t: Vec<i64> = t.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(t.clone(), [t.len()]), device)
}

fn image_embeddings<B: Backend>(
    image: &ImageEncoder<B>,
    x: Tensor<B, 4>,
    t: &[usize],
) -> Tensor<B, 2> {
    let device = x.device();
    normalize(image.forward((x + 1.0) * 127.5, timesteps(t, &device)))
}

/// `CLIPModel.cond_fn`: `grad_scale · ∇ₓ logit_scale · Σ ⟨z_t, z_i(x, t)⟩` for normalised text
/// embeddings `z_t` (computed once per prompt), through the image tower on the autodiff backend
/// `A`; `x` and the result live on its inner backend. Also returns the similarity before the
/// gradient (`logit_scale · Σ ⟨z_t, z_i⟩`) as a tensor, unread: a WebGPU worker can only read
/// data asynchronously, and sampling never needs it.
///
/// # Shapes
/// - z_t: `[B, n_embd]`, x: `[B, 3, S, S]` → (`[B, 3, S, S]`, `[1]`)
pub fn clip_cond_grad<A: AutodiffBackend>(
    image: &ImageEncoder<A>,
    logit_scale: f64,
    z_t: Tensor<A::InnerBackend, 2>,
    x: Tensor<A::InnerBackend, 4>,
    t: &[usize],
    grad_scale: f64,
) -> (Tensor<A::InnerBackend, 4>, Tensor<A::InnerBackend, 1>) {
    let x_var = Tensor::<A, 4>::from_inner(x).require_grad();
    let z_i = image_embeddings(image, x_var.clone(), t);
    let similarity = (Tensor::<A, 2>::from_inner(z_t) * z_i).sum() * logit_scale;
    let value = similarity.clone().inner();
    let grads = similarity.backward();
    let grad = x_var
        .grad(&grads)
        .expect("x requires a gradient")
        .mul_scalar(grad_scale);
    (grad, value)
}
