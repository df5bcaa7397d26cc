//! SiLU, x·σ(x) (the UNet's activation), with a fused backward when training on the CPU.
//!
//! burn 0.21's autodiff records `silu` as a sigmoid and a product: its backward runs the product's
//! two gradients, recomputes σ(x) (a second `exp` per element) for the sigmoid's, and adds them,
//! six passes over the activation. On `Autodiff<Flex>` this module computes y = x·σ(x) in one pass
//! that keeps x and σ(x), and the backward in one: dx = g·σ·(1 + x·(1 − σ)). The forward equals
//! burn's to rounding. `GLIDE_SILU_BACKWARD=burn` in the environment keeps burn's path (benchmarks).

use burn::tensor::{Tensor, activation, backend::Backend};

/// x·σ(x), element-wise.
///
/// # Shapes
/// - x: any → the same
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(not(target_arch = "wasm32"))]
    if fused::applies(&x) {
        return fused::silu(x);
    }
    activation::silu(x)
}

#[cfg(not(target_arch = "wasm32"))]
mod fused {
    use std::sync::OnceLock;

    use burn::backend::Flex;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorPrimitive};

    use crate::cpu_ops::{Ad, enabled, from_vec, is_cpu_training, same, to_vec};

    /// Whether `x` takes the fused path (see the module docs).
    pub(super) fn applies<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
        static ENABLED: OnceLock<bool> = OnceLock::new();
        enabled(&ENABLED, "GLIDE_SILU_BACKWARD") && is_cpu_training(x)
    }

    /// The fused SiLU; call only where [`applies`] is true.
    pub(super) fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        let x = same::<_, Tensor<Ad, D>>(x);
        let shape = x.dims();
        let x = x.into_primitive().tensor();
        let values = to_vec(x.primitive.clone());
        let sigmoid: Vec<f32> = values.iter().map(|&v| crate::cpu_ops::sigmoid(v)).collect();
        let y = values.iter().zip(&sigmoid).map(|(&v, &s)| v * s).collect();
        let out = match SiluBackward::<D>
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((values, sigmoid, shape), from_vec(y, shape)),
            OpsKind::UnTracked(prep) => prep.finish(from_vec(y, shape)),
        };
        same(Tensor::<Ad, D>::from_primitive(TensorPrimitive::Float(out)))
    }

    /// The backward of a D-dimensional SiLU.
    #[derive(Debug)]
    struct SiluBackward<const D: usize>;

    impl<const D: usize> Backward<Flex, 1> for SiluBackward<D> {
        /// x, σ(x) and the shape.
        type State = (Vec<f32>, Vec<f32>, [usize; D]);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [Some(parent)] = ops.parents else {
                return;
            };
            let (x, sigmoid, shape) = ops.state;
            let g = to_vec(grads.consume::<Flex>(&ops.node));
            let dx = g
                .iter()
                .zip(x.iter().zip(&sigmoid))
                .map(|(&g, (&x, &s))| g * s * (1.0 + x * (1.0 - s)))
                .collect();
            grads.register::<Flex>(parent.id, from_vec(dx, shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    #[test]
    fn fused_silu_equals_burns_forward_and_backward() {
        let device = Default::default();
        let x = Tensor::<A, 4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 4.0), &device)
            .require_grad();
        assert!(fused::applies(&x), "the test must take the fused path");
        let g = Tensor::<A, 4>::random([2, 3, 5, 7], Distribution::Default, &device);
        let ours = silu(x.clone());
        let burns = activation::silu(x.clone());
        let forward = (ours.clone() - burns.clone()).abs().max().into_scalar();
        assert!(forward < 1e-6, "forward differs by {forward}");
        let ours = x.grad(&(ours * g.clone()).sum().backward()).unwrap();
        let burns = x.grad(&(burns * g).sum().backward()).unwrap();
        let scale = burns.clone().abs().max().into_scalar();
        let backward = (ours - burns).abs().max().into_scalar() / scale;
        assert!(backward < 1e-6, "backward differs by {backward} (relative)");
    }

    #[test]
    fn a_silu_between_two_tracked_ops_passes_the_gradient_through() {
        // d/dw Σ silu(w·x) = Σ x·silu'(w·x): the fused node sits inside a graph.
        let device = Default::default();
        let w = Tensor::<A, 1>::from_floats([0.5, -1.5, 2.0], &device).require_grad();
        let x = Tensor::<A, 1>::from_floats([1.0, 2.0, -3.0], &device);
        let grads = silu(w.clone() * x.clone()).sum().backward();
        let got = w
            .grad(&grads)
            .unwrap()
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        for ((&g, w), x) in got.iter().zip([0.5f32, -1.5, 2.0]).zip([1.0f32, 2.0, -3.0]) {
            let z = w * x;
            let s = 1.0 / (1.0 + (-z).exp());
            let want = x * (s + z * s * (1.0 - s));
            assert!((g - want).abs() < 1e-6, "{g} vs {want}");
        }
    }
}
