//! GroupNorm(32) with its affine and the ResBlock's scale-shift folded into one per-(example,
//! channel) multiply-add: `norm(h)·γ·(1 + scale) + β·(1 + scale) + shift` (ADM's
//! `use_scale_shift_norm`), computed as `(h − μ_g)·a + d` with `a = rstd_g·γ·(1 + scale)` and
//! `d = β·(1 + scale) + shift` made on `[B, C]` tensors.
//!
//! Same numbers as `burn::nn::GroupNorm` followed by the scale-shift, but every broadcast over the
//! image is a per-row scalar, which CPU backends (flex) run vectorised; `γ.reshape([1, C, 1, 1])`
//! broadcast over `[B, C, H, W]`, and `narrow`ed scale/shift, go through a scalar strided walk.

use burn::nn::GroupNorm;
use burn::tensor::{Tensor, backend::Backend};

/// Applies `norm` to `x`, then (when given) the scale-shift `· (1 + scale) + shift`.
///
/// # Shapes
/// - x: `[B, C, H, W]`
/// - scale_shift: `([B, C], [B, C])`
/// - output: `[B, C, H, W]`
pub fn group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    scale_shift: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let g = norm.num_groups;
    let x3 = x.reshape([b, g, (c / g) * h * w]);
    let mean = x3.clone().mean_dim(2); // [B, G, 1]
    let xc = x3 - mean;
    let var = xc.clone().square().mean_dim(2);
    let rstd = var.add_scalar(norm.epsilon).sqrt().recip(); // [B, G, 1]
    let rstd = rstd.expand([b, g, c / g]).reshape([b, c]);
    let (gamma, beta) = match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) => (
            gamma.val().reshape([1, c]).repeat_dim(0, b),
            beta.val().reshape([1, c]).repeat_dim(0, b),
        ),
        _ => (rstd.ones_like(), rstd.zeros_like()),
    };
    let (a, d) = match scale_shift {
        Some((scale, shift)) => {
            let s1 = scale + 1.0;
            (rstd * gamma * s1.clone(), beta * s1 + shift)
        }
        None => (rstd * gamma, beta),
    };
    xc.reshape([b, c, h, w]) * a.reshape([b, c, 1, 1]) + d.reshape([b, c, 1, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::GroupNormConfig;
    use burn::tensor::Distribution;

    type B = Flex;

    #[test]
    fn equals_burn_group_norm_then_scale_shift() {
        let device = Default::default();
        let norm = GroupNormConfig::new(4, 8).init::<B>(&device);
        // Non-trivial affine parameters.
        let norm = GroupNorm {
            gamma: norm
                .gamma
                .map(|p| p.map(|t| t.random_like(Distribution::Normal(1.0, 0.5)))),
            beta: norm
                .beta
                .map(|p| p.map(|t| t.random_like(Distribution::Normal(0.0, 0.5)))),
            ..norm
        };
        let x = Tensor::<B, 4>::random([3, 8, 5, 4], Distribution::Normal(0.3, 2.0), &device);
        let emb = Tensor::<B, 2>::random([3, 16], Distribution::Normal(0.0, 1.0), &device);
        let scale = emb.clone().narrow(1, 0, 8);
        let shift = emb.narrow(1, 8, 8);
        let want = norm.forward(x.clone()) * (scale.clone().reshape([3, 8, 1, 1]) + 1.0)
            + shift.clone().reshape([3, 8, 1, 1]);
        let got = group_norm(&norm, x.clone(), Some((scale, shift)));
        let err = (got - want.clone()).abs().max().into_scalar();
        assert!(err < 1e-5, "scale-shift: max |Δ| {err}");
        let got = group_norm(&norm, x.clone(), None);
        let err = (got - norm.forward(x)).abs().max().into_scalar();
        assert!(err < 1e-5, "plain: max |Δ| {err}");
    }
}
