//! A K×K, stride-1 convolution on the CPU training backend (`Autodiff<Flex>`) as im2col + GEMM,
//! forward and backward, the way PyTorch's CPU convolution computes it.
//!
//! burn 0.21 runs every backend's conv2d backward through a generic path (dX as a
//! `conv_transpose2d`, dW as a `conv2d` on dim-swapped copies with a kernel the size of the
//! image) that was ~38% of a training step on flex; flex's own forward converts to NHWC and back
//! around its GEMM at every call. Here, per image n, with the patch matrix in "patch rows" layout
//! (colᵀ_n = im2col(x_n), `[H·W, K·K·C]`, columns ordered (ky, kx, c) so that each patch is K·K
//! contiguous runs of C channels of the NHWC image) and the weight permuted alike (W′, `[O, K·K·C]`):
//!
//! - forward: outᵀ_n = colᵀ_n · W′ᵀ (`[H·W, K·K·C] × [K·K·C, O]`), transposed into NCHW, + b;
//! - dW′ = Σ_n g_n · colᵀ_n (`[O, H·W] × [H·W, K·K·C]`), the patch rows made again from x;
//! - dX_n = col2im(W′ᵀ · g_n) (`[K·K·C, O] × [O, H·W]`, then the K·K shifted windows added back);
//! - db = Σ_{n, y, x} g.
//!
//! These operand layouts are the ones gemm runs fastest here (its packing of a transposed operand
//! cost up to 3× in the weight gradient). The patch rows of one image at a time live in a
//! per-thread scratch buffer that stays allocated (and in cache) between calls: keeping every
//! image's patch rows for the backward instead cost more in allocation and page faults
//! (~12% of a step) than making them again. Only gradients that a parent needs are computed (the
//! UNet's first convolution never computes dX). Forward numbers equal `burn::nn::conv::Conv2d`'s
//! to rounding (another summation order). `GLIDE_CONV_BACKWARD=burn` in the environment keeps
//! burn's paths (for benchmarks).

use std::mem::MaybeUninit;
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
    Ad, Parallelism, View, dims, enabled, from_vec, gemm, gemm_par, is_cpu_inference,
    is_cpu_training, same, values,
};

/// Whether `x` (of backend `B`) takes this path: `B` is `Autodiff<Flex>`, x is f32 and the
/// environment does not ask for burn's generic convolution.
pub(crate) fn applies<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_CONV_BACKWARD") && is_cpu_training(x)
}

/// A K×K convolution with stride 1 and padding `padding` on every side, as im2col + GEMM
/// forward and backward. Call only where [`applies`] is true.
///
/// # Shapes
/// - x: `[N, C, H, W]`, weight: `[O, C, K, K]`, bias: `[O]` → `[N, O, H + 2p − K + 1, …]`
pub(crate) fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    padding: usize,
) -> Tensor<B, 4> {
    let x = same::<_, Tensor<Ad, 4>>(x).into_primitive().tensor();
    let weight = same::<_, Tensor<Ad, 4>>(weight).into_primitive().tensor();
    let bias = bias.map(|b| same::<_, Tensor<Ad, 1>>(b).into_primitive().tensor());
    let [n, c, h, w] = dims(&x.primitive);
    let [o, _, k, _] = dims(&weight.primitive);
    let d = Dims {
        n,
        c,
        o,
        h,
        w,
        k,
        p: padding,
    };
    let w_perm = permute_weight(&values(&weight.primitive), &d);
    let b = bias.as_ref().map(|b| values(&b.primitive).into_owned());
    let (out, nhwc) = forward(&values(&x.primitive), &w_perm, b.as_deref(), &d);
    let out = from_vec(out, [n, o, d.out().0, d.out().1]);
    let state = State {
        nhwc,
        weight: weight.primitive.clone(),
        d,
    };
    let out = match &bias {
        Some(bias) => match ConvIm2col
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
        None => match ConvIm2colNoBias
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    };
    same(Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(out)))
}

