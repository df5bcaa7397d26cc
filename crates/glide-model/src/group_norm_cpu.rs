//! GroupNorm with its affine, the ResBlock's scale-shift and (optionally) the SiLU after it, as
//! one op with its own backward on the CPU training backend (`Autodiff<Flex>`).
//!
//! Through burn's ops, [`crate::group_norm::group_norm`] is ~15 recorded ops (means, centring,
//! variance, rsqrt, the per-channel products) and the SiLU two more, each a pass over the
//! activation forward and again backward. Here, per (example, group) with x̂ = (x − μ)·rstd and
//! u = 1 + scale (1 without scale-shift), y = x̂·γ·u + β·u + shift and out = y or y·σ(y):
//!
//! - forward: one pass for μ, one for the variance, one for y (and σ(y), kept for the backward);
//! - backward, given ∂L/∂out: gy (through the SiLU, with y made again from x), then
//!   dγ = Σ gy·x̂·u, dβ = Σ gy·u, dscale = Σ_hw gy·(x̂·γ + β), dshift = Σ_hw gy and
//!   dx = rstd·(dx̂ − mean_g(dx̂) − x̂·mean_g(dx̂·x̂)) with dx̂ = gy·γ·u.
//!
//! Equal to burn's ops to rounding (tested in `group_norm.rs`). `GLIDE_GROUP_NORM_BACKWARD=burn`
//! in the environment keeps burn's ops (benchmarks).

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::cpu_ops::{
    Ad, dims, enabled, from_vec, is_cpu_inference, is_cpu_training, same, values,
};

/// Whether `x` takes this path (see the module docs).
pub(crate) fn applies<B: Backend>(x: &Tensor<B, 4>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_GROUP_NORM_BACKWARD") && is_cpu_training(x)
}

