//! GLIDE's text transformer (`glide_text2im/xf.py`): pre-LN residual attention blocks, no
//! attention mask (padding is handled by learned padding embeddings instead).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Tensor, backend::Backend};

/// `MultiheadAttention`: `c_qkv` → per-head [q|k|v] → attention → `c_proj`.
#[derive(Module, Debug)]
pub struct MultiheadAttention<B: Backend> {
    pub c_qkv: Linear<B>,
    pub c_proj: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> MultiheadAttention<B> {
    pub fn new(width: usize, heads: usize, device: &B::Device) -> Self {
        Self {
            c_qkv: LinearConfig::new(width, width * 3).init(device),
            c_proj: LinearConfig::new(width, width).init(device),
            heads,
        }
    }

    /// # Shapes
    /// - x: `[B, T, W]` → `[B, T, W]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, w] = x.dims();
        let qkv = self.c_qkv.forward(x);
        // QKVMultiheadAttention: view (B, T, heads, 3·ch) and split the last axis into q, k, v.
        let ch = w / self.heads;
        let qkv = qkv.reshape([b, t, self.heads, 3 * ch]).swap_dims(1, 2); // (B, H, T, 3ch)
        // Scale q and k by ch^(-1/4) each, as the original does for fp16 stability.
        let scale = 1.0 / (ch as f64).sqrt().sqrt();
        let q = qkv.clone().narrow(3, 0, ch) * scale;
        let k = qkv.clone().narrow(3, ch, ch) * scale;
        let v = qkv.narrow(3, 2 * ch, ch);
        let weight = softmax(q.matmul(k.swap_dims(2, 3)), 3); // (B, H, T, S)
        let out = weight.matmul(v).swap_dims(1, 2).reshape([b, t, w]); // (B, T, W)
        self.c_proj.forward(out)
    }
}

/// `MLP`: width → 4·width → GELU (exact) → width.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub c_fc: Linear<B>,
    pub c_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn new(width: usize, device: &B::Device) -> Self {
        Self {
            c_fc: LinearConfig::new(width, width * 4).init(device),
            c_proj: LinearConfig::new(width * 4, width).init(device),
        }
    }

    /// # Shapes
    /// - x: `[B, T, W]` → `[B, T, W]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.c_proj.forward(gelu(self.c_fc.forward(x)))
    }
}

/// `ResidualAttentionBlock`: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
#[derive(Module, Debug)]
pub struct ResidualAttentionBlock<B: Backend> {
    pub attn: MultiheadAttention<B>,
    pub ln_1: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub ln_2: LayerNorm<B>,
}

impl<B: Backend> ResidualAttentionBlock<B> {
    pub fn new(width: usize, heads: usize, device: &B::Device) -> Self {
        Self {
            attn: MultiheadAttention::new(width, heads, device),
            ln_1: LayerNormConfig::new(width).init(device),
            mlp: Mlp::new(width, device),
            ln_2: LayerNormConfig::new(width).init(device),
        }
    }

    /// # Shapes
    /// - x: `[B, T, W]` → `[B, T, W]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x));
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// `Transformer`: a stack of residual attention blocks.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    pub resblocks: Vec<ResidualAttentionBlock<B>>,
}

impl<B: Backend> Transformer<B> {
    pub fn new(width: usize, layers: usize, heads: usize, device: &B::Device) -> Self {
        Self {
            resblocks: (0..layers)
                .map(|_| ResidualAttentionBlock::new(width, heads, device))
                .collect(),
        }
    }

    /// # Shapes
    /// - x: `[B, T, W]` → `[B, T, W]`
    pub fn forward(&self, mut x: Tensor<B, 3>) -> Tensor<B, 3> {
        for block in &self.resblocks {
            // One layer's parameters in f32 at a time when held in f16 (crate::half).
            x = crate::half::widened(block).forward(x);
        }
        x
    }
}
