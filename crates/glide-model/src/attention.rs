//! `AttentionBlock` of GLIDE's UNet: self-attention over pixels whose keys and values are extended
//! with the text sequence (`encoder_kv`), in the original's legacy per-head [q|k|v] layout.

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, backend::Backend};

use crate::conv::conv1d;
use crate::group_norm::group_norm;

/// Attention over the `H·W` positions of a feature map, with the text tokens prepended to the
/// keys and values.
#[derive(Module, Debug)]
pub struct AttentionBlock<B: Backend> {
    pub norm: GroupNorm<B>,
    pub qkv: Conv1d<B>,
    pub encoder_kv: Option<Conv1d<B>>,
    pub proj_out: Conv1d<B>,
    pub num_heads: usize,
}

impl<B: Backend> AttentionBlock<B> {
    /// `channels` must split evenly into `num_heads` (or heads of `num_head_channels`).
    pub fn new(
        channels: usize,
        num_heads: usize,
        num_head_channels: Option<usize>,
        encoder_channels: Option<usize>,
        device: &B::Device,
    ) -> Self {
        let num_heads = match num_head_channels {
            Some(hc) => {
                assert!(
                    channels.is_multiple_of(hc),
                    "q,k,v channels {channels} is not divisible by num_head_channels {hc}"
                );
                channels / hc
            }
            None => num_heads,
        };
        Self {
            norm: GroupNormConfig::new(32, channels).init(device),
            qkv: Conv1dConfig::new(channels, channels * 3, 1).init(device),
            encoder_kv: encoder_channels
                .map(|ec| Conv1dConfig::new(ec, channels * 2, 1).init(device)),
            // zero_module: a fresh attention block adds nothing.
            proj_out: Conv1dConfig::new(channels, channels, 1)
                .with_initializer(burn::nn::Initializer::Zeros)
                .init(device),
            num_heads,
        }
    }

    /// # Shapes
    /// - x: `[B, C, H, W]`
    /// - encoder_out: `[B, xf_width, L]` (the text sequence `xf_out`)
    /// - output: `[B, C, H, W]`
    pub fn forward(&self, x: Tensor<B, 4>, encoder_out: Option<&Tensor<B, 3>>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let t = h * w;
        let qkv = conv1d(
            &self.qkv,
            group_norm(&self.norm, x.clone(), None).reshape([b, c, t]),
        );
        // QKVAttentionLegacy: (B·heads, 3·ch, T), per head [q | k | v].
        let heads = self.num_heads;
        let ch = c / heads;
        let qkv = qkv.reshape([b * heads, 3 * ch, t]);
        let ekv = match (&self.encoder_kv, encoder_out) {
            (Some(proj), Some(enc)) => {
                let ekv = conv1d(proj, enc.clone());
                let l = ekv.dims()[2];
                Some(ekv.reshape([b * heads, 2 * ch, l]))
            }
            _ => None,
        };
        let a = qkv_attention(qkv, ekv);
        let out = conv1d(&self.proj_out, a.reshape([b, c, t]));
        x + out.reshape([b, c, h, w])
    }
}

/// `QKVAttentionLegacy`'s core: softmax(qᵀk / √ch) weighting v, where the keys and values are the
/// text's (`ekv`, when given) followed by the pixels'. One op with its own backward when training
/// on the CPU ([`crate::qkv_attention`]), burn's ops otherwise.
///
/// # Shapes
/// - qkv: `[B·heads, 3·ch, T]` (per head [q | k | v]), ekv: `[B·heads, 2·ch, L]` ([k | v])
/// - output: `[B·heads, ch, T]`
pub fn qkv_attention<B: Backend>(qkv: Tensor<B, 3>, ekv: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
    #[cfg(not(target_arch = "wasm32"))]
    if crate::qkv_attention::applies(&qkv) {
        return crate::qkv_attention::qkv_attention(qkv, ekv);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if crate::qkv_attention::applies_inference(&qkv) {
        return crate::qkv_attention::qkv_attention_inference(qkv, ekv);
    }
    qkv_attention_ops(qkv, ekv)
}

/// [`qkv_attention`] as burn's tensor ops (every backend).
fn qkv_attention_ops<B: Backend>(qkv: Tensor<B, 3>, ekv: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
    let ch = qkv.dims()[1] / 3;
    let q = qkv.clone().narrow(1, 0, ch);
    let mut k = qkv.clone().narrow(1, ch, ch);
    let mut v = qkv.narrow(1, 2 * ch, ch);
    if let Some(ekv) = ekv {
        k = Tensor::cat(vec![ekv.clone().narrow(1, 0, ch), k], 2);
        v = Tensor::cat(vec![ekv.narrow(1, ch, ch), v], 2);
    }
    let scale = 1.0 / (ch as f64).sqrt().sqrt();
    // weight[b, t, s] = Σ_c q[b, c, t]·k[b, c, s]
    let weight = (q * scale).swap_dims(1, 2).matmul(k * scale); // (B·heads, T, S)
    let weight = softmax(weight, 2);
    // a[b, c, t] = Σ_s weight[b, t, s]·v[b, c, s], as (weight · vᵀ)ᵀ: the softmax output is
    // the left operand, so its gradient (and the softmax's backward) stays contiguous.
    weight.matmul(v.swap_dims(1, 2)).swap_dims(1, 2) // (B·heads, ch, T)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    /// Largest |a − b| relative to the largest |b|.
    fn rel_diff(a: Tensor<Flex, 3>, b: Tensor<Flex, 3>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale.max(1e-12)
    }

    #[test]
    fn cpu_attention_core_equals_burns_ops_forward_and_backward() {
        let device = Default::default();
        for text in [true, false] {
            let qkv = Tensor::<A, 3>::random([3, 12, 10], Distribution::Normal(0.0, 2.0), &device)
                .require_grad();
            let ekv = Tensor::<A, 3>::random([3, 8, 5], Distribution::Normal(0.0, 2.0), &device)
                .require_grad();
            let e = || text.then(|| ekv.clone());
            assert!(
                crate::qkv_attention::applies(&qkv),
                "the test must take the fused path"
            );
            let ours = qkv_attention(qkv.clone(), e());
            let burns = qkv_attention_ops(qkv.clone(), e());
            assert_eq!(ours.dims(), [3, 4, 10]);
            let fwd = rel_diff(ours.clone().inner(), burns.clone().inner());
            assert!(fwd < 1e-5, "forward differs by {fwd} (text {text})");
            let inference = qkv_attention(qkv.clone().inner(), e().map(|e| e.inner()));
            assert!(crate::qkv_attention::applies_inference(
                &qkv.clone().inner()
            ));
            let inf = rel_diff(inference, burns.clone().inner());
            assert!(inf < 1e-5, "inference differs by {inf} (text {text})");
            let g = Tensor::<A, 3>::random([3, 4, 10], Distribution::Default, &device);
            let ours = (ours * g.clone()).sum().backward();
            let burns = (burns * g).sum().backward();
            let dqkv = rel_diff(qkv.grad(&ours).unwrap(), qkv.grad(&burns).unwrap());
            assert!(dqkv < 1e-5, "dqkv differs by {dqkv} (text {text})");
            if text {
                let dekv = rel_diff(ekv.grad(&ours).unwrap(), ekv.grad(&burns).unwrap());
                assert!(dekv < 1e-5, "dekv differs by {dekv}");
            } else {
                assert!(ekv.grad(&ours).is_none());
            }
        }
    }
}