/// GroupNorm of `x` in `groups` groups with affine (γ, β), then `· (1 + scale) + shift` when
/// given, then SiLU when `silu`. Call only where [`applies`] is true.
///
/// # Shapes
/// - x: `[B, C, H, W]`, gamma, beta: `[C]`, scale_shift: `([B, C], [B, C])` → `[B, C, H, W]`
pub(crate) fn group_norm<B: Backend>(
    x: Tensor<B, 4>,
    (gamma, beta): (Tensor<B, 1>, Tensor<B, 1>),
    scale_shift: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    groups: usize,
    epsilon: f64,
    silu: bool,
) -> Tensor<B, 4> {
    let ad = |t: Tensor<B, 1>| same::<_, Tensor<Ad, 1>>(t).into_primitive().tensor();
    let ad2 = |t: Tensor<B, 2>| same::<_, Tensor<Ad, 2>>(t).into_primitive().tensor();
    let x = same::<_, Tensor<Ad, 4>>(x).into_primitive().tensor();
    let (gamma, beta) = (ad(gamma), ad(beta));
    let scale_shift = scale_shift.map(|(s, h)| (ad2(s), ad2(h)));
    let [b, c, h, w] = dims(&x.primitive);
    let d = Dims {
        b,
        c,
        hw: h * w,
        groups,
        eps: epsilon,
    };
    let params = Params {
        gamma: values(&gamma.primitive).into_owned(),
        beta: values(&beta.primitive).into_owned(),
        scale: scale_shift
            .as_ref()
            .map(|(s, _)| values(&s.primitive).into_owned()),
        shift: scale_shift
            .as_ref()
            .map(|(_, h)| values(&h.primitive).into_owned()),
    };
    let (out, stats, sigmoid) = forward(&values(&x.primitive), &params, &d, silu);
    let out = from_vec(out, [b, c, h, w]);
    let state = State {
        x: x.primitive.clone(),
        params,
        stats,
        sigmoid,
        d,
    };
    let out = match scale_shift {
        Some((scale, shift)) => match WithScaleShift
            .prepare::<NoCheckpointing>([x.node, gamma.node, beta.node, scale.node, shift.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
        None => match Affine
            .prepare::<NoCheckpointing>([x.node, gamma.node, beta.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    };
    same(Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(out)))
}

/// Whether `x` takes the inference path [`group_norm_inference`]: `Flex` (no autodiff), f32.
pub(crate) fn applies_inference<B: Backend>(x: &Tensor<B, 4>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_GROUP_NORM_BACKWARD") && is_cpu_inference(x)
}

/// [`group_norm`] for inference on `Flex`: the same forward, examples in parallel, nothing
/// kept. Call only where [`applies_inference`] is true.
///
/// # Shapes
/// - as [`group_norm`]
pub(crate) fn group_norm_inference<B: Backend>(
    x: Tensor<B, 4>,
    (gamma, beta): (Tensor<B, 1>, Tensor<B, 1>),
    scale_shift: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    groups: usize,
    epsilon: f64,
    silu: bool,
) -> Tensor<B, 4> {
    let flex = |t: Tensor<B, 1>| same::<_, Tensor<Flex, 1>>(t).into_primitive().tensor();
    let flex2 = |t: Tensor<B, 2>| same::<_, Tensor<Flex, 2>>(t).into_primitive().tensor();
    let x = same::<_, Tensor<Flex, 4>>(x).into_primitive().tensor();
    let [b, c, h, w] = dims(&x);
    let d = Dims {
        b,
        c,
        hw: h * w,
        groups,
        eps: epsilon,
    };
    let scale_shift = scale_shift.map(|(s, h)| (flex2(s), flex2(h)));
    let params = Params {
        gamma: values(&flex(gamma)).into_owned(),
        beta: values(&flex(beta)).into_owned(),
        scale: scale_shift.as_ref().map(|(s, _)| values(s).into_owned()),
        shift: scale_shift.as_ref().map(|(_, h)| values(h).into_owned()),
    };
    let out = forward_inference(&values(&x), &params, &d, silu);
    same(Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(
        from_vec(out, [b, c, h, w]),
    )))
}

/// Sizes and ε.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    c: usize,
    hw: usize,
    groups: usize,
    eps: f64,
}

/// γ, β (`[C]`) and the scale-shift (`[B, C]` each), as values.
#[derive(Clone, Debug)]
struct Params {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    scale: Option<Vec<f32>>,
    shift: Option<Vec<f32>>,
}

impl Params {
    /// u = 1 + scale and the additive term β·u + shift of example `b`, channel `c`.
    fn u_and_offset(&self, d: &Dims, b: usize, c: usize) -> (f32, f32) {
        let u = self.scale.as_ref().map_or(1.0, |s| 1.0 + s[b * d.c + c]);
        let shift = self.shift.as_ref().map_or(0.0, |s| s[b * d.c + c]);
        (u, self.beta[c] * u + shift)
    }
}

/// x (shared, not copied), the parameters, (μ, rstd) per (example, group), σ(y) when the SiLU is
/// fused, and the sizes.
#[derive(Clone, Debug)]
struct State {
    x: FlexTensor,
    params: Params,
    stats: Stats,
    sigmoid: Option<Vec<f32>>,
    d: Dims,
}

#[derive(Debug)]
struct Affine;
#[derive(Debug)]
struct WithScaleShift;

impl Backward<Flex, 3> for Affine {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [x, gamma, beta] = ops.parents.map(|p| p.map(|node| node.id));
        register_gradients(grads, &g, &ops.state, [x, gamma, beta, None, None]);
    }
}

impl Backward<Flex, 5> for WithScaleShift {
    type State = State;

    fn backward(self, ops: Ops<State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let parents = ops.parents.map(|p| p.map(|node| node.id));
        register_gradients(grads, &g, &ops.state, parents);
    }
}

