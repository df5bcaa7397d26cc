//! The attention core of GLIDE's `QKVAttentionLegacy` (softmax(qᵀk·scale²), then the weighted
//! values) as one op with its own backward on the CPU training backend (`Autodiff<Flex>`).
//!
//! Through burn's ops the core is a narrow, two concatenations, two scalings, a transposed
//! matmul, a softmax (exp, sum, divide, whose backward computes exp again) and a matmul, each
//! recorded with its backward and most of them copying through flex's strided iterator. Here, per
//! row i of the batch·heads axis, with k and v the text's keys/values followed by the pixels':
//!
//! - forward: P_i = softmax(scale²·q_iᵀ·k_i) (`[T, S]`, kept for the backward), a_i = v_i·P_iᵀ;
//! - backward, given g_i = ∂L/∂a_i: dP = g_iᵀ·v_i, dv_i = g_i·P_i,
//!   dZ = P ⊙ (dP − rowsum(dP ⊙ P)), dq_i = scale²·k_i·dZᵀ, dk_i = scale²·q_i·dZ,
//!
//! five GEMMs and one pass over P. Equal to burn's ops to rounding (tested in `attention.rs`).
//! `GLIDE_ATTENTION_BACKWARD=burn` in the environment keeps burn's ops (benchmarks).

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::cpu_ops::{
    Ad, dims, enabled, from_vec, gemm, gemm_scaled, is_cpu_inference, is_cpu_training, mat, mat_t,
    same, values,
};

/// Whether `qkv` takes this path (see the module docs).
pub(crate) fn applies<B: Backend>(qkv: &Tensor<B, 3>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_ATTENTION_BACKWARD") && is_cpu_training(qkv)
}

/// Whether `qkv` takes the inference path [`qkv_attention_inference`]: `Flex`, f32.
pub(crate) fn applies_inference<B: Backend>(qkv: &Tensor<B, 3>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_ATTENTION_BACKWARD") && is_cpu_inference(qkv)
}

/// [`qkv_attention`] for inference on `Flex`: the same forward, rows in parallel, nothing kept.
/// Call only where [`applies_inference`] is true.
///
/// # Shapes
/// - as [`qkv_attention`]
pub(crate) fn qkv_attention_inference<B: Backend>(
    qkv: Tensor<B, 3>,
    ekv: Option<Tensor<B, 3>>,
) -> Tensor<B, 3> {
    let qkv = same::<_, Tensor<Flex, 3>>(qkv).into_primitive().tensor();
    let ekv = ekv.map(|e| same::<_, Tensor<Flex, 3>>(e).into_primitive().tensor());
    let [bh, ch3, t] = dims(&qkv);
    let l = ekv.as_ref().map_or(0, |e| dims::<3>(e)[2]);
    let d = Dims {
        bh,
        ch: ch3 / 3,
        t,
        l,
    };
    let ekv_v = ekv.as_ref().map(values);
    let out = forward_inference(&values(&qkv), ekv_v.as_deref(), &d);
    let out = from_vec(out, [bh, d.ch, t]);
    same(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(
        out,
    )))
}

