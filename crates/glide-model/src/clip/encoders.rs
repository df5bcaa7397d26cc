//! The noised CLIP's towers (`glide_text2im/clip/encoders.py`): pre-LN transformer blocks over
//! text tokens (causal attention, the feature taken at the last token) or image patches (full
//! attention, the feature taken at the timestep token that makes the tower noise-aware).
//!
//! The original pads its context to blocks of 32 and masks the padding with −1e10; padded
//! positions never change a real one, so here the context is not padded at all.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

/// CLIP's image normalisation (pixel values in [0, 255]).
const CHANNEL_MEANS: [f32; 3] = [122.770_94, 116.746_01, 104.093_735];
const CHANNEL_STDS: [f32; 3] = [68.500_534, 66.632_16, 70.323_16];

fn layer_norm<B: Backend>(n: usize, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(n).with_epsilon(1e-5).init(device)
}

/// `AttentionResblock`: x + f_c(attention(ln(x))), q and v with bias, k without.
#[derive(Module, Debug)]
pub struct AttentionResblock<B: Backend> {
    pub ln: LayerNorm<B>,
    pub f_q: Linear<B>,
    pub f_k: Linear<B>,
    pub f_v: Linear<B>,
    pub f_c: Linear<B>,
    pub n_heads: usize,
    /// Each position sees itself and the ones before it (the text tower).
    pub causal: bool,
}

impl<B: Backend> AttentionResblock<B> {
    pub fn new(n_state: usize, n_heads: usize, causal: bool, device: &B::Device) -> Self {
        let linear = |bias| {
            LinearConfig::new(n_state, n_state)
                .with_bias(bias)
                .init(device)
        };
        Self {
            ln: layer_norm(n_state, device),
            f_q: linear(true),
            f_k: linear(false),
            f_v: linear(true),
            f_c: linear(true),
            n_heads,
            causal,
        }
    }

    /// # Shapes
    /// - m: `[B, T, n_state]` → `[B, T, n_state]`
    pub fn forward(&self, m: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, w] = m.dims();
        let (h, d) = (self.n_heads, w / self.n_heads);
        let r = self.ln.forward(m.clone());
        let heads = |x: Tensor<B, 3>| x.reshape([b, t, h, d]).swap_dims(1, 2); // [B, H, T, d]
        let q = heads(self.f_q.forward(r.clone()));
        let k = heads(self.f_k.forward(r.clone()));
        let v = heads(self.f_v.forward(r));
        // q·√s and k·√s with s = 1/√d, as the original scales them.
        let mut logits = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt(); // [B, H, T, T]
        if self.causal {
            let bias: Vec<f32> = (0..t * t)
                .map(|i| if i % t > i / t { -1e10 } else { 0.0 })
                .collect();
            let bias = Tensor::<B, 2>::from_data(TensorData::new(bias, [t, t]), &m.device());
            logits = logits + bias.unsqueeze::<4>();
        }
        let r = softmax(logits, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, t, w]);
        m + self.f_c.forward(r)
    }
}

/// `FullyConnectedResblock`: x + f_2(gelu(f_1(ln(x)))), 4× wide.
#[derive(Module, Debug)]
pub struct FullyConnectedResblock<B: Backend> {
    pub ln: LayerNorm<B>,
    pub f_1: Linear<B>,
    pub f_2: Linear<B>,
}

impl<B: Backend> FullyConnectedResblock<B> {
    pub fn new(n_state: usize, device: &B::Device) -> Self {
        Self {
            ln: layer_norm(n_state, device),
            f_1: LinearConfig::new(n_state, 4 * n_state).init(device),
            f_2: LinearConfig::new(4 * n_state, n_state).init(device),
        }
    }

    /// # Shapes
    /// - m: `[B, T, n_state]` → `[B, T, n_state]`
    pub fn forward(&self, m: Tensor<B, 3>) -> Tensor<B, 3> {
        let r = self.ln.forward(m.clone());
        m + self.f_2.forward(gelu(self.f_1.forward(r)))
    }
}

/// `TransformerBlock`: attention, then the MLP.
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    pub f_attn: AttentionResblock<B>,
    pub f_mlp: FullyConnectedResblock<B>,
}

impl<B: Backend> TransformerBlock<B> {
    pub fn new(n_state: usize, n_heads: usize, causal: bool, device: &B::Device) -> Self {
        Self {
            f_attn: AttentionResblock::new(n_state, n_heads, causal, device),
            f_mlp: FullyConnectedResblock::new(n_state, device),
        }
    }

    /// # Shapes
    /// - x: `[B, T, n_state]` → `[B, T, n_state]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.f_mlp.forward(self.f_attn.forward(x))
    }
}

/// `TextFeatureExtractor` / `ImageFeatureExtractor`: ln, then a bias-free projection to `n_embd`.
#[derive(Module, Debug)]
pub struct FeatureExtractor<B: Backend> {
    pub ln: LayerNorm<B>,
    pub f: Linear<B>,
}

impl<B: Backend> FeatureExtractor<B> {
    pub fn new(n_state: usize, n_embd: usize, device: &B::Device) -> Self {
        Self {
            ln: layer_norm(n_state, device),
            f: LinearConfig::new(n_state, n_embd)
                .with_bias(false)
                .init(device),
        }
    }

    /// # Shapes
    /// - x: `[B, 1, n_state]` (the chosen position) → `[B, n_embd]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, w] = x.dims();
        self.f.forward(self.ln.forward(x).reshape([b, w]))
    }
}

