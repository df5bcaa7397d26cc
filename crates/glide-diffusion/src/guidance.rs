//! Classifier-free guidance (Ho & Salimans 2021; GLIDE §2.3, §3.2), as GLIDE's sampling notebook
//! does it: one forward of the batch `[cond; uncond]`, and guidance on the predicted (ε or v)
//! channels only. Both are affine in x̂₀ at a fixed x_t, so guiding either is the same guidance.

use burn::tensor::{Tensor, backend::Backend};

/// Combines a model output over the batch `[cond (B); uncond (B)]` (shape `[2B, 2C, H, W]`) into
/// `B` guided outputs: ε = ε_uncond + s·(ε_cond − ε_uncond) on the first `eps_channels` channels;
/// the remaining (variance) channels are the conditional ones, as in the original `model_fn`.
/// `scale` = 1 reproduces the conditional model.
pub fn classifier_free_guidance<B: Backend>(
    model_out: Tensor<B, 4>,
    scale: f64,
    eps_channels: usize,
) -> Tensor<B, 4> {
    guide(model_out, eps_channels, |diff| diff * scale)
}

/// [`classifier_free_guidance`] with one scale per image (`scales.len()` = B), e.g. the random
/// guidance weights that guidance distillation draws per example.
pub fn classifier_free_guidance_per_row<B: Backend>(
    model_out: Tensor<B, 4>,
    scales: &[f32],
    eps_channels: usize,
) -> Tensor<B, 4> {
    let s =
        Tensor::<B, 1>::from_floats(scales, &model_out.device()).reshape([scales.len(), 1, 1, 1]);
    assert_eq!(
        2 * scales.len(),
        model_out.dims()[0],
        "one scale per image of [cond; uncond]"
    );
    guide(model_out, eps_channels, |diff| diff * s)
}

/// The one guidance formula: uncond + scale(cond − uncond) on the first `eps_channels`.
fn guide<B: Backend>(
    model_out: Tensor<B, 4>,
    eps_channels: usize,
    scale: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b2, c, _, _] = model_out.dims();
    assert!(b2 % 2 == 0, "guidance needs the batch [cond; uncond]");
    let b = b2 / 2;
    let cond = model_out.clone().narrow(0, 0, b);
    let uncond_eps = model_out.narrow(0, b, b).narrow(1, 0, eps_channels);
    let cond_eps = cond.clone().narrow(1, 0, eps_channels);
    let rest = cond.narrow(1, eps_channels, c - eps_channels);
    let eps = uncond_eps.clone() + scale(cond_eps - uncond_eps);
    Tensor::cat(vec![eps, rest], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn scale_one_is_the_conditional_model_and_variance_is_untouched() {
        let d = Default::default();
        // batch [cond; uncond] of 1 image each, 2 channels (1 eps + 1 variance), 1×1 pixels
        let out = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![1.0f32, 5.0, 3.0, 7.0], [2, 2, 1, 1]),
            &d,
        );
        let g1 = classifier_free_guidance(out.clone(), 1.0, 1)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(g1, [1.0, 5.0]);
        // eps = 3 + 3·(1 − 3) = −3; variance from the conditional half
        let g3 = classifier_free_guidance(out, 3.0, 1)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(g3, [-3.0, 5.0]);
    }

    #[test]
    fn per_row_scales_guide_each_image_with_its_own_scale() {
        let d = Default::default();
        // [cond a, cond b; uncond a, uncond b], 2 channels (1 eps + 1 variance), 1×1 pixels
        let out = Tensor::<Flex, 4>::from_data(
            TensorData::new(
                vec![1.0f32, 5.0, 2.0, 6.0, 3.0, 7.0, 0.0, 8.0],
                [4, 2, 1, 1],
            ),
            &d,
        );
        let g = classifier_free_guidance_per_row(out.clone(), &[3.0, 1.0], 1)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // a: 3 + 3·(1 − 3) = −3; b: 0 + 1·(2 − 0) = 2; variance from the conditional half
        assert_eq!(g, [-3.0, 5.0, 2.0, 6.0]);
        let same = classifier_free_guidance_per_row(out.clone(), &[3.0, 3.0], 1);
        let scalar = classifier_free_guidance(out, 3.0, 1);
        assert_eq!(
            same.into_data().to_vec::<f32>().unwrap(),
            scalar.into_data().to_vec::<f32>().unwrap()
        );
    }
}
