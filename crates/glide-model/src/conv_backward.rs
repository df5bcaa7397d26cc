//! The backward pass of a K×K, stride-1 convolution on the CPU training backend
//! (`Autodiff<Flex>`) as im2col + GEMM, the way PyTorch's CPU convolution computes it.
//!
//! burn 0.21 runs every backend's conv2d backward through a generic path: dX as a
//! `conv_transpose2d` with col2im, dW as a `conv2d` on dim-swapped copies of x and the output
//! gradient, with a kernel the size of the image. On flex the copies go through its scalar strided
//! iterator and the dW convolution is a poor GEMM shape; together they were ~38% of a training step.
//! Here, per image n (col_n = im2col(x_n), `[C·K·K, H·W]`):
//!
//! - dW = Σ_n g_n · col_nᵀ (`[O, H·W] × [H·W, C·K·K]`), one GEMM per image into one accumulator;
//! - dX_n = col2im(Wᵀ · g_n) (`[C·K·K, O] × [O, H·W]`, then the K·K shifted windows added back);
//! - db = Σ_{n, y, x} g.
//!
//! The forward stays flex's own convolution (the same numbers as `burn::nn::conv::Conv2d`).
//! Only gradients that a parent needs are computed (the UNet's first convolution never computes
//! dX). `GLIDE_CONV_BACKWARD=burn` in the environment keeps burn's generic path (for benchmarks).

use std::any::{Any, TypeId};
use std::sync::OnceLock;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

pub(crate) type Ad = Autodiff<Flex>;
type FlexTensor = FloatTensor<Flex>;

/// Whether `x` (of backend `B`) takes this path: `B` is `Autodiff<Flex>`, x is f32 and the
/// environment does not ask for burn's generic backward.
pub(crate) fn applies<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled =
        *ENABLED.get_or_init(|| std::env::var("GLIDE_CONV_BACKWARD").map_or(true, |v| v != "burn"));
    enabled && is_cpu_training(x)
}

/// Whether `x` is an f32 tensor of the CPU training backend, `Autodiff<Flex>`.
pub(crate) fn is_cpu_training<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    TypeId::of::<B>() == TypeId::of::<Ad>() && x.dtype() == DType::F32
}

/// `T` as `U` when they are the same type (checked by [`is_cpu_training`]).
pub(crate) fn same<T: 'static, U: 'static>(t: T) -> U {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<U>()
        .expect("only called for Autodiff<Flex> tensors")
}

/// A K×K convolution with stride 1 and padding `padding` on every side, whose backward is
/// im2col + GEMM. Call only where [`applies`] is true.
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
    let options = ConvOptions::new([1, 1], [padding, padding], [1, 1], 1);
    let forward = |x: FlexTensor, w: FlexTensor, b: Option<FlexTensor>| {
        <Flex as ModuleOps<Flex>>::conv2d(x, w, b, options.clone())
    };
    let out = match bias {
        Some(bias) => match ConvIm2col
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (x.primitive.clone(), weight.primitive.clone(), padding);
                prep.finish(
                    state,
                    forward(x.primitive, weight.primitive, Some(bias.primitive)),
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(forward(x.primitive, weight.primitive, Some(bias.primitive)))
            }
        },
        None => match ConvIm2colNoBias
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (x.primitive.clone(), weight.primitive.clone(), padding);
                prep.finish(state, forward(x.primitive, weight.primitive, None))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive, weight.primitive, None)),
        },
    };
    same(Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(out)))
}

#[derive(Debug)]
struct ConvIm2col;
#[derive(Debug)]
struct ConvIm2colNoBias;

/// x, weight and the padding, kept for the backward pass.
type State = (FlexTensor, FlexTensor, usize);

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
    (x, w, padding): State,
    parents: [Option<NodeId>; 3],
) {
    let wanted = parents.map(|p| p.is_some());
    for (node, grad) in parents.into_iter().zip(gradients(x, w, g, padding, wanted)) {
        if let (Some(node), Some(grad)) = (node, grad) {
            grads.register::<Flex>(node, grad);
        }
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
    /// Rows of the im2col matrix (C·K·K).
    fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }
}

/// The values of a D-dimensional f32 tensor, row-major.
pub(crate) fn to_vec<const D: usize>(t: FlexTensor) -> Vec<f32> {
    Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(t))
        .into_data()
        .into_vec::<f32>()
        .expect("the CPU training paths run on f32 tensors")
}

/// A flex tensor of these row-major values.
pub(crate) fn from_vec<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    Tensor::<Flex, D>::from_data(TensorData::new(values, shape), &Default::default())
        .into_primitive()
        .tensor()
}

/// (dX, dW, db) of the convolution of `x` by `w` with output gradient `g`, each only if
/// `wanted`; x is read only for dW and w only for dX.
fn gradients(
    x: FlexTensor,
    w: FlexTensor,
    g: FlexTensor,
    padding: usize,
    wanted: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let [n, c, h, wd] = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(x.clone())).dims();
    let [o, _, k, _] = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(w.clone())).dims();
    let d = Dims {
        n,
        c,
        o,
        h,
        w: wd,
        k,
        p: padding,
    };
    let g = to_vec::<4>(g);
    let (oh, ow) = d.out();
    assert_eq!(
        g.len(),
        d.n * d.o * oh * ow,
        "output gradient of another shape"
    );
    let dx = wanted[0].then(|| from_vec(input_grad(&to_vec::<4>(w), &g, &d), [n, c, h, wd]));
    let dw = wanted[1].then(|| from_vec(weight_grad(&to_vec::<4>(x), &g, &d), [o, c, k, k]));
    let db = wanted[2].then(|| from_vec(bias_grad(&g, &d), [o]));
    [dx, dw, db]
}