/// Whether `x` (of backend `B`) takes the inference path [`conv2d_inference`]: `B` is `Flex`
/// (no autodiff), x is f32 and the environment does not ask for flex's own convolution.
pub(crate) fn applies_inference<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_CONV_BACKWARD") && is_cpu_inference(x)
}

/// [`conv2d`] for inference on `Flex`: the same forward, images in parallel, nothing kept.
/// Call only where [`applies_inference`] is true.
///
/// # Shapes
/// - as [`conv2d`]
pub(crate) fn conv2d_inference<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    padding: usize,
) -> Tensor<B, 4> {
    let x = same::<_, Tensor<Flex, 4>>(x).into_primitive().tensor();
    let weight = same::<_, Tensor<Flex, 4>>(weight).into_primitive().tensor();
    let bias = bias.map(|b| same::<_, Tensor<Flex, 1>>(b).into_primitive().tensor());
    let [n, c, h, w] = dims(&x);
    let [o, _, k, _] = dims(&weight);
    let d = Dims {
        n,
        c,
        o,
        h,
        w,
        k,
        p: padding,
    };
    let b = bias.as_ref().map(values);
    let out = forward_inference(&values(&x), &values(&weight), b.as_deref(), &d);
    let out = from_vec(out, [n, o, d.out().0, d.out().1]);
    same(Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(
        out,
    )))
}

#[derive(Debug)]
struct ConvIm2col;
#[derive(Debug)]
struct ConvIm2colNoBias;

/// What the backward pass keeps: the input in NHWC layout (`[N, H, W, C]`, made by the forward),
/// the weight (`[O, C, K, K]`, as stored) and the sizes.
#[derive(Clone, Debug)]
struct State {
    nhwc: Vec<f32>,
    weight: FlexTensor,
    d: Dims,
}

impl Backward<Flex, 3> for ConvIm2col {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let parents = ops.parents.map(|p| p.map(|node| node.id));
        register_gradients(grads, g, ops.state, parents);
    }
}

impl Backward<Flex, 2> for ConvIm2colNoBias {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|node| node.id));
        register_gradients(grads, g, ops.state, [x, w, None]);
    }
}

/// Computes and registers the gradient of each parent (x, weight, bias) that needs one.
fn register_gradients(
    grads: &mut Gradients,
    g: FlexTensor,
    state: State,
    parents: [Option<NodeId>; 3],
) {
    let d = state.d;
    let g = values(&g);
    let (oh, ow) = d.out();
    assert_eq!(
        g.len(),
        d.n * d.o * oh * ow,
        "output gradient of another shape"
    );
    let [x, w, b] = parents;
    if let Some(node) = x {
        let dx = input_grad(&values(&state.weight), &g, &d);
        grads.register::<Flex>(node, from_vec(dx, [d.n, d.c, d.h, d.w]));
    }
    if let Some(node) = w {
        let dw = weight_grad(&state.nhwc, &g, &d);
        grads.register::<Flex>(node, from_vec(dw, [d.o, d.c, d.k, d.k]));
    }
    if let Some(node) = b {
        grads.register::<Flex>(node, from_vec(bias_grad(&g, &d), [d.o]));
    }
}

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    k: usize,
    p: usize,
}

impl Dims {
    /// Output height and width.
    fn out(&self) -> (usize, usize) {
        (
            self.h + 2 * self.p + 1 - self.k,
            self.w + 2 * self.p + 1 - self.k,
        )
    }
    /// Columns of a patch row (K·K·C).
    fn kkc(&self) -> usize {
        self.c * self.k * self.k
    }
}