/// Computes the gradients and registers each one whose parent (x, γ, β, scale, shift) has a node.
fn register_gradients(
    grads: &mut Gradients,
    g: &FlexTensor,
    state: &State,
    [x, gamma, beta, scale, shift]: [Option<NodeId>; 5],
) {
    let got = backward(&values(g), state);
    let (b, c) = (state.d.b, state.d.c);
    let mut register = |node: Option<NodeId>, grad: FlexTensor| {
        if let Some(node) = node {
            grads.register::<Flex>(node, grad);
        }
    };
    register(x, from_vec(got.dx, dims::<4>(&state.x)));
    register(gamma, from_vec(got.dgamma, [c]));
    register(beta, from_vec(got.dbeta, [c]));
    register(scale, from_vec(got.dscale, [b, c]));
    register(shift, from_vec(got.dshift, [b, c]));
}

/// (μ, rstd) per (example, group).
type Stats = Vec<(f32, f32)>;

/// The output, (μ, rstd) per (example, group) and σ(y) when `silu`.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn forward(x: &[f32], p: &Params, d: &Dims, silu: bool) -> (Vec<f32>, Stats, Option<Vec<f32>>) {
    let cg = d.c / d.groups;
    let mut out = Vec::with_capacity(x.len());
    let mut sigmoid = silu.then(|| Vec::with_capacity(x.len()));
    let mut stats = Vec::with_capacity(d.b * d.groups);
    for b in 0..d.b {
        for g in 0..d.groups {
            let span = (b * d.c + g * cg) * d.hw..(b * d.c + (g + 1) * cg) * d.hw;
            let xs = &x[span.clone()];
            let n = xs.len() as f64;
            let mean = (lane_sum(xs, |v| v) / n) as f32;
            let var = lane_sum(xs, |v| (v - mean) * (v - mean)) / n;
            let rstd = (1.0 / (var + d.eps).sqrt()) as f32;
            stats.push((mean, rstd));
            for ci in 0..cg {
                let c = g * cg + ci;
                let (u, offset) = p.u_and_offset(d, b, c);
                let a = rstd * p.gamma[c] * u;
                let lo = span.start + ci * d.hw;
                out.extend(x[lo..lo + d.hw].iter().map(|&v| (v - mean) * a + offset));
                if let Some(sig) = &mut sigmoid {
                    sig.extend(out[lo..].iter().map(|&y| crate::cpu_ops::sigmoid(y)));
                    for (y, s) in out[lo..].iter_mut().zip(&sig[lo..]) {
                        *y *= s;
                    }
                }
            }
        }
    }
    (out, stats, sigmoid)
}

/// The output alone, examples in parallel over rayon's threads.
fn forward_inference(x: &[f32], p: &Params, d: &Dims, silu: bool) -> Vec<f32> {
    use rayon::prelude::*;
    let chw = d.c * d.hw;
    let mut out = vec![0.0; x.len()];
    out.par_chunks_exact_mut(chw)
        .zip(x.par_chunks_exact(chw))
        .enumerate()
        .for_each(|(b, (out_b, x_b))| normalize_example(x_b, p, d, silu, b, out_b));
    out
}

/// Example `b`'s output (`[C, H·W]`) of its input `x_b`.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn normalize_example(x_b: &[f32], p: &Params, d: &Dims, silu: bool, b: usize, out_b: &mut [f32]) {
    let cg = d.c / d.groups;
    let planes = out_b.chunks_exact_mut(d.hw).zip(x_b.chunks_exact(d.hw));
    let mut stats = (0.0, 0.0);
    for (c, (out_c, x_c)) in planes.enumerate() {
        if c % cg == 0 {
            let xs = &x_b[c * d.hw..(c + cg) * d.hw];
            let n = xs.len() as f64;
            let mean = (lane_sum(xs, |v| v) / n) as f32;
            let var = lane_sum(xs, |v| (v - mean) * (v - mean)) / n;
            stats = (mean, (1.0 / (var + d.eps).sqrt()) as f32);
        }
        let (mean, rstd) = stats;
        let (u, offset) = p.u_and_offset(d, b, c);
        let a = rstd * p.gamma[c] * u;
        let ys = out_c.iter_mut().zip(x_c);
        if silu {
            ys.for_each(|(o, &v)| {
                let y = (v - mean) * a + offset;
                *o = y * crate::cpu_ops::sigmoid(y);
            });
        } else {
            ys.for_each(|(o, &v)| *o = (v - mean) * a + offset);
        }
    }
}

