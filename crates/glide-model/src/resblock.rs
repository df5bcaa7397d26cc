//! `ResBlock` of the ADM UNet (Dhariwal & Nichol 2021): GroupNorm(32), SiLU, 3×3 convolutions,
//! timestep embedding as scale-shift norm, dropout, optional up/down-sampling inside the block
//! (`resblock_updown`).

use crate::silu::silu;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Tensor, backend::Backend};

use crate::conv::conv2d;
use crate::group_norm::group_norm_silu;

fn conv3x3_config(channels_in: usize, channels_out: usize) -> Conv2dConfig {
    Conv2dConfig::new([channels_in, channels_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
}

/// A 3×3 convolution with padding 1 (`conv_nd(2, in, out, 3, padding=1)`).
pub fn conv3x3<B: Backend>(
    channels_in: usize,
    channels_out: usize,
    device: &B::Device,
) -> Conv2d<B> {
    conv3x3_config(channels_in, channels_out).init(device)
}

/// A 3×3 convolution that starts at zero (`zero_module(conv_nd(...))`): the last layer of every
/// residual branch, so a fresh block is the identity and a fresh model predicts eps ≡ 0.
pub fn zero_conv3x3<B: Backend>(
    channels_in: usize,
    channels_out: usize,
    device: &B::Device,
) -> Conv2d<B> {
    conv3x3_config(channels_in, channels_out)
        .with_initializer(burn::nn::Initializer::Zeros)
        .init(device)
}

/// Nearest-neighbour ×2 upsampling (`Upsample` without a convolution).
///
/// # Shapes
/// - x: `[B, C, H, W]` → `[B, C, 2H, 2W]`
pub fn upsample2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(not(target_arch = "wasm32"))]
    if crate::resample_cpu::applies(&x) {
        return crate::resample_cpu::resample(x, crate::resample_cpu::Resample::Up);
    }
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

/// 2×2 average pooling (`Downsample` without a convolution).
///
/// # Shapes
/// - x: `[B, C, H, W]` → `[B, C, H/2, W/2]`
pub fn downsample2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(not(target_arch = "wasm32"))]
    if crate::resample_cpu::applies(&x) {
        return crate::resample_cpu::resample(x, crate::resample_cpu::Resample::Down);
    }
    avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false)
}

/// Residual block conditioned on the timestep (+ text) embedding.
///
/// Fields map to the original's `in_layers.{0,2}`, `emb_layers.1`, `out_layers.{0,3}`.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub in_norm: GroupNorm<B>,
    pub in_conv: Conv2d<B>,
    pub emb_layers: Linear<B>,
    pub out_norm: GroupNorm<B>,
    pub dropout: Dropout,
    pub out_conv: Conv2d<B>,
    pub skip_connection: Option<Conv2d<B>>,
    pub up: bool,
    pub down: bool,
    pub use_scale_shift_norm: bool,
}

/// How a [`ResBlock`] is built.
#[derive(Debug, Clone, Copy)]
pub struct ResBlockSpec {
    pub channels: usize,
    pub emb_channels: usize,
    pub out_channels: usize,
    pub dropout: f64,
    pub use_scale_shift_norm: bool,
    pub up: bool,
    pub down: bool,
}

impl<B: Backend> ResBlock<B> {
    pub fn new(spec: ResBlockSpec, device: &B::Device) -> Self {
        let ResBlockSpec {
            channels,
            emb_channels,
            out_channels,
            ..
        } = spec;
        let emb_out = if spec.use_scale_shift_norm {
            2 * out_channels
        } else {
            out_channels
        };
        Self {
            in_norm: GroupNormConfig::new(32, channels).init(device),
            in_conv: conv3x3(channels, out_channels, device),
            emb_layers: LinearConfig::new(emb_channels, emb_out).init(device),
            out_norm: GroupNormConfig::new(32, out_channels).init(device),
            dropout: DropoutConfig::new(spec.dropout).init(),
            out_conv: zero_conv3x3(out_channels, out_channels, device),
            skip_connection: (out_channels != channels)
                .then(|| Conv2dConfig::new([channels, out_channels], [1, 1]).init(device)),
            up: spec.up,
            down: spec.down,
            use_scale_shift_norm: spec.use_scale_shift_norm,
        }
    }

    /// # Shapes
    /// - x: `[B, C, H, W]`
    /// - emb: `[B, E]`
    /// - output: `[B, C_out, H', W']` (H' = 2H when `up`, H/2 when `down`)
    pub fn forward(&self, x: Tensor<B, 4>, emb: &Tensor<B, 2>) -> Tensor<B, 4> {
        let h = group_norm_silu(&self.in_norm, x.clone(), None);
        let (h, x) = if self.up {
            (upsample2x(h), upsample2x(x))
        } else if self.down {
            (downsample2x(h), downsample2x(x))
        } else {
            (h, x)
        };
        let h = conv2d(&self.in_conv, h);
        let emb_out = self.emb_layers.forward(silu(emb.clone()));
        let [b, e] = emb_out.dims();
        let h = if self.use_scale_shift_norm {
            let oc = e / 2;
            let scale = emb_out.clone().narrow(1, 0, oc);
            let shift = emb_out.narrow(1, oc, oc);
            group_norm_silu(&self.out_norm, h, Some((scale, shift)))
        } else {
            group_norm_silu(&self.out_norm, h + emb_out.reshape([b, e, 1, 1]), None)
        };
        let h = conv2d(&self.out_conv, self.dropout.forward(h));
        let skip = match &self.skip_connection {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        skip + h
    }
}