/// Per-thread buffers for one image at a time: its patch rows (or their gradient) and the
/// transposed output.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    out_t: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The first `len` elements of `v`, grown (never shrunk) to hold them.
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// The convolution's output (`[N, O, OH, OW]`) and the input in NHWC layout (`[N, H, W, C]`),
/// both row-major.
///
/// Both are written once, by [`transpose`], into memory that was never zeroed (zeroing them
/// first was ~2% of a training step).
fn forward(x: &[f32], w_perm: &[f32], b: Option<&[f32]>, d: &Dims) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = d.out();
    let chw = d.c * d.h * d.w;
    let (out_len, nhwc_len) = (d.n * d.o * oh * ow, d.n * chw);
    let mut out = Vec::with_capacity(out_len);
    let mut nhwc = Vec::with_capacity(nhwc_len);
    SCRATCH.with_borrow_mut(|s| {
        for ((out_n, nhwc_n), x_n) in out.spare_capacity_mut()[..out_len]
            .chunks_exact_mut(d.o * oh * ow)
            .zip(nhwc.spare_capacity_mut()[..nhwc_len].chunks_exact_mut(chw))
            .zip(x.chunks_exact(chw))
        {
            forward_image(x_n, w_perm, b, d, nhwc_n, s, out_n);
        }
    });
    // SAFETY: `forward_image` wrote every element of each image's chunk of both (its transposes
    // write all rows·cols values of their destination), and the chunks cover both lengths.
    unsafe {
        out.set_len(out_len);
        nhwc.set_len(nhwc_len);
    }
    (out, nhwc)
}

/// The convolution's output (`[N, O, OH, OW]`) without anything kept for a backward pass, for
/// inference: the images in parallel over rayon's threads (each GEMM on all of them when there
/// are fewer images than threads). Here the GEMM is out_n = W · col_n (`[O, C·K·K] ×
/// [C·K·K, OH·OW]`) with the weight as it is stored and the output written in NCHW directly, so
/// neither the weight nor the image is transposed; the patch matrix's rows are shifted copies of
/// image rows.
fn forward_inference(x: &[f32], w: &[f32], b: Option<&[f32]>, d: &Dims) -> Vec<f32> {
    let (oh, ow) = d.out();
    let (chw, ohw, kkc) = (d.c * d.h * d.w, oh * ow, d.kkc());
    let mut out = vec![0.0; d.n * d.o * ohw];
    let image = |(out_n, x_n): (&mut [f32], &[f32]), par: Parallelism| {
        SCRATCH.with_borrow_mut(|s| {
            let col = sized(&mut s.col, kkc * ohw);
            im2col_planes(x_n, d, col);
            let w = View {
                data: w,
                row_stride: kkc,
                col_stride: 1,
            };
            let col = View {
                data: col,
                row_stride: ohw,
                col_stride: 1,
            };
            gemm_par(out_n, (d.o, ohw, kkc), w, col, false, par);
        });
        if let Some(b) = b {
            for (plane, &bias) in out_n.chunks_exact_mut(ohw).zip(b) {
                plane.iter_mut().for_each(|v| *v += bias);
            }
        }
    };
    let threads = rayon::current_num_threads();
    if d.n >= threads {
        use rayon::prelude::*;
        out.par_chunks_exact_mut(d.o * ohw)
            .zip(x.par_chunks_exact(chw))
            .for_each(|pair| image(pair, Parallelism::None));
    } else {
        let par = Parallelism::Rayon(threads);
        out.chunks_exact_mut(d.o * ohw)
            .zip(x.chunks_exact(chw))
            .for_each(|pair| image(pair, par));
    }
    out
}

