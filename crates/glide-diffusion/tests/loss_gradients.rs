//! The VLB term trains only the variance: its gradient with respect to the eps output is zero
//! (guided-diffusion freezes the mean with `model_output.detach()`), while the MSE term trains eps.

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use glide_diffusion::{GaussianDiffusion, NoiseRng, NoiseSchedule};

type B = Autodiff<Flex>;

#[test]
fn vb_gradient_reaches_only_the_variance_channels() {
    let device = Default::default();
    let diffusion = GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
    let mut rng = NoiseRng::new(0);
    let x_start = rng.randn::<B, 4>([2, 3, 8, 8], &device).clamp(-1.0, 1.0);
    let noise = rng.randn::<B, 4>([2, 3, 8, 8], &device);
    let model_out: Tensor<B, 4> = rng.randn::<B, 4>([2, 6, 8, 8], &device).require_grad();
    let t = [0, 500];
    let x_t = diffusion.q_sample(x_start.clone(), &t, noise.clone());

    let terms = diffusion.training_losses(
        model_out.clone(),
        x_start.clone(),
        x_t.clone(),
        &t,
        noise.clone(),
        None,
    );
    let grads = terms.vb.sum().backward();
    let g = model_out.grad(&grads).expect("vb reaches the model output");
    let eps_grad = g.clone().narrow(1, 0, 3).abs().max().into_scalar();
    let var_grad = g.narrow(1, 3, 3).abs().max().into_scalar();
    assert_eq!(eps_grad, 0.0, "the VLB must not train eps");
    assert!(var_grad > 0.0, "the VLB must train the variance");

    let terms = diffusion.training_losses(model_out.clone(), x_start, x_t, &t, noise, None);
    let grads = terms.mse.sum().backward();
    let g = model_out
        .grad(&grads)
        .expect("mse reaches the model output");
    assert!(g.clone().narrow(1, 0, 3).abs().max().into_scalar() > 0.0);
    assert_eq!(
        g.narrow(1, 3, 3).abs().max().into_scalar(),
        0.0,
        "mse does not see the variance"
    );
}
