//! The model's convolutions: burn's `Conv2d` / `Conv1d` forward everywhere; on the CPU (`Flex`,
//! natively), a stride-1 K×K convolution runs as im2col + GEMM ([`crate::conv_im2col`]): forward
//! and backward when training (`Autodiff<Flex>`, instead of flex's forward and burn's generic
//! backward), its forward alone with the images in parallel at inference (equal to rounding); and
//! the attention's pointwise `Conv1d`s (`qkv`, `encoder_kv`, `proj_out`) run as GEMMs per example
//! ([`crate::pointwise_cpu`], equal to rounding). `GLIDE_CONV_BACKWARD=burn` in the environment keeps burn's and
//! flex's paths for all of them.

use burn::nn::conv::{Conv1d, Conv2d};
use burn::tensor::{Tensor, backend::Backend};

/// `conv.forward(x)`, as im2col + GEMM forward and backward where it applies.
///
/// # Shapes
/// - x: `[N, C_in, H, W]` → `[N, C_out, H', W']`
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(padding) = symmetric_padding(conv).filter(|_| crate::conv_im2col::applies(&x)) {
        let bias = conv.bias.as_ref().map(|b| b.val());
        return crate::conv_im2col::conv2d(x, conv.weight.val(), bias, padding);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(padding) =
        symmetric_padding(conv).filter(|_| crate::conv_im2col::applies_inference(&x))
    {
        let bias = conv.bias.as_ref().map(|b| b.val());
        return crate::conv_im2col::conv2d_inference(x, conv.weight.val(), bias, padding);
    }
    conv.forward(x)
}

/// `conv.forward(x)` of a `Conv1d`; a pointwise one (kernel 1, stride 1, no padding) is
/// `W · x_n + b` as one op of ours on the CPU ([`crate::pointwise_cpu`]).
///
/// # Shapes
/// - x: `[N, C_in, T]` → `[N, C_out, T']`
pub fn conv1d<B: Backend>(conv: &Conv1d<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    #[cfg(not(target_arch = "wasm32"))]
    if is_pointwise(conv) && crate::pointwise_cpu::applies(&x) {
        let bias = conv.bias.as_ref().map(|b| b.val());
        return crate::pointwise_cpu::conv1d(x, conv.weight.val(), bias);
    }
    conv.forward(x)
}

/// Whether a `Conv1d` is pointwise: kernel 1, stride 1, no padding or dilation, one group.
#[cfg(not(target_arch = "wasm32"))]
fn is_pointwise<B: Backend>(conv: &Conv1d<B>) -> bool {
    use burn::nn::PaddingConfig1d;
    // With a kernel of 1, `Same` pads nothing either.
    let unpadded = matches!(
        conv.padding,
        PaddingConfig1d::Valid | PaddingConfig1d::Same | PaddingConfig1d::Explicit(0, 0)
    );
    conv.kernel_size == 1 && conv.stride == 1 && conv.dilation == 1 && conv.groups == 1 && unpadded
}

