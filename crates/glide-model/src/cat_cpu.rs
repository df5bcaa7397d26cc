//! The UNet's skip connections, `cat([h, skip], dim 1)`, as one op with its own backward on the
//! CPU training backend (`Autodiff<Flex>`).
//!
//! burn's `cat` backward hands each part a `narrow`ed view of the output gradient, which is not
//! contiguous when the batch has more than one example; the down path's outputs also feed the
//! next block, so their two gradients were added through flex's strided iterator (~2% of a
//! training step). Here the backward copies each part's channels out per example (contiguous
//! runs), and the forward is the same copies the other way. Equal to burn's `cat`.
//! `GLIDE_CAT=burn` in the environment keeps burn's op.

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::cpu_ops::{Ad, enabled, from_vec, is_cpu_training, same, values};

/// Whether `x` takes this op: f32 on `Autodiff<Flex>`.
pub(crate) fn applies<B: Backend>(x: &Tensor<B, 4>) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    enabled(&ENABLED, "GLIDE_CAT") && is_cpu_training(x)
}

/// `cat([a, b], 1)`; call only where [`applies`] is true for both.
///
/// # Shapes
/// - a: `[N, C1, H, W]`, b: `[N, C2, H, W]` → `[N, C1 + C2, H, W]`
pub(crate) fn cat_channels<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c1, h, w] = a.dims();
    let [nb, c2, hb, wb] = b.dims();
    assert_eq!(
        [n, h, w],
        [nb, hb, wb],
        "cat over channels of unlike images"
    );
    let ad = |t: Tensor<B, 4>| same::<_, Tensor<Ad, 4>>(t).into_primitive().tensor();
    let (a, b) = (ad(a), ad(b));
    let (la, lb) = (c1 * h * w, c2 * h * w);
    let mut out = Vec::with_capacity(n * (la + lb));
    {
        let (va, vb) = (values(&a.primitive), values(&b.primitive));
        for (pa, pb) in va.chunks_exact(la).zip(vb.chunks_exact(lb)) {
            out.extend_from_slice(pa);
            out.extend_from_slice(pb);
        }
    }
    let out = from_vec(out, [n, c1 + c2, h, w]);
    let out = match CatBackward
        .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish([n, c1, c2, h, w], out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    same(Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(out)))
}

#[derive(Debug)]
struct CatBackward;

impl Backward<Flex, 2> for CatBackward {
    /// N, C1, C2, H and W.
    type State = [usize; 5];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [n, c1, c2, h, w] = ops.state;
        let hw = h * w;
        let g = values(&g);
        let [a, b] = ops.parents.map(|p| p.map(|node| node.id));
        let part = |skip: usize, len: usize| {
            let mut part = Vec::with_capacity(n * len);
            for example in g.chunks_exact((c1 + c2) * hw) {
                part.extend_from_slice(&example[skip..skip + len]);
            }
            part
        };
        if let Some(node) = a {
            grads.register::<Flex>(node, from_vec(part(0, c1 * hw), [n, c1, h, w]));
        }
        if let Some(node) = b {
            grads.register::<Flex>(node, from_vec(part(c1 * hw, c2 * hw), [n, c2, h, w]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn cat_equals_burns_forward_and_backward() {
        let device = Default::default();
        let leaf = |c: usize| {
            Tensor::<Ad, 4>::random([3, c, 4, 5], Distribution::Default, &device).require_grad()
        };
        let (a, b) = (leaf(2), leaf(3));
        assert!(applies(&a));
        let ours = cat_channels(a.clone(), b.clone());
        let burns = Tensor::cat(vec![a.clone(), b.clone()], 1);
        assert_eq!(ours.dims(), burns.dims());
        let d = (ours.clone() - burns.clone()).abs().max().into_scalar();
        assert_eq!(d, 0.0);
        let g = Tensor::<Ad, 4>::random(ours.dims(), Distribution::Default, &device);
        // The parts are also used elsewhere, so each gradient is a sum (as at the skips).
        let ours_g = ((ours * g.clone()).sum() + a.clone().sum() * 2.0).backward();
        let burns_g = ((burns * g).sum() + a.clone().sum() * 2.0).backward();
        for x in [&a, &b] {
            let (o, r) = (x.grad(&ours_g).unwrap(), x.grad(&burns_g).unwrap());
            assert_eq!((o - r).abs().max().into_scalar(), 0.0);
        }
    }
}