/// col[(c·K + ky)·K + kx][y·OW + x] = x[c][y + ky − p][x + kx − p] (0 outside the image), from
/// the NCHW image: each output row of a patch-matrix row is one shifted run of an image row.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn im2col_planes(x: &[f32], d: &Dims, col: &mut [f32]) {
    let (oh, ow) = d.out();
    let mut rows = col.chunks_exact_mut(oh * ow);
    for plane in x.chunks_exact(d.h * d.w) {
        for ky in 0..d.k {
            for kx in 0..d.k {
                let row = rows.next().expect("C·K·K rows");
                let xs = valid(kx, d.p, d.w, ow);
                for (y, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = (y + ky).wrapping_sub(d.p);
                    if iy >= d.h || xs.is_empty() {
                        dst.fill(0.0);
                        continue;
                    }
                    dst[..xs.start].fill(0.0);
                    dst[xs.end..].fill(0.0);
                    let src = iy * d.w + xs.start + kx - d.p;
                    dst[xs.clone()].copy_from_slice(&plane[src..src + xs.len()]);
                }
            }
        }
    }
}

/// One image: x_n (`[C, H, W]`) → out_n (`[O, OH, OW]`), leaving its NHWC copy in `nhwc_n`;
/// every element of both is written.
fn forward_image(
    x_n: &[f32],
    w_perm: &[f32],
    b: Option<&[f32]>,
    d: &Dims,
    nhwc_n: &mut [MaybeUninit<f32>],
    s: &mut Scratch,
    out_n: &mut [MaybeUninit<f32>],
) {
    let (oh, ow) = d.out();
    let (kkc, hw) = (d.kkc(), oh * ow);
    transpose(x_n, d.c, d.h * d.w, nhwc_n, None);
    // SAFETY: the transpose wrote all C·H·W values.
    let nhwc_n: &[f32] = unsafe { &*(nhwc_n as *const [MaybeUninit<f32>] as *const [f32]) };
    im2col_rows(nhwc_n, d, sized(&mut s.col, hw * kkc));
    let lhs = View {
        data: &s.col[..hw * kkc],
        row_stride: kkc,
        col_stride: 1,
    };
    let w_t = View {
        data: w_perm,
        row_stride: 1,
        col_stride: kkc,
    };
    let out_t = sized(&mut s.out_t, hw * d.o);
    gemm(out_t, (hw, d.o, kkc), lhs, w_t, false);
    transpose(out_t, hw, d.o, out_n, b);
}

/// W′[o][(ky·K + kx)·C + c] = W[o][c][ky][kx].
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn permute_weight(w: &[f32], d: &Dims) -> Vec<f32> {
    let kk = d.k * d.k;
    let mut out = vec![0.0; d.o * d.kkc()];
    for (dst, src) in out.chunks_exact_mut(d.kkc()).zip(w.chunks_exact(d.kkc())) {
        for c in 0..d.c {
            for r in 0..kk {
                dst[r * d.c + c] = src[c * kk + r];
            }
        }
    }
    out
}

/// The inverse of [`permute_weight`]: dW[o][c][ky][kx] = dW′[o][(ky·K + kx)·C + c].
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn unpermute_weight(w_perm: &[f32], d: &Dims) -> Vec<f32> {
    let kk = d.k * d.k;
    let mut out = vec![0.0; d.o * d.kkc()];
    for (dst, src) in out
        .chunks_exact_mut(d.kkc())
        .zip(w_perm.chunks_exact(d.kkc()))
    {
        for c in 0..d.c {
            for r in 0..kk {
                dst[c * kk + r] = src[r * d.c + c];
            }
        }
    }
    out
}

