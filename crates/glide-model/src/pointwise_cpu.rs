//! A pointwise `Conv1d` (kernel 1: `W · x_n + b` for every example n) as one op with its own
//! backward on the CPU (`Autodiff<Flex>`, and its forward alone on `Flex`): the attention's
//! `qkv`, `encoder_kv` and `proj_out`.
//!
//! As burn's ops it was a broadcast matmul (`[1, O, C] × [N, C, T]`) and a broadcast bias add;
//! their backward reduces over the broadcast axes, and the gradient reaching x came back strided,
//! so the ops after it copied it through flex's strided iterator. Here, per example n, with
//! g_n = ∂L/∂out_n:
//!
//! - forward: out_n = W·x_n + b (`[O, C] × [C, T]`);
//! - backward: dx_n = Wᵀ·g_n, dW = Σ_n g_n·x_nᵀ, db = Σ_{n,t} g_n,
//!
//! every result contiguous. Equal to burn's `Conv1d` to rounding (tested in `conv.rs`).
//! `GLIDE_CONV_BACKWARD=burn` keeps burn's ops, as for the other convolutions.

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
    Ad, dims, enabled, from_vec, gemm, is_cpu_inference, is_cpu_training, mat, mat_t, same, values,
};

/// Whether `x` takes this op: f32 on `Flex` or `Autodiff<Flex>`.
pub(crate) fn applies<B: Backend>(x: &Tensor<B, 3>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_CONV_BACKWARD") && (is_cpu_training(x) || is_cpu_inference(x))
}

/// `W · x_n + b` for every example; call only where [`applies`] is true.
///
/// # Shapes
/// - x: `[N, C, T]`, weight: `[O, C, 1]`, bias: `[O]` → `[N, O, T]`
pub(crate) fn conv1d<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 3>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 3> {
    if is_cpu_inference(&x) {
        let flex = |t: Tensor<B, 3>| same::<_, Tensor<Flex, 3>>(t).into_primitive().tensor();
        let (x, weight) = (flex(x), flex(weight));
        let bias = bias.map(|b| same::<_, Tensor<Flex, 1>>(b).into_primitive().tensor());
        let d = Dims::of(&x, &weight);
        let b = bias.as_ref().map(values);
        let out = forward(&values(&x), &values(&weight), b.as_deref(), &d);
        let out = from_vec(out, [d.n, d.o, d.t]);
        return same(Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(
            out,
        )));
    }
    let ad = |t: Tensor<B, 3>| same::<_, Tensor<Ad, 3>>(t).into_primitive().tensor();
    let (x, weight) = (ad(x), ad(weight));
    let bias = bias.map(|b| same::<_, Tensor<Ad, 1>>(b).into_primitive().tensor());
    let d = Dims::of(&x.primitive, &weight.primitive);
    let b = bias.as_ref().map(|b| values(&b.primitive));
    let out = forward(
        &values(&x.primitive),
        &values(&weight.primitive),
        b.as_deref(),
        &d,
    );
    let out = from_vec(out, [d.n, d.o, d.t]);
    let state = State {
        x: x.primitive.clone(),
        weight: weight.primitive.clone(),
        d,
    };
    let out = match &bias {
        Some(bias) => match Pointwise
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
        None => match PointwiseNoBias
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    };
    same(Tensor::<Ad, 3>::from_primitive(TensorPrimitive::Float(out)))
}

/// The sizes: examples, input and output channels, positions.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    c: usize,
    o: usize,
    t: usize,
}

impl Dims {
    fn of(x: &FlexTensor, weight: &FlexTensor) -> Self {
        let [n, c, t] = dims(x);
        let [o, wc, k] = dims(weight);
        assert!(
            wc == c && k == 1,
            "a pointwise conv1d's weight is [O, C, 1]"
        );
        Self { n, c, o, t }
    }
}

/// What the backward keeps: x and the weight (flex tensors share their buffers).
#[derive(Clone, Debug)]
struct State {
    x: FlexTensor,
    weight: FlexTensor,
    d: Dims,
}

#[derive(Debug)]
struct Pointwise;
#[derive(Debug)]
struct PointwiseNoBias;

impl Backward<Flex, 3> for Pointwise {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let parents = ops.parents.map(|p| p.map(|node| node.id));
        register_gradients(grads, &g, &ops.state, parents);
    }
}

impl Backward<Flex, 2> for PointwiseNoBias {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|node| node.id));
        register_gradients(grads, &g, &ops.state, [x, w, None]);
    }
}

/// out (`[N, O, T]`) = W·x_n + b per example.
fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, d: &Dims) -> Vec<f32> {
    let mut out = vec![0.0; d.n * d.o * d.t];
    for (out_n, x_n) in out
        .chunks_exact_mut(d.o * d.t)
        .zip(x.chunks_exact(d.c * d.t))
    {
        gemm(out_n, (d.o, d.t, d.c), mat(w, d.c), mat(x_n, d.t), false);
        if let Some(b) = b {
            for (row, &bias) in out_n.chunks_exact_mut(d.t).zip(b) {
                row.iter_mut().for_each(|v| *v += bias);
            }
        }
    }
    out
}

/// Computes and registers the gradient of each parent (x, weight, bias) that needs one.
fn register_gradients(
    grads: &mut Gradients,
    g: &FlexTensor,
    state: &State,
    [x, w, b]: [Option<NodeId>; 3],
) {
    let d = state.d;
    let g = values(g);
    assert_eq!(g.len(), d.n * d.o * d.t, "output gradient of another shape");
    let (ot, ct) = (d.o * d.t, d.c * d.t);
    if let Some(node) = x {
        let weight = values(&state.weight);
        let mut dx = vec![0.0; d.n * ct];
        for (dx_n, g_n) in dx.chunks_exact_mut(ct).zip(g.chunks_exact(ot)) {
            gemm(
                dx_n,
                (d.c, d.t, d.o),
                mat_t(&weight, d.c),
                mat(g_n, d.t),
                false,
            );
        }
        grads.register::<Flex>(node, from_vec(dx, [d.n, d.c, d.t]));
    }
    if let Some(node) = w {
        let xs = values(&state.x);
        let mut dw = vec![0.0; d.o * d.c];
        for (n, (g_n, x_n)) in g.chunks_exact(ot).zip(xs.chunks_exact(ct)).enumerate() {
            gemm(
                &mut dw,
                (d.o, d.c, d.t),
                mat(g_n, d.t),
                mat_t(x_n, d.t),
                n > 0,
            );
        }
        grads.register::<Flex>(node, from_vec(dw, [d.o, d.c, 1]));
    }
    if let Some(node) = b {
        let mut db = vec![0.0f32; d.o];
        for (i, row) in g.chunks_exact(d.t).enumerate() {
            db[i % d.o] += row.iter().sum::<f32>();
        }
        grads.register::<Flex>(node, from_vec(db, [d.o]));
    }
}
