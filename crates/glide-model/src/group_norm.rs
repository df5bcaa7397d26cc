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
    normalize(norm, x, scale_shift, false)
}

/// `silu(group_norm(norm, x, scale_shift))`: the ResBlock's and the output's norm-then-activation,
/// one op with its own backward when training on the CPU ([`crate::group_norm_cpu`]).
///
/// # Shapes
/// - as [`group_norm`]
pub fn group_norm_silu<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    scale_shift: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
) -> Tensor<B, 4> {
    normalize(norm, x, scale_shift, true)
}

fn normalize<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    scale_shift: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    silu: bool,
) -> Tensor<B, 4> {
    #[cfg(not(target_arch = "wasm32"))]
    if let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta)
        && crate::group_norm_cpu::applies(&x)
    {
        let affine = (gamma.val(), beta.val());
        let (groups, eps) = (norm.num_groups, norm.epsilon);
        return crate::group_norm_cpu::group_norm(x, affine, scale_shift, groups, eps, silu);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta)
        && crate::group_norm_cpu::applies_inference(&x)
    {
        let affine = (gamma.val(), beta.val());
        let (groups, eps) = (norm.num_groups, norm.epsilon);
        return crate::group_norm_cpu::group_norm_inference(
            x,
            affine,
            scale_shift,
            groups,
            eps,
            silu,
        );
    }
    let y = group_norm_ops(norm, x, scale_shift);
    if silu { crate::silu::silu(y) } else { y }
}

/// [`group_norm`] as burn's tensor ops (every backend).
fn group_norm_ops<B: Backend>(
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
        let got = group_norm(&norm, x.clone(), Some((scale.clone(), shift.clone())));
        let err = (got - want.clone()).abs().max().into_scalar();
        assert!(err < 1e-5, "scale-shift: max |Δ| {err}");
        let got = group_norm_silu(&norm, x.clone(), Some((scale, shift)));
        let err = (got - burn::tensor::activation::silu(want))
            .abs()
            .max()
            .into_scalar();
        assert!(err < 1e-5, "scale-shift and SiLU: max |Δ| {err}");
        let got = group_norm(&norm, x.clone(), None);
        let err = (got - norm.forward(x.clone())).abs().max().into_scalar();
        assert!(err < 1e-5, "plain: max |Δ| {err}");
        // On flex this is the CPU inference op; burn's ops give the same.
        #[cfg(not(target_arch = "wasm32"))]
        assert!(crate::group_norm_cpu::applies_inference(&x));
        let err = (group_norm_ops(&norm, x.clone(), None) - norm.forward(x))
            .abs()
            .max()
            .into_scalar();
        assert!(err < 1e-5, "burn's ops: max |Δ| {err}");
    }

    /// Largest |a − b| relative to the largest |b|.
    fn rel_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale.max(1e-12)
    }

    #[test]
    fn cpu_training_op_equals_burns_ops_forward_and_backward() {
        use burn::backend::Autodiff;
        type A = Autodiff<B>;
        let device = Default::default();
        let random = |shape: Vec<usize>, mean: f64, std: f64| {
            Tensor::<B, 1>::random(
                [shape.iter().product::<usize>()],
                Distribution::Normal(mean, std),
                &device,
            )
            .into_data()
        };
        let (x, gamma, beta) = (
            random(vec![3, 8, 5, 4], 0.3, 2.0),
            random(vec![8], 1.0, 0.5),
            random(vec![8], 0.0, 0.5),
        );
        let (scale, shift, g) = (
            random(vec![3, 8], 0.0, 0.5),
            random(vec![3, 8], 0.0, 0.5),
            random(vec![3, 8, 5, 4], 0.0, 1.0),
        );
        // Fresh leaves per run: the output and the gradients of x, γ, β, scale, shift.
        let run = |fused: bool, with_scale_shift: bool, silu: bool| {
            let leaf = |d: &burn::tensor::TensorData| {
                Tensor::<A, 1>::from_data(d.clone(), &device).require_grad()
            };
            let (xl, gl, bl, sl, hl) = (
                leaf(&x),
                leaf(&gamma),
                leaf(&beta),
                leaf(&scale),
                leaf(&shift),
            );
            let norm = GroupNorm {
                gamma: Some(burn::module::Param::from_tensor(gl.clone())),
                beta: Some(burn::module::Param::from_tensor(bl.clone())),
                ..GroupNormConfig::new(4, 8).init::<A>(&device)
            };
            let x4 = xl.clone().reshape([3, 8, 5, 4]);
            let ss =
                with_scale_shift.then(|| (sl.clone().reshape([3, 8]), hl.clone().reshape([3, 8])));
            assert!(crate::group_norm_cpu::applies(&x4));
            let out = if fused {
                normalize(&norm, x4, ss, silu)
            } else {
                let y = group_norm_ops(&norm, x4, ss);
                if silu {
                    burn::tensor::activation::silu(y)
                } else {
                    y
                }
            };
            let gt = Tensor::<A, 1>::from_data(g.clone(), &device).reshape([3, 8, 5, 4]);
            let grads = (out.clone() * gt).sum().backward();
            let grad = |t: &Tensor<A, 1>| t.grad(&grads).map(|g| g.into_data());
            [
                Some(out.inner().reshape([480]).into_data()),
                grad(&xl),
                grad(&gl),
                grad(&bl),
                grad(&sl),
                grad(&hl),
            ]
        };
        for (with_scale_shift, silu) in [(false, false), (false, true), (true, false), (true, true)]
        {
            let ours = run(true, with_scale_shift, silu);
            let burns = run(false, with_scale_shift, silu);
            for (name, (a, b)) in ["output", "dx", "dγ", "dβ", "dscale", "dshift"]
                .iter()
                .zip(ours.into_iter().zip(burns))
            {
                let what = format!("{name}, scale-shift {with_scale_shift}, silu {silu}");
                match (a, b) {
                    (Some(a), Some(b)) => {
                        let (a, b) = (
                            Tensor::<B, 1>::from_data(a, &device),
                            Tensor::<B, 1>::from_data(b, &device),
                        );
                        let diff = rel_diff(a, b);
                        assert!(diff < 1e-4, "{what} differs by {diff}");
                    }
                    (None, None) => assert!(
                        !with_scale_shift && name.starts_with("ds"),
                        "{what}: no gradient"
                    ),
                    _ => panic!("{what}: a gradient on one side only"),
                }
            }
        }
    }
}
