//! Classifier-free guidance (Ho & Salimans 2021; GLIDE §2.3, §3.2), as GLIDE's sampling notebook
//! does it: one forward of the batch `[cond; uncond]`, and guidance on the eps channels only.

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
    let [b2, c, _, _] = model_out.dims();
    assert!(b2 % 2 == 0, "guidance needs the batch [cond; uncond]");
    let b = b2 / 2;
    let cond = model_out.clone().narrow(0, 0, b);
    let uncond_eps = model_out.narrow(0, b, b).narrow(1, 0, eps_channels);
    let cond_eps = cond.clone().narrow(1, 0, eps_channels);
    let rest = cond.narrow(1, eps_channels, c - eps_channels);
    let eps = uncond_eps.clone() + (cond_eps - uncond_eps) * scale;
    Tensor::cat(vec![eps, rest], 1)
}