/// The attention of `qkv` (`[B·heads, 3·ch, T]`, per head [q | k | v]) over the pixels and, when
/// given, the text's keys and values `ekv` (`[B·heads, 2·ch, L]`, [k | v], placed before the
/// pixels'). Call only where [`applies`] is true.
///
/// # Shapes
/// - qkv: `[BH, 3·ch, T]`, ekv: `[BH, 2·ch, L]` → `[BH, ch, T]`
pub(crate) fn qkv_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    ekv: Option<Tensor<B, 3>>,
) -> Tensor<B, 3> {
    let qkv = same::<_, Tensor<Ad, 3>>(qkv).into_primitive().tensor();
    let ekv = ekv.map(|e| same::<_, Tensor<Ad, 3>>(e).into_primitive().tensor());
    let [bh, ch3, t] = dims(&qkv.primitive);
    let l = ekv.as_ref().map_or(0, |e| dims::<3>(&e.primitive)[2]);
    let d = Dims {
        bh,
        ch: ch3 / 3,
        t,
        l,
    };
    let (out, probs) = {
        let qkv_v = values(&qkv.primitive);
        let ekv_v = ekv.as_ref().map(|e| values(&e.primitive));
        forward(&qkv_v, ekv_v.as_deref(), &d)
    };
    let out = from_vec(out, [bh, d.ch, t]);
    let out = match ekv {
        Some(ekv) => {
            let state = State {
                qkv: qkv.primitive.clone(),
                ekv: Some(ekv.primitive.clone()),
                probs,
                d,
            };
            match WithText
                .prepare::<NoCheckpointing>([qkv.node, ekv.node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }
        None => {
            let state = State {
                qkv: qkv.primitive.clone(),
                ekv: None,
                probs,
                d,
            };
            match PixelsOnly
                .prepare::<NoCheckpointing>([qkv.node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }
    };
    same(Tensor::<Ad, 3>::from_primitive(TensorPrimitive::Float(out)))
}

/// Sizes: rows (batch·heads), channels per head, pixels, text tokens (0 without text).
#[derive(Clone, Copy, Debug)]
struct Dims {
    bh: usize,
    ch: usize,
    t: usize,
    l: usize,
}

impl Dims {
    /// Keys per query: text tokens and pixels.
    fn s(&self) -> usize {
        self.l + self.t
    }
    /// scale² of `QKVAttentionLegacy` (q and k are each scaled by ch^(−1/4)).
    fn scale2(&self) -> f32 {
        (1.0 / (self.ch as f64).sqrt()) as f32
    }
}

/// The inputs (shared, not copied), the softmax output P (`[BH, T, S]`) and the sizes.
#[derive(Clone, Debug)]
struct State {
    qkv: FlexTensor,
    ekv: Option<FlexTensor>,
    probs: Vec<f32>,
    d: Dims,
}

#[derive(Debug)]
struct WithText;
#[derive(Debug)]
struct PixelsOnly;

impl Backward<Flex, 2> for WithText {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [qkv, ekv] = ops.parents.map(|p| p.map(|node| node.id));
        let (dqkv, dekv) = backward(&values(&g), &ops.state);
        let d = ops.state.d;
        if let Some(node) = qkv {
            grads.register::<Flex>(node, from_vec(dqkv, [d.bh, 3 * d.ch, d.t]));
        }
        if let Some(node) = ekv {
            grads.register::<Flex>(node, from_vec(dekv, [d.bh, 2 * d.ch, d.l]));
        }
    }
}

impl Backward<Flex, 1> for PixelsOnly {
    type State = State;

    fn backward(self, ops: Ops<State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [Some(qkv)] = ops.parents.map(|p| p.map(|node| node.id)) else {
            return;
        };
        let (dqkv, _) = backward(&values(&g), &ops.state);
        let d = ops.state.d;
        grads.register::<Flex>(qkv, from_vec(dqkv, [d.bh, 3 * d.ch, d.t]));
    }
}

/// Row i's q (`[ch, T]`) and its keys and values (`[ch, S]` each, text first), contiguous.
fn gather(qkv: &[f32], ekv: Option<&[f32]>, d: &Dims, i: usize, k: &mut [f32], v: &mut [f32]) {
    let (ch, t, l, s) = (d.ch, d.t, d.l, d.s());
    let row = &qkv[i * 3 * ch * t..(i + 1) * 3 * ch * t];
    for c in 0..ch {
        if let Some(ekv) = ekv {
            let text = &ekv[i * 2 * ch * l..(i + 1) * 2 * ch * l];
            k[c * s..c * s + l].copy_from_slice(&text[c * l..(c + 1) * l]);
            v[c * s..c * s + l].copy_from_slice(&text[(ch + c) * l..(ch + c + 1) * l]);
        }
        k[c * s + l..(c + 1) * s].copy_from_slice(&row[(ch + c) * t..(ch + c + 1) * t]);
        v[c * s + l..(c + 1) * s].copy_from_slice(&row[(2 * ch + c) * t..(2 * ch + c + 1) * t]);
    }
}

/// The output (`[BH, ch, T]`) and the softmax output P (`[BH, T, S]`).
fn forward(qkv: &[f32], ekv: Option<&[f32]>, d: &Dims) -> (Vec<f32>, Vec<f32>) {
    let (ch, t, s) = (d.ch, d.t, d.s());
    let mut out = vec![0.0; d.bh * ch * t];
    let mut probs = vec![0.0; d.bh * t * s];
    let (mut k, mut v) = (vec![0.0; ch * s], vec![0.0; ch * s]);
    for (i, (out_i, p)) in out
        .chunks_exact_mut(ch * t)
        .zip(probs.chunks_exact_mut(t * s))
        .enumerate()
    {
        forward_row(qkv, ekv, d, i, (&mut k, &mut v), p, out_i);
    }
    (out, probs)
}

/// The output alone (`[BH, ch, T]`), for inference: the rows in parallel over rayon's threads.
fn forward_inference(qkv: &[f32], ekv: Option<&[f32]>, d: &Dims) -> Vec<f32> {
    use rayon::prelude::*;
    let (ch, t, s) = (d.ch, d.t, d.s());
    let mut out = vec![0.0; d.bh * ch * t];
    let scratch = || (vec![0.0; ch * s], vec![0.0; ch * s], vec![0.0; t * s]);
    out.par_chunks_exact_mut(ch * t)
        .enumerate()
        .for_each_init(scratch, |(k, v, p), (i, out_i)| {
            forward_row(qkv, ekv, d, i, (k, v), p, out_i)
        });
    out
}

/// Row i: P_i (`[T, S]`) into `p` and the output (`[ch, T]`) into `out_i`; `k` and `v` take its keys
/// and values.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn forward_row(
    qkv: &[f32],
    ekv: Option<&[f32]>,
    d: &Dims,
    i: usize,
    (k, v): (&mut [f32], &mut [f32]),
    p: &mut [f32],
    out_i: &mut [f32],
) {
    let (ch, t, s) = (d.ch, d.t, d.s());
    gather(qkv, ekv, d, i, k, v);
    let q = &qkv[i * 3 * ch * t..i * 3 * ch * t + ch * t];
    gemm_scaled(p, (t, s, ch), mat_t(q, t), mat(k, s), false, d.scale2());
    for row in p.chunks_exact_mut(s) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut()
            .for_each(|z| *z = crate::cpu_ops::exp(*z - max));
        let inv = 1.0 / row.iter().sum::<f32>();
        row.iter_mut().for_each(|z| *z *= inv);
    }
    gemm(out_i, (ch, t, s), mat(v, s), mat_t(p, s), false);
}

/// (∂L/∂qkv, ∂L/∂ekv) given g = ∂L/∂out (`[BH, ch, T]`).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn backward(g: &[f32], state: &State) -> (Vec<f32>, Vec<f32>) {
    let d = &state.d;
    let (ch, t, l, s) = (d.ch, d.t, d.l, d.s());
    let qkv = values(&state.qkv);
    let ekv = state.ekv.as_ref().map(values);
    let mut dqkv = vec![0.0; d.bh * 3 * ch * t];
    let mut dekv = vec![0.0; d.bh * 2 * ch * l];
    let (mut k, mut v) = (vec![0.0; ch * s], vec![0.0; ch * s]);
    let (mut dk, mut dv) = (vec![0.0; ch * s], vec![0.0; ch * s]);
    let mut dz = vec![0.0; t * s];
    for i in 0..d.bh {
        gather(&qkv, ekv.as_deref(), d, i, &mut k, &mut v);
        let q = &qkv[i * 3 * ch * t..i * 3 * ch * t + ch * t];
        let p = &state.probs[i * t * s..(i + 1) * t * s];
        let g_i = &g[i * ch * t..(i + 1) * ch * t];
        gemm(&mut dz, (t, s, ch), mat_t(g_i, t), mat(&v, s), false); // dP
        gemm(&mut dv, (ch, s, t), mat(g_i, t), mat(p, s), false);
        for (dz_row, p_row) in dz.chunks_exact_mut(s).zip(p.chunks_exact(s)) {
            let dot: f32 = dz_row.iter().zip(p_row).map(|(a, b)| a * b).sum();
            for (z, &pr) in dz_row.iter_mut().zip(p_row) {
                *z = pr * (*z - dot);
            }
        }
        let dqkv_i = &mut dqkv[i * 3 * ch * t..(i + 1) * 3 * ch * t];
        let (dq, rest) = dqkv_i.split_at_mut(ch * t);
        gemm_scaled(dq, (ch, t, s), mat(&k, s), mat_t(&dz, s), false, d.scale2());
        gemm_scaled(
            &mut dk,
            (ch, s, t),
            mat(q, t),
            mat(&dz, s),
            false,
            d.scale2(),
        );
        let (dk_px, dv_px) = rest.split_at_mut(ch * t);
        for c in 0..ch {
            dk_px[c * t..(c + 1) * t].copy_from_slice(&dk[c * s + l..(c + 1) * s]);
            dv_px[c * t..(c + 1) * t].copy_from_slice(&dv[c * s + l..(c + 1) * s]);
            if l > 0 {
                let text = &mut dekv[i * 2 * ch * l..(i + 1) * 2 * ch * l];
                text[c * l..(c + 1) * l].copy_from_slice(&dk[c * s..c * s + l]);
                text[(ch + c) * l..(ch + c + 1) * l].copy_from_slice(&dv[c * s..c * s + l]);
            }
        }
    }
    (dqkv, dekv)
}