/// dst (`[cols, rows]`) = srcᵀ (+ `bias[j]` on every value of dst's row j, when given), src
/// `[rows, cols]` row-major: 8×8 tiles read as rows into registers and written as columns (the
/// edges one by one). Every one of dst's rows·cols values is written.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn transpose(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [MaybeUninit<f32>],
    bias: Option<&[f32]>,
) {
    const B: usize = 8;
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    assert!(bias.is_none_or(|b| b.len() >= cols));
    let add = |j: usize| bias.map_or(0.0, |b| b[j]);
    let (rb, cb) = (rows - rows % B, cols - cols % B);
    for r0 in (0..rb).step_by(B) {
        for c0 in (0..cb).step_by(B) {
            let mut tile = [[0.0f32; B]; B];
            for (i, row) in tile.iter_mut().enumerate() {
                row.copy_from_slice(&src[(r0 + i) * cols + c0..][..B]);
            }
            for j in 0..B {
                let out: &mut [MaybeUninit<f32>; B] = (&mut dst[(c0 + j) * rows + r0..][..B])
                    .try_into()
                    .expect("8 values");
                let b = add(c0 + j);
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(tile[i][j] + b);
                }
            }
        }
        for r in r0..r0 + B {
            for c in cb..cols {
                dst[c * rows + r].write(src[r * cols + c] + add(c));
            }
        }
    }
    for r in rb..rows {
        for c in 0..cols {
            dst[c * rows + r].write(src[r * cols + c] + add(c));
        }
    }
}

/// For kernel offset `kx` along an axis of input length `len` and output length `out`: the
/// output range whose input position `i + kx − p` is inside the image.
fn valid(kx: usize, p: usize, len: usize, out: usize) -> std::ops::Range<usize> {
    let lo = p.saturating_sub(kx);
    let hi = (len + p).saturating_sub(kx).min(out);
    lo..hi.max(lo)
}

/// colᵀ[y·OW + x][(ky·K + kx)·C + c] = x_nhwc[y + ky − p][x + kx − p][c] (0 outside the image).
/// For one kernel row ky the K pixels of a patch are neighbours in the NHWC image, so each patch
/// row is K copies of (up to) K·C contiguous values.
fn im2col_rows(nhwc: &[f32], d: &Dims, col_t: &mut [f32]) {
    let (oh, ow) = d.out();
    let (c, k, kkc) = (d.c, d.k, d.kkc());
    for y in 0..oh {
        for x in 0..ow {
            let row = &mut col_t[(y * ow + x) * kkc..(y * ow + x + 1) * kkc];
            // The kernel columns kx whose input column x + kx − p is inside the image.
            let kx = valid_taps(x, d.p, d.w, k);
            for ky in 0..k {
                let dst = &mut row[ky * k * c..(ky + 1) * k * c];
                let iy = (y + ky).wrapping_sub(d.p);
                if iy >= d.h || kx.is_empty() {
                    dst.fill(0.0);
                    continue;
                }
                dst[..kx.start * c].fill(0.0);
                dst[kx.end * c..].fill(0.0);
                let src = (iy * d.w + x + kx.start - d.p) * c;
                dst[kx.start * c..kx.end * c].copy_from_slice(&nhwc[src..src + kx.len() * c]);
            }
        }
    }
}

/// The taps kx in 0..k whose input position `x + kx − p` lies in 0..len.
fn valid_taps(x: usize, p: usize, len: usize, k: usize) -> std::ops::Range<usize> {
    let lo = p.saturating_sub(x).min(k);
    let hi = (len + p).saturating_sub(x).min(k).max(lo);
    lo..hi
}

