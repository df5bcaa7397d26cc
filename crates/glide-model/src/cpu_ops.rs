//! What the CPU training backend's own ops (`Autodiff<Flex>`: [`crate::conv_im2col`],
//! [`crate::qkv_attention`], the fused SiLU) share: recognising the backend, moving between burn
//! tensors and slices, and one GEMM entry point (the `gemm` crate, flex's own).

use std::any::{Any, TypeId};
use std::sync::OnceLock;

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

pub(crate) type Ad = Autodiff<Flex>;

/// Whether the environment leaves an op of ours on (read once into `cell`): `var=burn` keeps
/// burn's ops instead (for benchmarks).
pub(crate) fn enabled(cell: &OnceLock<bool>, var: &str) -> bool {
    *cell.get_or_init(|| std::env::var(var).map_or(true, |v| v != "burn"))
}

/// Whether `x` is an f32 tensor of the CPU inference backend, `Flex` (no autodiff).
pub(crate) fn is_cpu_inference<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>() && x.dtype() == DType::F32
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

/// The values of an f32 tensor, row-major (a copy only when it is not contiguous).
pub(crate) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => std::borrow::Cow::Borrowed(v),
        None => std::borrow::Cow::Owned(to_vec(t.clone())),
    }
}

/// The values of an f32 tensor, row-major.
pub(crate) fn to_vec(t: FlexTensor) -> Vec<f32> {
    t.into_data()
        .into_vec::<f32>()
        .expect("the CPU training paths run on f32 tensors")
}

/// A flex tensor of these row-major values.
pub(crate) fn from_vec<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The shape of a flex tensor as an array.
pub(crate) fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(t.clone())).dims()
}

/// e^x in f32 to within 2 ulp (Cephes' `expf`: x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-7
/// polynomial in r, then 2ⁿ put in the exponent bits), without branches or calls, so that a loop
/// over a slice vectorises (libm's `expf` is a call per element: 3–5% of a step). Inputs are
/// clamped to [−87.3, 88.3]: 0 and ∞ come out as e^−87.3 ≈ 1.2e−38 and e^88.3 ≈ 2.2e38.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.3);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// σ(x) = 1 / (1 + e^−x), with [`exp`].
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// A row-major or transposed view of a matrix in a slice: element (i, j) is at
/// `i·row_stride + j·col_stride`.
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A row-major `[rows, cols]` matrix.
pub(crate) fn mat(data: &[f32], cols: usize) -> View<'_> {
    View {
        data,
        row_stride: cols,
        col_stride: 1,
    }
}

/// The transpose (`[cols, rows]`) of a row-major `[rows, cols]` matrix.
pub(crate) fn mat_t(data: &[f32], cols: usize) -> View<'_> {
    View {
        data,
        row_stride: 1,
        col_stride: cols,
    }
}

/// dst (`[m, n]`, row-major) = lhs (`[m, k]`) · rhs (`[k, n]`), added to dst when `accumulate`.
pub(crate) fn gemm(
    dst: &mut [f32],
    mnk: (usize, usize, usize),
    lhs: View,
    rhs: View,
    accumulate: bool,
) {
    gemm_scaled(dst, mnk, lhs, rhs, accumulate, 1.0);
}

pub(crate) use gemm::Parallelism;

/// [`gemm`] on `par`'s threads.
pub(crate) fn gemm_par(
    dst: &mut [f32],
    mnk: (usize, usize, usize),
    lhs: View,
    rhs: View,
    accumulate: bool,
    par: Parallelism,
) {
    gemm_with(dst, mnk, lhs, rhs, accumulate, 1.0, par);
}

/// dst = `scale`·lhs·rhs, added to dst when `accumulate` (as [`gemm`]).
pub(crate) fn gemm_scaled(
    dst: &mut [f32],
    mnk: (usize, usize, usize),
    lhs: View,
    rhs: View,
    accumulate: bool,
    scale: f32,
) {
    gemm_with(dst, mnk, lhs, rhs, accumulate, scale, Parallelism::None);
}

/// The one call into the `gemm` crate.
fn gemm_with(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: View,
    rhs: View,
    accumulate: bool,
    scale: f32,
    par: Parallelism,
) {
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
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    /// [`super::exp`] is within 2 ulp of f64's e^x over the range the model meets, and saturates
    /// outside it.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(super::exp(x));
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
            x += 0.000_713;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert!(super::exp(-1000.0) < 1.3e-38 && super::exp(1000.0) > 2e38);
        assert!((super::sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert!((super::sigmoid(-200.0) * -200.0).abs() < 1e-35);
    }
}
