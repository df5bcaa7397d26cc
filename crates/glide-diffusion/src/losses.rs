//! The hybrid training loss of Nichol & Dhariwal 2021 (`training_losses` with `LossType.RESCALED_MSE`
//! and learned-range variance): L = mean‖ε − ε̂‖² + L_vb·(T/1000). At T = 1000 this is the paper's
//! λ = 0.001 on the summed VLB; the VLB term sees ε̂ detached, so it only trains the variance.

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

use crate::{GaussianDiffusion, ModelMeanType};

/// Per-example loss terms, each `[B]`: `loss` is what is minimised; for diffusion training `mse`
/// is the unweighted ε-MSE whatever the model predicts (a v model's is ᾱ_t times its v-MSE) and
/// `vb` the VLB term; for distillation `mse` is the unweighted x-space MSE and `vb` zero.
pub struct LossTerms<B: Backend> {
    pub loss: Tensor<B, 1>,
    pub mse: Tensor<B, 1>,
    pub vb: Tensor<B, 1>,
}

/// KL(N(μ₁, e^{lv₁}) ‖ N(μ₂, e^{lv₂})), elementwise.
pub fn normal_kl<B: Backend>(
    mean1: Tensor<B, 4>,
    logvar1: Tensor<B, 4>,
    mean2: Tensor<B, 4>,
    logvar2: Tensor<B, 4>,
) -> Tensor<B, 4> {
    ((logvar2.clone() - logvar1.clone()) - 1.0
        + (logvar1 - logvar2.clone()).exp()
        + (mean1 - mean2).powi_scalar(2) * logvar2.neg().exp())
        * 0.5
}

/// A fast approximation of the standard normal CDF (tanh form).
fn approx_standard_normal_cdf<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    ((x.clone() + x.powi_scalar(3) * 0.044715) * c)
        .tanh()
        .add_scalar(1.0)
        * 0.5
}

/// Log-likelihood of `x` (in [-1, 1], 256 bins) under a Gaussian discretised to those bins.
pub fn discretized_gaussian_log_likelihood<B: Backend>(
    x: Tensor<B, 4>,
    means: Tensor<B, 4>,
    log_scales: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let centered_x = x.clone() - means;
    let inv_stdv = log_scales.neg().exp();
    let cdf_plus =
        approx_standard_normal_cdf(inv_stdv.clone() * (centered_x.clone() + 1.0 / 255.0));
    let cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0));
    let log_cdf_plus = cdf_plus.clone().clamp_min(1e-12).log();
    let log_one_minus_cdf_min = (cdf_min.clone().neg() + 1.0).clamp_min(1e-12).log();
    let log_cdf_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    log_cdf_delta
        .mask_where(x.clone().greater_elem(0.999), log_one_minus_cdf_min)
        .mask_where(x.lower_elem(-0.999), log_cdf_plus)
}

/// Mean over every dimension but the batch.
pub fn mean_flat<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 1> {
    let b = x.dims()[0];
    x.reshape([b as i32, -1]).mean_dim(1).reshape([b])
}