/// For kernel offset `kx` along an axis of input length `len` and output length `out`: the
/// output range whose input position `i + kx − p` is inside the image.
fn valid(kx: usize, p: usize, len: usize, out: usize) -> std::ops::Range<usize> {
    let lo = p.saturating_sub(kx);
    let hi = (len + p).saturating_sub(kx).min(out);
    lo..hi.max(lo)
}

/// col[(c·K + ky)·K + kx][y·OW + x] = x[c][y + ky − p][x + kx − p] (0 outside the image).
fn im2col(x: &[f32], d: &Dims, col: &mut [f32]) {
    let (oh, ow) = d.out();
    for c in 0..d.c {
        let plane = &x[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ky in 0..d.k {
            let rows = valid(ky, d.p, d.h, oh);
            for kx in 0..d.k {
                let cols = valid(kx, d.p, d.w, ow);
                let r = (c * d.k + ky) * d.k + kx;
                let out = &mut col[r * oh * ow..(r + 1) * oh * ow];
                out.fill(0.0);
                for y in rows.clone() {
                    let src = (y + ky - d.p) * d.w + cols.start + kx - d.p;
                    out[y * ow + cols.start..y * ow + cols.end]
                        .copy_from_slice(&plane[src..src + cols.len()]);
                }
            }
        }
    }
}

/// The transpose of [`im2col`]: dx[c][y + ky − p][x + kx − p] += dcol[(c·K + ky)·K + kx][y·OW + x].
fn col2im_add(dcol: &[f32], d: &Dims, dx: &mut [f32]) {
    let (oh, ow) = d.out();
    for c in 0..d.c {
        let plane = &mut dx[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ky in 0..d.k {
            let rows = valid(ky, d.p, d.h, oh);
            for kx in 0..d.k {
                let cols = valid(kx, d.p, d.w, ow);
                let r = (c * d.k + ky) * d.k + kx;
                let src = &dcol[r * oh * ow..(r + 1) * oh * ow];
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

/// A row-major or transposed view of a matrix in a slice: element (i, j) is at
/// `i·row_stride + j·col_stride`.
struct View<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

/// dst (`[m, n]`, row-major) = lhs (`[m, k]`) · rhs (`[k, n]`), added to dst when `accumulate`.
fn gemm(dst: &mut [f32], (m, n, k): (usize, usize, usize), lhs: View, rhs: View, accumulate: bool) {
    let last =
        |v: &View, rows: usize, cols: usize| (rows - 1) * v.row_stride + (cols - 1) * v.col_stride;
    assert!(dst.len() >= m * n && m > 0 && n > 0 && k > 0);
    assert!(last(&lhs, m, k) < lhs.data.len() && last(&rhs, k, n) < rhs.data.len());
    // SAFETY: every index the GEMM reads or writes is within the slices (asserted above), and
    // dst does not alias lhs or rhs (a &mut and two & borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// dW[o][c·K·K] = Σ_n Σ_p g_n[o][p] · col_n[c·K·K][p].
fn weight_grad(x: &[f32], g: &[f32], d: &Dims) -> Vec<f32> {
    let (oh, ow) = d.out();
    let (ckk, hw) = (d.ckk(), oh * ow);
    let mut col = vec![0.0; ckk * hw];
    let mut dw = vec![0.0; d.o * ckk];
    for n in 0..d.n {
        im2col(
            &x[n * d.c * d.h * d.w..(n + 1) * d.c * d.h * d.w],
            d,
            &mut col,
        );
        let g_n = View {
            data: &g[n * d.o * hw..(n + 1) * d.o * hw],
            row_stride: hw,
            col_stride: 1,
        };
        let col_t = View {
            data: &col,
            row_stride: 1,
            col_stride: hw,
        };
        gemm(&mut dw, (d.o, ckk, hw), g_n, col_t, n > 0);
    }
    dw
}

/// dX_n = col2im(Wᵀ · g_n), W as `[O, C·K·K]`.
fn input_grad(w: &[f32], g: &[f32], d: &Dims) -> Vec<f32> {
    let (oh, ow) = d.out();
    let (ckk, hw) = (d.ckk(), oh * ow);
    let mut dcol = vec![0.0; ckk * hw];
    let mut dx = vec![0.0; d.n * d.c * d.h * d.w];
    for n in 0..d.n {
        let w_t = View {
            data: w,
            row_stride: 1,
            col_stride: ckk,
        };
        let g_n = View {
            data: &g[n * d.o * hw..(n + 1) * d.o * hw],
            row_stride: hw,
            col_stride: 1,
        };
        gemm(&mut dcol, (ckk, hw, d.o), w_t, g_n, false);
        col2im_add(
            &dcol,
            d,
            &mut dx[n * d.c * d.h * d.w..(n + 1) * d.c * d.h * d.w],
        );
    }
    dx
}

/// db[o] = Σ_n Σ_p g_n[o][p].
fn bias_grad(g: &[f32], d: &Dims) -> Vec<f32> {
    let (oh, ow) = d.out();
    let hw = oh * ow;
    let mut db = vec![0.0f32; d.o];
    for (i, plane) in g.chunks_exact(hw).enumerate() {
        db[i % d.o] += plane.iter().sum::<f32>();
    }
    db
}