/// `TextEmbedding`: token and position embeddings.
#[derive(Module, Debug)]
pub struct TextEmbedding<B: Backend> {
    pub w_voc: Param<Tensor<B, 2>>,
    pub w_pos: Param<Tensor<B, 2>>,
}

/// `TextEncoder`: the caption's embedding, taken at its last token (`text_len − 1`).
#[derive(Module, Debug)]
pub struct TextEncoder<B: Backend> {
    pub input: TextEmbedding<B>,
    pub blocks: Vec<TransformerBlock<B>>,
    pub output: FeatureExtractor<B>,
}

impl<B: Backend> TextEncoder<B> {
    /// A tower of `n_xf_blocks` blocks, `n_heads × n_head_state` wide (zero embeddings: load
    /// weights before use).
    pub fn new(
        (n_vocab, max_text_len, n_embd): (usize, usize, usize),
        (n_heads, n_head_state, n_xf_blocks): (usize, usize, usize),
        device: &B::Device,
    ) -> Self {
        let n_state = n_heads * n_head_state;
        Self {
            input: TextEmbedding {
                w_voc: Param::from_tensor(Tensor::zeros([n_vocab, n_state], device)),
                w_pos: Param::from_tensor(Tensor::zeros([max_text_len, n_state], device)),
            },
            blocks: (0..n_xf_blocks)
                .map(|_| TransformerBlock::new(n_state, n_heads, true, device))
                .collect(),
            output: FeatureExtractor::new(n_state, n_embd, device),
        }
    }

    /// # Shapes
    /// - tokens: `[B, max_text_len]`, text_len: `[B]` (≥ 1) → `[B, n_embd]`
    pub fn forward(&self, tokens: Tensor<B, 2, Int>, text_len: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let [b, t] = tokens.dims();
        let w_voc = self.input.w_voc.val();
        let n_state = w_voc.dims()[1];
        let x = w_voc
            .select(0, tokens.reshape([b * t]))
            .reshape([b, t, n_state]);
        let mut h = x + self.input.w_pos.val().unsqueeze::<3>();
        for block in &self.blocks {
            h = block.forward(h);
        }
        let index = (text_len - 1).reshape([b, 1, 1]).repeat_dim(2, n_state);
        self.output.forward(h.gather(1, index))
    }
}

/// `ImageEmbedding` with `n_timestep` > 0: CLIP-normalised patches, a first token embedding the
/// diffusion timestep, positions, and a layer norm.
#[derive(Module, Debug)]
pub struct ImageEmbedding<B: Backend> {
    pub patch_proj: Param<Tensor<B, 4>>,
    pub w_pos: Param<Tensor<B, 2>>,
    pub w_t: Param<Tensor<B, 2>>,
    pub ln: LayerNorm<B>,
}

/// `ImageEncoder` (noise-aware): the image's embedding at noise level t.
#[derive(Module, Debug)]
pub struct ImageEncoder<B: Backend> {
    pub input: ImageEmbedding<B>,
    pub blocks: Vec<TransformerBlock<B>>,
    pub output: FeatureExtractor<B>,
}

impl<B: Backend> ImageEncoder<B> {
    /// `image_size` px in patches of `patch_size`, `n_timesteps` timestep embeddings (zero
    /// embeddings: load weights before use).
    pub fn new(
        (image_size, patch_size, n_timesteps, n_embd): (usize, usize, usize, usize),
        (n_heads, n_head_state, n_xf_blocks): (usize, usize, usize),
        device: &B::Device,
    ) -> Self {
        let n_state = n_heads * n_head_state;
        let n_context = 1 + (image_size / patch_size).pow(2);
        let zeros2 = |r, c| Param::from_tensor(Tensor::zeros([r, c], device));
        Self {
            input: ImageEmbedding {
                patch_proj: Param::from_tensor(Tensor::zeros(
                    [n_state, 3, patch_size, patch_size],
                    device,
                )),
                w_pos: zeros2(n_context, n_state),
                w_t: zeros2(n_timesteps, n_state),
                ln: layer_norm(n_state, device),
            },
            blocks: (0..n_xf_blocks)
                .map(|_| TransformerBlock::new(n_state, n_heads, false, device))
                .collect(),
            output: FeatureExtractor::new(n_state, n_embd, device),
        }
    }

    /// # Shapes
    /// - image: `[B, 3, S, S]` with pixel values in [0, 255] (the CLIP model maps [-1, 1] there),
    ///   timesteps: `[B]` original timestep indices → `[B, n_embd]`
    pub fn forward(&self, image: Tensor<B, 4>, timesteps: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let device = image.device();
        let [b, _, _, _] = image.dims();
        let channel = |v: [f32; 3]| Tensor::<B, 1>::from_floats(v, &device).reshape([1, 3, 1, 1]);
        let x = (image - channel(CHANNEL_MEANS)) / channel(CHANNEL_STDS);
        let proj = self.input.patch_proj.val();
        let [n_state, _, p, _] = proj.dims();
        let x = conv2d(x, proj, None, ConvOptions::new([p, p], [0, 0], [1, 1], 1));
        let [_, _, gh, gw] = x.dims();
        let x = x.reshape([b, n_state, gh * gw]).swap_dims(1, 2); // [B, n_patch, n_state]
        let sot = self
            .input
            .w_t
            .val()
            .select(0, timesteps)
            .unsqueeze_dim::<3>(1);
        let x = Tensor::cat(vec![sot, x], 1) + self.input.w_pos.val().unsqueeze::<3>();
        let mut h = self.input.ln.forward(x);
        for block in &self.blocks {
            h = block.forward(h);
        }
        self.output.forward(h.narrow(1, 0, 1))
    }
}