impl GaussianDiffusion {
    /// `_vb_terms_bpd`: the VLB term in bits per dimension for a given model output (its eps
    /// channels should already be detached); the decoder NLL at t = 0, the KL elsewhere.
    pub fn vb_terms_bpd<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        x_start: Tensor<B, 4>,
        x_t: Tensor<B, 4>,
        t: &[usize],
    ) -> Tensor<B, 1> {
        let device = x_t.device();
        let (true_mean, _, true_log_variance_clipped) =
            self.q_posterior_mean_variance(x_start.clone(), x_t.clone(), t);
        let out = self.p_mean_variance(model_output, x_t, t, false, None);
        let ln2 = std::f64::consts::LN_2;
        let kl = mean_flat(normal_kl(
            true_mean,
            true_log_variance_clipped,
            out.mean.clone(),
            out.log_variance.clone(),
        )) / ln2;
        let decoder_nll = mean_flat(
            discretized_gaussian_log_likelihood(x_start, out.mean, out.log_variance * 0.5).neg(),
        ) / ln2;
        let at_zero: Vec<bool> = t.iter().map(|&i| i == 0).collect();
        let at_zero = Tensor::<B, 1, Bool>::from_data(TensorData::new(at_zero, [t.len()]), &device);
        kl.mask_where(at_zero, decoder_nll)
    }

    /// `training_losses` for a model output already computed on `x_t = q_sample(x_start, t, noise)`.
    /// `mse_weight[i]` (e.g. [`Self::min_snr_weights`]) weights example i's MSE (of ε or v) in
    /// `loss`; `None` is the original loss. `mse` (always of ε) and `vb` are unweighted.
    ///
    /// A [`ModelMeanType::V`] chain takes the MSE on v = √ᾱ·ε − √(1−ᾱ)·x₀ (Salimans & Ho 2022);
    /// such a model samples with the fixed posterior variance, so its variance channels are not
    /// trained and `vb` is zero.
    pub fn training_losses<B: Backend>(
        &self,
        model_output: Tensor<B, 4>,
        x_start: Tensor<B, 4>,
        x_t: Tensor<B, 4>,
        t: &[usize],
        noise: Tensor<B, 4>,
        mse_weight: Option<&[f64]>,
    ) -> LossTerms<B> {
        let c = x_t.dims()[1];
        let device = x_t.device();
        let pred = model_output.clone().narrow(1, 0, c);
        let (own_mse, vb, eps_scale) = match self.model_mean_type {
            ModelMeanType::V => {
                let target = self.v_target(x_start, t, noise);
                let own_mse = mean_flat((target - pred).powi_scalar(2));
                // ε − ε̂ = √ᾱ_t·(v − v̂): the ε-MSE is ᾱ_t times the v-MSE.
                let a: Vec<f32> = t.iter().map(|&i| self.alphas_cumprod[i] as f32).collect();
                let a = Tensor::<B, 1>::from_floats(a.as_slice(), &device);
                (own_mse, Tensor::zeros([t.len()], &device), Some(a))
            }
            ModelMeanType::Epsilon => {
                let var_values = model_output.narrow(1, c, c);
                // Learn the variance with the VLB only: the mean sees the eps prediction frozen.
                let frozen_out = Tensor::cat(vec![pred.clone().detach(), var_values], 1);
                let vb = self.vb_terms_bpd(frozen_out, x_start, x_t, t)
                    * (self.num_timesteps() as f64 / 1000.0);
                (mean_flat((noise - pred).powi_scalar(2)), vb, None)
            }
        };
        let weighted = match mse_weight {
            Some(w) => {
                let w: Vec<f32> = w.iter().map(|&v| v as f32).collect();
                own_mse.clone() * Tensor::<B, 1>::from_floats(w.as_slice(), &device)
            }
            None => own_mse.clone(),
        };
        let mse = match eps_scale {
            Some(a) => own_mse * a,
            None => own_mse,
        };
        LossTerms {
            loss: weighted + vb.clone(),
            mse,
            vb,
        }
    }

    /// The v target √ᾱ_t·ε − √(1−ᾱ_t)·x₀ of `x_t = q_sample(x_start, t, noise)`.
    pub fn v_target<B: Backend>(
        &self,
        x_start: Tensor<B, 4>,
        t: &[usize],
        noise: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        self.alpha_minus_sigma(noise, t, x_start)
    }

    /// Min-SNR-γ weights of the MSE (Hang et al. 2023, "Efficient Diffusion Training via
    /// Min-SNR Weighting Strategy"), SNR_t = ᾱ_t/(1 − ᾱ_t): min(SNR_t, γ)/SNR_t for an ε
    /// prediction, min(SNR_t, γ)/(SNR_t + 1) for a v prediction; either way the loss is
    /// min(SNR_t, γ)·‖x₀ − x̂₀‖². Noisy timesteps (SNR ≤ γ), where the caption decides the
    /// picture, keep their weight; nearly clean ones, whose many small gradients otherwise
    /// dominate, are weighted down.
    pub fn min_snr_weights(&self, t: &[usize], gamma: f64) -> Vec<f64> {
        t.iter()
            .map(|&t| {
                let a = self.alphas_cumprod[t];
                let snr = a / (1.0 - a);
                snr.min(gamma)
                    / match self.model_mean_type {
                        ModelMeanType::Epsilon => snr,
                        ModelMeanType::V => snr + 1.0,
                    }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{GaussianDiffusion, ModelMeanType, NoiseSchedule};

    #[test]
    fn min_snr_weights_are_one_when_noisy_and_gamma_over_snr_when_clean() {
        let d = GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
        let w = d.min_snr_weights(&[0, 500, 999], 5.0);
        let snr0 = d.alphas_cumprod[0] / (1.0 - d.alphas_cumprod[0]);
        assert!((w[0] - 5.0 / snr0).abs() < 1e-12 && w[0] < 1e-3, "{w:?}");
        assert_eq!(w[1], 1.0);
        assert_eq!(w[2], 1.0);
    }

    #[test]
    fn min_snr_weights_for_v_give_the_same_x0_weight_as_for_eps() {
        // ε-MSE = SNR·‖Δx₀‖², v-MSE = (SNR + 1)·‖Δx₀‖²: both weightings give min(SNR, γ)·‖Δx₀‖².
        let d = GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
        let t = [0, 100, 500, 900, 999];
        let we = d.min_snr_weights(&t, 5.0);
        let d = d.with_model_mean_type(ModelMeanType::V);
        let wv = d.min_snr_weights(&t, 5.0);
        for (i, &ti) in t.iter().enumerate() {
            let snr = d.alphas_cumprod[ti] / (1.0 - d.alphas_cumprod[ti]);
            let (x0_eps, x0_v) = (we[i] * snr, wv[i] * (snr + 1.0));
            assert!(
                (x0_eps - snr.min(5.0)).abs() < 1e-9 * snr.max(1.0),
                "t={ti}"
            );
            assert!((x0_v - snr.min(5.0)).abs() < 1e-9 * snr.max(1.0), "t={ti}");
        }
    }

    #[test]
    fn the_v_target_gives_back_x0_and_a_perfect_v_has_zero_loss() {
        use burn::backend::Flex;
        use burn::tensor::{Distribution, Tensor};
        let d = GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000)
            .with_model_mean_type(ModelMeanType::V);
        let dev = Default::default();
        let x0 = Tensor::<Flex, 4>::random([4, 3, 4, 4], Distribution::Uniform(-1.0, 1.0), &dev);
        let noise = Tensor::<Flex, 4>::random([4, 3, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let t = [0, 10, 500, 999];
        let x_t = d.q_sample(x0.clone(), &t, noise.clone());
        let v = d.v_target(x0.clone(), &t, noise.clone());
        let back = d.predict_xstart_from_v(x_t.clone(), &t, v.clone());
        let err: f32 = (back - x0.clone()).abs().max().into_scalar();
        assert!(err < 1e-4, "x0 from the v target is off by {err}");
        let junk_var = Tensor::<Flex, 4>::ones([4, 3, 4, 4], &dev) * 7.0;
        let out = Tensor::cat(vec![v, junk_var], 1);
        let terms = d.training_losses(out, x0, x_t, &t, noise, None);
        let loss: f32 = terms.loss.sum().into_scalar();
        assert!(loss.abs() < 1e-8, "a perfect v prediction has loss {loss}");
    }
}