/// The transpose of im2col for the Wᵀ·g layout: dx[c][y + ky − p][x + kx − p] =
/// Σ_{ky,kx} dcol[(c·K + ky)·K + kx][y·OW + x], plane by plane (each stays in L1 over its K·K
/// taps). Where the centre tap covers the whole image (every "same" convolution), it writes the
/// plane and the other taps add to it; otherwise the plane is zeroed first. Every value of `dx`
/// is written.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn col2im(dcol: &[f32], d: &Dims, dx: &mut [MaybeUninit<f32>]) {
    let (oh, ow) = d.out();
    let (hw, ohw, kk) = (d.h * d.w, oh * ow, d.k * d.k);
    let centre = (d.p < d.k && (oh, ow) == (d.h, d.w)).then_some(d.p * d.k + d.p);
    for (plane, taps) in dx.chunks_exact_mut(hw).zip(dcol.chunks_exact(kk * ohw)) {
        match centre {
            Some(t) => plane
                .iter_mut()
                .zip(&taps[t * ohw..(t + 1) * ohw])
                .for_each(|(a, &b)| {
                    a.write(b);
                }),
            None => plane.iter_mut().for_each(|a| {
                a.write(0.0);
            }),
        }
        // SAFETY: every value of the plane was written just above.
        let plane: &mut [f32] = unsafe { &mut *(plane as *mut [MaybeUninit<f32>] as *mut [f32]) };
        for ky in 0..d.k {
            let rows = valid(ky, d.p, d.h, oh);
            for kx in 0..d.k {
                let t = ky * d.k + kx;
                if Some(t) == centre {
                    continue;
                }
                let cols = valid(kx, d.p, d.w, ow);
                let src = &taps[t * ohw..(t + 1) * ohw];
                for y in rows.clone() {
                    let dst = (y + ky - d.p) * d.w + cols.start + kx - d.p;
                    let from = &src[y * ow + cols.start..y * ow + cols.end];
                    for (a, b) in plane[dst..dst + cols.len()].iter_mut().zip(from) {
                        *a += b;
                    }
                }
            }
        }
    }
}

/// dW = unpermute(Σ_n g_n · colᵀ_n), the patch rows made again from the NHWC input.
fn weight_grad(nhwc: &[f32], g: &[f32], d: &Dims) -> Vec<f32> {
    let (oh, ow) = d.out();
    let (kkc, hw, chw) = (d.kkc(), oh * ow, d.c * d.h * d.w);
    let mut dw = vec![0.0; d.o * kkc];
    SCRATCH.with_borrow_mut(|s| {
        for n in 0..d.n {
            im2col_rows(
                &nhwc[n * chw..(n + 1) * chw],
                d,
                sized(&mut s.col, hw * kkc),
            );
            let g_n = View {
                data: &g[n * d.o * hw..(n + 1) * d.o * hw],
                row_stride: hw,
                col_stride: 1,
            };
            let col_n = View {
                data: &s.col[..hw * kkc],
                row_stride: kkc,
                col_stride: 1,
            };
            gemm(&mut dw, (d.o, kkc, hw), g_n, col_n, n > 0);
        }
    });
    unpermute_weight(&dw, d)
}

/// dX_n = col2im(Wᵀ · g_n), with the weight as stored (`[O, C·K·K]`), so that each channel's
/// K·K rows of the patch-matrix gradient are neighbours.
fn input_grad(w: &[f32], g: &[f32], d: &Dims) -> Vec<f32> {
    let (oh, ow) = d.out();
    let (kkc, hw, chw) = (d.kkc(), oh * ow, d.c * d.h * d.w);
    let mut dx = Vec::with_capacity(d.n * chw);
    SCRATCH.with_borrow_mut(|s| {
        let dcol = sized(&mut s.col, kkc * hw);
        for (dx_n, g_n) in dx.spare_capacity_mut()[..d.n * chw]
            .chunks_exact_mut(chw)
            .zip(g.chunks_exact(d.o * hw))
        {
            let w_t = View {
                data: w,
                row_stride: 1,
                col_stride: kkc,
            };
            let g_n = View {
                data: g_n,
                row_stride: hw,
                col_stride: 1,
            };
            gemm(dcol, (kkc, hw, d.o), w_t, g_n, false);
            col2im(dcol, d, dx_n);
        }
    });
    // SAFETY: `col2im` wrote every value of each image's chunk, and the chunks cover N·C·H·W.
    unsafe { dx.set_len(d.n * chw) };
    dx
}

/// db[o] = Σ_n Σ_p g_n[o][p].
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn bias_grad(g: &[f32], d: &Dims) -> Vec<f32> {
    let (oh, ow) = d.out();
    let hw = oh * ow;
    let mut db = vec![0.0f32; d.o];
    for (i, plane) in g.chunks_exact(hw).enumerate() {
        db[i % d.o] += plane.iter().sum::<f32>();
    }
    db
}