/// The padding of a square-kernel, stride-1, undilated, ungrouped convolution that pads every
/// side alike; `None` for any other convolution.
#[cfg(not(target_arch = "wasm32"))]
fn symmetric_padding<B: Backend>(conv: &Conv2d<B>) -> Option<usize> {
    use burn::nn::PaddingConfig2d;
    let [k0, k1] = conv.kernel_size;
    let plain = conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1 && k0 == k1;
    let p = match conv.padding {
        PaddingConfig2d::Valid => 0,
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if top == left && top == bottom && top == right =>
        {
            top
        }
        _ => return None,
    };
    (plain && 2 * p + 1 >= k0).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    type A = Autodiff<Flex>;

    /// Largest |a − b| relative to the largest |b|.
    fn rel_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale.max(1e-12)
    }

    /// The im2col backward's dX, dW and db equal burn's generic backward's.
    fn check(c: usize, o: usize, k: usize, p: usize, (h, w): (usize, usize), bias: bool) {
        let device = Default::default();
        let conv: Conv2d<A> = Conv2dConfig::new([c, o], [k, k])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(bias)
            .init(&device);
        let x = Tensor::<A, 4>::random([3, c, h, w], Distribution::Default, &device).require_grad();
        assert!(
            crate::conv_im2col::applies(&x),
            "the test must take the im2col path"
        );
        assert!(symmetric_padding(&conv).is_some());
        let ours = conv2d(&conv, x.clone());
        let burns = conv.forward(x.clone());
        let g = Tensor::<A, 4>::random(burns.dims(), Distribution::Default, &device);
        assert_eq!(ours.dims(), burns.dims());
        assert!(rel_diff(ours.clone().inner(), burns.clone().inner()) < 1e-6);
        let ours = (ours * g.clone()).sum().backward();
        let burns = (burns * g).sum().backward();
        let what = format!("C{c} O{o} K{k} p{p} {h}×{w} bias {bias}");
        let dx = rel_diff(x.grad(&ours).unwrap(), x.grad(&burns).unwrap());
        assert!(dx < 1e-5, "dX differs by {dx} ({what})");
        let w = &conv.weight;
        let dw = rel_diff(w.grad(&ours).unwrap(), w.grad(&burns).unwrap());
        assert!(dw < 1e-5, "dW differs by {dw} ({what})");
        if let Some(b) = &conv.bias {
            let db = rel_diff(b.grad(&ours).unwrap(), b.grad(&burns).unwrap());
            assert!(db < 1e-5, "db differs by {db} ({what})");
        }
    }

    #[test]
    fn im2col_backward_equals_burns_generic_backward() {
        check(4, 6, 3, 1, (7, 5), true);
        check(5, 3, 3, 1, (4, 4), false);
        check(6, 4, 1, 0, (3, 5), true);
        check(3, 2, 5, 2, (6, 6), true);
        // Output larger than the input: no tap covers the whole image.
        check(3, 4, 2, 1, (5, 6), true);
    }

    #[test]
    fn pointwise_conv1d_as_gemms_equals_burns_conv1d() {
        use burn::nn::conv::Conv1dConfig;
        let device = Default::default();
        for bias in [true, false] {
            let conv: Conv1d<A> = Conv1dConfig::new(5, 7, 1).with_bias(bias).init(&device);
            assert!(is_pointwise(&conv));
            let x =
                Tensor::<A, 3>::random([3, 5, 11], Distribution::Default, &device).require_grad();
            assert!(crate::pointwise_cpu::applies(&x));
            let ours = conv1d(&conv, x.clone());
            let burns = conv.forward(x.clone());
            let inference = conv1d(
                &burn::module::AutodiffModule::valid(&conv),
                x.clone().inner(),
            );
            let d = rel_diff(inference, burns.clone().inner());
            assert!(d < 1e-6, "inference differs by {d} (bias {bias})");
            assert_eq!(ours.dims(), burns.dims());
            assert!(rel_diff(ours.clone().inner(), burns.clone().inner()) < 1e-6);
            let g = Tensor::<A, 3>::random(burns.dims(), Distribution::Default, &device);
            let ours = (ours * g.clone()).sum().backward();
            let burns = (burns * g).sum().backward();
            let dx = rel_diff(x.grad(&ours).unwrap(), x.grad(&burns).unwrap());
            assert!(dx < 1e-5, "dX differs by {dx} (bias {bias})");
            let w = &conv.weight;
            let dw = rel_diff(w.grad(&ours).unwrap(), w.grad(&burns).unwrap());
            assert!(dw < 1e-5, "dW differs by {dw} (bias {bias})");
            if let Some(b) = &conv.bias {
                let db = rel_diff(b.grad(&ours).unwrap(), b.grad(&burns).unwrap());
                assert!(db < 1e-5, "db differs by {db}");
            }
        }
        let wide: Conv1d<A> = Conv1dConfig::new(2, 2, 3).init(&device);
        assert!(!is_pointwise(&wide));
    }

    #[test]
    fn other_convolutions_keep_burns_path() {
        let device = Default::default();
        let strided: Conv2d<A> = Conv2dConfig::new([2, 2], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        assert_eq!(symmetric_padding(&strided), None);
        let lopsided: Conv2d<A> = Conv2dConfig::new([2, 2], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 0, 1, 0))
            .init(&device);
        assert_eq!(symmetric_padding(&lopsided), None);
        // Inference (no autodiff) takes its own path.
        let plain = Tensor::<Flex, 4>::zeros([1, 2, 8, 8], &device);
        assert!(!crate::conv_im2col::applies(&plain));
        assert!(crate::conv_im2col::applies_inference(&plain));
        assert!(!crate::conv_im2col::applies_inference(
            &Tensor::<A, 4>::from_inner(plain)
        ));
    }

    /// The inference path (images in parallel, or one image on every thread) equals flex's conv.
    #[test]
    fn inference_im2col_equals_flexs_conv2d() {
        let device = Default::default();
        for (n, c, o, k, p, bias) in [
            (3, 4, 6, 3, 1, true),
            (1, 5, 3, 3, 1, false),
            (2, 6, 4, 1, 0, true),
        ] {
            let conv: Conv2d<Flex> = Conv2dConfig::new([c, o], [k, k])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<Flex, 4>::random([n, c, 9, 7], Distribution::Default, &device);
            let ours = conv2d(&conv, x.clone());
            let flexs = conv.forward(x);
            assert_eq!(ours.dims(), flexs.dims());
            let d = rel_diff(ours, flexs);
            assert!(d < 1e-6, "N{n} C{c} O{o} K{k}: differs by {d}");
        }
    }
}
