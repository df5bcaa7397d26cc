//! GLIDE's diffusion loss (`GaussianDiffusion::training_losses`): the ε MSE plus the rescaled VLB
//! for the learned-range variance, or the v MSE for a v model; optionally min-SNR-γ weighted.
//! An inpainting model sees the batch's keep masks and the kept pixels as extra input channels.

use std::ops::Range;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use glide_diffusion::GaussianDiffusion;
use glide_diffusion::losses::LossTerms;
use glide_model::{ImageCond, Text2ImUNet};

use super::Objective;
use crate::batch::Batch;

/// The diffusion loss on the run's chain (whose mean type says whether the model predicts ε or v).
pub struct Hybrid {
    pub diffusion: GaussianDiffusion,
    /// Min-SNR-γ weighting of the MSE; `None` is unweighted (GLIDE).
    pub min_snr_gamma: Option<f64>,
}

impl Hybrid {
    /// The loss terms with the given MSE weighting (`None`: unweighted).
    pub fn terms<B: Backend>(
        &self,
        model: &Text2ImUNet<B>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
        min_snr_gamma: Option<f64>,
    ) -> LossTerms<B> {
        let diffusion = &self.diffusion;
        let (lo, hi) = (rows.start, rows.end);
        let x_start = batch.image_rows::<B>(&batch.x_start, lo..hi, device);
        let noise = batch.image_rows::<B>(&batch.noise, lo..hi, device);
        let [n, _, side, _] = x_start.dims();
        let t = &batch.t[lo..hi];
        let (tokens, mask) = batch.text_tensors::<B>(lo, hi, device);
        let x_t = diffusion.q_sample(x_start.clone(), t, noise.clone());
        let ts: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let ts = Tensor::<B, 1>::from_floats(ts.as_slice(), device);
        let cond = if batch.keep.is_empty() {
            ImageCond::none()
        } else {
            let keep = Tensor::<B, 4>::from_data(
                TensorData::new(
                    batch.keep[lo * side * side..hi * side * side].to_vec(),
                    [n, 1, side, side],
                ),
                device,
            );
            ImageCond::new(Some((x_start.clone(), keep)), None, side)
        };
        let out = model.forward(x_t.clone(), ts, tokens, mask, &cond);
        let weights = min_snr_gamma.map(|g| diffusion.min_snr_weights(t, g));
        diffusion.training_losses(out, x_start, x_t, t, noise, weights.as_deref())
    }
}

impl<B: AutodiffBackend> Objective<B> for Hybrid {
    fn losses(
        &self,
        model: &Text2ImUNet<B>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B> {
        self.terms(model, batch, rows, device, self.min_snr_gamma)
    }

    /// Unweighted, so that runs with different weightings compare.
    fn heldout_losses(
        &self,
        model: &Text2ImUNet<B::InnerBackend>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B::InnerBackend> {
        self.terms(model, batch, rows, device, None)
    }
}