/// Σ f(v) over `xs`, in 16 f32 lanes (vectorised; each lane sums ≤ 1/16 of the values) added
/// up in f64.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + f64::from(tail)
}

/// The gradients of every input.
struct Grads {
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    dscale: Vec<f32>,
    dshift: Vec<f32>,
}

/// The gradients given g = ∂L/∂out.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn backward(g: &[f32], s: &State) -> Grads {
    let (d, p) = (&s.d, &s.params);
    let x = values(&s.x);
    let cg = d.c / d.groups;
    let mut out = Grads {
        dx: vec![0.0; x.len()],
        dgamma: vec![0.0; d.c],
        dbeta: vec![0.0; d.c],
        dscale: vec![0.0; d.b * d.c],
        dshift: vec![0.0; d.b * d.c],
    };
    let mut gy = vec![0.0f32; cg * d.hw];
    for b in 0..d.b {
        for grp in 0..d.groups {
            let (mean, rstd) = s.stats[b * d.groups + grp];
            let lo = (b * d.c + grp * cg) * d.hw;
            // Σ dx̂ and Σ dx̂·x̂ over the group.
            let (mut sum_dxh, mut sum_dxh_xh) = (0.0f64, 0.0f64);
            for ci in 0..cg {
                let c = grp * cg + ci;
                let (u, offset) = p.u_and_offset(d, b, c);
                let a = rstd * p.gamma[c] * u;
                let at = lo + ci * d.hw;
                let gy_c = &mut gy[ci * d.hw..(ci + 1) * d.hw];
                let (xs, gs) = (&x[at..at + d.hw], &g[at..at + d.hw]);
                match &s.sigmoid {
                    Some(sig) => {
                        for ((o, (&xv, &gv)), &sv) in gy_c
                            .iter_mut()
                            .zip(xs.iter().zip(gs))
                            .zip(&sig[at..at + d.hw])
                        {
                            let y = (xv - mean) * a + offset;
                            *o = gv * sv * (1.0 + y * (1.0 - sv));
                        }
                    }
                    None => gy_c.copy_from_slice(gs),
                }
                let (mut s_gy, mut s_gy_xh) = (0.0f32, 0.0f32);
                for (&gv, &xv) in gy_c.iter().zip(xs) {
                    s_gy += gv;
                    s_gy_xh += gv * (xv - mean) * rstd;
                }
                out.dgamma[c] += s_gy_xh * u;
                out.dbeta[c] += s_gy * u;
                out.dscale[b * d.c + c] = s_gy_xh * p.gamma[c] + s_gy * p.beta[c];
                out.dshift[b * d.c + c] = s_gy;
                let k = p.gamma[c] * u;
                sum_dxh += f64::from(s_gy * k);
                sum_dxh_xh += f64::from(s_gy_xh * k);
            }
            let n = (cg * d.hw) as f64;
            let (m1, m2) = ((sum_dxh / n) as f32, (sum_dxh_xh / n) as f32);
            for ci in 0..cg {
                let c = grp * cg + ci;
                let (u, _) = p.u_and_offset(d, b, c);
                let k = p.gamma[c] * u;
                let at = lo + ci * d.hw;
                let gy_c = &gy[ci * d.hw..(ci + 1) * d.hw];
                for ((o, &gv), &xv) in out.dx[at..at + d.hw]
                    .iter_mut()
                    .zip(gy_c)
                    .zip(&x[at..at + d.hw])
                {
                    let xh = (xv - mean) * rstd;
                    *o = rstd * (gv * k - m1 - xh * m2);
                }
            }
        }
    }
    out
}
