//! The ResBlocks' ×2 resampling without a convolution (`upsample2x`: nearest neighbour,
//! `downsample2x`: 2×2 average) as ops of their own on the CPU (`Flex`, and `Autodiff<Flex>` with
//! their backward).
//!
//! Through burn's ops the upsampling is a reshape, an `expand` and a reshape: the second reshape
//! copies the broadcast view element by element through flex's strided iterator, and so does the
//! backward's sum over the expanded axes (~3% of a training step). Here each is one pass over the
//! image: forward, out[2y + i][2x + j] = x[y][x]; backward, dx[y][x] = Σ_{i,j} g[2y + i][2x + j]
//! (and the 2×2 average and its backward, g/4 to each of the four pixels, likewise). Equal to
//! burn's ops (the sums to rounding). `GLIDE_RESAMPLE=burn` in the environment keeps burn's ops.

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::cpu_ops::{Ad, enabled, from_vec, is_cpu_inference, is_cpu_training, same, values};

/// Whether `x` takes these ops: f32 on `Flex` or `Autodiff<Flex>`.
pub(crate) fn applies<B: Backend>(x: &Tensor<B, 4>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_RESAMPLE") && (is_cpu_training(x) || is_cpu_inference(x))
}

/// Which way the image is resampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Resample {
    /// Nearest neighbour ×2: `[B, C, H, W]` → `[B, C, 2H, 2W]`.
    Up,
    /// 2×2 average: `[B, C, H, W]` → `[B, C, H/2, W/2]` (H and W even).
    Down,
}

/// `x` resampled; call only where [`applies`] is true.
///
/// # Shapes
/// - x: `[B, C, H, W]` → `[B, C, 2H, 2W]` (up) or `[B, C, H/2, W/2]` (down)
pub(crate) fn resample<B: Backend>(x: Tensor<B, 4>, way: Resample) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let small = match way {
        Resample::Up => [h, w],
        Resample::Down => {
            assert!(
                h % 2 == 0 && w % 2 == 0,
                "2×2 average pooling of an odd size"
            );
            [h / 2, w / 2]
        }
    };
    let out_shape = match way {
        Resample::Up => [b, c, 2 * h, 2 * w],
        Resample::Down => [b, c, h / 2, w / 2],
    };
    let run = |x: &[f32]| match way {
        Resample::Up => up(x, small),
        Resample::Down => down(x, small),
    };
    if is_cpu_inference(&x) {
        let x = same::<_, Tensor<Flex, 4>>(x).into_primitive().tensor();
        let out = from_vec(run(&values(&x)), out_shape);
        return same(Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(
            out,
        )));
    }
    let x = same::<_, Tensor<Ad, 4>>(x).into_primitive().tensor();
    let out = from_vec(run(&values(&x.primitive)), out_shape);
    let out = match ResampleBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((way, small, [b, c, h, w]), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    same(Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(out)))
}

#[derive(Debug)]
struct ResampleBackward;

impl Backward<Flex, 1> for ResampleBackward {
    /// The direction, the small side's (H, W) and the input's shape.
    type State = (Resample, [usize; 2], [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let (way, small, shape) = ops.state;
        if let [Some(node)] = ops.parents.map(|p| p.map(|n| n.id)) {
            let g = values(&g);
            let dx = match way {
                Resample::Up => up_backward(&g, small),
                Resample::Down => down_backward(&g, small),
            };
            assert_eq!(dx.len(), shape.iter().product::<usize>());
            grads.register::<Flex>(node, from_vec(dx, shape));
        }
    }
}

/// Nearest ×2 of every `[h, w]` plane of `x`.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn up(x: &[f32], [h, w]: [usize; 2]) -> Vec<f32> {
    let mut out = Vec::with_capacity(4 * x.len());
    for row in x.chunks_exact(w) {
        let start = out.len();
        out.extend(row.iter().flat_map(|&v| [v, v]));
        out.extend_from_within(start..);
    }
    debug_assert_eq!(out.len(), 4 * h * w * (x.len() / (h * w)));
    out
}

/// The gradient of [`up`]: each small pixel gets the sum of its four copies' gradients.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn up_backward(g: &[f32], [_, w]: [usize; 2]) -> Vec<f32> {
    let mut dx = Vec::with_capacity(g.len() / 4);
    for rows in g.chunks_exact(4 * w) {
        let (r0, r1) = rows.split_at(2 * w);
        dx.extend(
            r0.chunks_exact(2)
                .zip(r1.chunks_exact(2))
                .map(|(a, b)| (a[0] + a[1]) + (b[0] + b[1])),
        );
    }
    dx
}

/// The 2×2 average of every plane of `x`, whose output planes are `[h, w]`.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn down(x: &[f32], [_, w]: [usize; 2]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len() / 4);
    for rows in x.chunks_exact(4 * w) {
        let (r0, r1) = rows.split_at(2 * w);
        out.extend(
            r0.chunks_exact(2)
                .zip(r1.chunks_exact(2))
                .map(|(a, b)| ((a[0] + a[1]) + (b[0] + b[1])) * 0.25),
        );
    }
    out
}

/// The gradient of [`down`]: a quarter of each output pixel's gradient to each of its four.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma+avx",
    "x86_64+avx2+fma+avx"
))]
fn down_backward(g: &[f32], [_, w]: [usize; 2]) -> Vec<f32> {
    let mut dx = Vec::with_capacity(4 * g.len());
    for row in g.chunks_exact(w) {
        let start = dx.len();
        dx.extend(row.iter().flat_map(|&v| [0.25 * v, 0.25 * v]));
        dx.extend_from_within(start..);
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::module::avg_pool2d;

    /// burn's ops, as `resblock.rs` writes them for every other backend.
    fn burns<B: Backend>(x: Tensor<B, 4>, way: Resample) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        match way {
            Resample::Up => x
                .reshape([b, c, h, 1, w, 1])
                .expand([b, c, h, 2, w, 2])
                .reshape([b, c, 2 * h, 2 * w]),
            Resample::Down => avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false),
        }
    }

    fn max_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn resampling_equals_burns_ops_forward_and_backward() {
        let device = Default::default();
        for way in [Resample::Up, Resample::Down] {
            let x = Tensor::<Flex, 4>::random([2, 3, 6, 4], Distribution::Default, &device);
            assert!(applies(&x));
            let d = max_diff(resample(x.clone(), way), burns(x.clone(), way));
            assert!(d < 1e-6, "{way:?} inference differs by {d}");

            let leaf = || Tensor::<Ad, 4>::from_inner(x.clone()).require_grad();
            let (ours_x, burns_x) = (leaf(), leaf());
            let ours = resample(ours_x.clone(), way);
            let reference = burns(burns_x.clone(), way);
            assert_eq!(ours.dims(), reference.dims());
            let g = Tensor::<Ad, 4>::random(ours.dims(), Distribution::Default, &device);
            let d = max_diff(ours.clone().inner(), reference.clone().inner());
            assert!(d < 1e-6, "{way:?} forward differs by {d}");
            let ours_g = (ours * g.clone()).sum().backward();
            let burns_g = (reference * g).sum().backward();
            let d = max_diff(
                ours_x.grad(&ours_g).unwrap(),
                burns_x.grad(&burns_g).unwrap(),
            );
            assert!(d < 1e-5, "{way:?} gradient differs by {d}");
        }
    }
}
