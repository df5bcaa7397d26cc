//! CLIP's contrastive objective (Radford et al. 2021, the symmetric InfoNCE loss) on (image,
//! caption) pairs, with images noised by `q_sample` at the batch's uniform t as GLIDE trains its
//! noise-aware CLIP (§2.4), or clean at t = 0 for the evaluation CLIP. The negatives of a pair
//! are the other pairs of the same worker's share of the batch.

use std::ops::Range;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use glide_diffusion::GaussianDiffusion;
use glide_diffusion::losses::LossTerms;
use glide_model::clip::NoisedClip;

use super::Objective;
use crate::batch::Batch;

/// The contrastive loss at the CLIP's own `logit_scale` (the temperature guidance uses too).
pub struct Contrastive {
    /// The chain whose noisy images the CLIP learns to read.
    pub diffusion: GaussianDiffusion,
    /// Noise the images at the batch's t (`false`: clean images, t = 0).
    pub noised: bool,
}

impl Contrastive {
    /// The images `rows` as the CLIP sees them and their timesteps.
    fn images<B: Backend>(
        &self,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Vec<usize>) {
        let x_start = batch.image_rows::<B>(&batch.x_start, rows.clone(), device);
        if !self.noised {
            return (x_start, vec![0; rows.len()]);
        }
        let noise = batch.image_rows::<B>(&batch.noise, rows.clone(), device);
        let t = batch.t[rows].to_vec();
        (self.diffusion.q_sample(x_start, &t, noise), t)
    }

    /// Normalised image and caption embeddings of `rows`, each `[n, n_embd]`.
    pub fn embeddings<B: Backend>(
        &self,
        clip: &NoisedClip<B>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (x, t) = self.images(batch, rows.clone(), device);
        let z_i = clip.image_embeddings(x, &t);
        let (tokens, mask) = batch.text_tensors::<B>(rows.start, rows.end, device);
        let n = rows.len();
        let lens = mask.int().sum_dim(1).clamp_min(1).reshape([n]);
        (z_i, clip.text_embeddings(tokens, lens))
    }

    /// Per-pair loss `[n]`: the mean of the image → caption and caption → image cross-entropies
    /// of the `n × n` similarity logits.
    ///
    /// # Shapes
    /// - z_i, z_t: `[n, n_embd]` → `[n]`
    pub fn pair_losses<B: Backend>(
        z_i: Tensor<B, 2>,
        z_t: Tensor<B, 2>,
        logit_scale: f64,
    ) -> Tensor<B, 1> {
        let [n, _] = z_i.dims();
        let logits = z_i.matmul(z_t.transpose()) * logit_scale;
        let eye = Tensor::<B, 2>::from_data(
            TensorData::new(
                (0..n * n)
                    .map(|k| if k / n == k % n { 1.0f32 } else { 0.0 })
                    .collect(),
                [n, n],
            ),
            &logits.device(),
        );
        let i2t = (log_softmax(logits.clone(), 1) * eye.clone()).sum_dim(1);
        let t2i = (log_softmax(logits, 0) * eye).sum_dim(0).transpose();
        ((i2t + t2i) * -0.5).reshape([n])
    }

    fn terms<B: Backend>(
        &self,
        clip: &NoisedClip<B>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B> {
        let n = rows.len();
        let (z_i, z_t) = self.embeddings(clip, batch, rows, device);
        let loss = Self::pair_losses(z_i, z_t, clip.config.logit_scale);
        // The contrastive loss has no MSE or VLB term.
        let zero = Tensor::<B, 1>::zeros([n], device);
        LossTerms {
            loss,
            mse: zero.clone(),
            vb: zero,
        }
    }
}

impl<B: AutodiffBackend> Objective<B, NoisedClip<B>> for Contrastive {
    fn losses(
        &self,
        model: &NoisedClip<B>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B> {
        self.terms(model, batch, rows, device)
    }

    fn heldout_losses(
        &self,
        model: &NoisedClip<B::InnerBackend>,
        batch: &Batch,
        rows: Range<usize>,
        device: &B::Device,
    ) -> LossTerms<B::InnerBackend> {
        self.terms(model, batch, rows, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Matching pairs give a loss near 0 at a high temperature, shuffled pairs a loss near
    /// log n's neighbourhood or above; the loss is the mean of both directions.
    #[test]
    fn the_loss_rewards_matching_pairs() {
        let d = Default::default();
        let z = Tensor::<Flex, 2>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8], [3, 2]),
            &d,
        );
        let matched = Contrastive::pair_losses(z.clone(), z.clone(), 30.0)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let swapped = Tensor::cat(
            vec![z.clone().narrow(0, 1, 2), z.clone().narrow(0, 0, 1)],
            0,
        );
        let wrong = Contrastive::pair_losses(z, swapped, 30.0)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!(matched.iter().all(|&l| l < 0.01), "{matched:?}");
        assert!(wrong.iter().all(|&l| l > 5.0), "{wrong:?}");
        // At logit scale 0 every caption is equally likely: log 3 each way.
        let flat = Contrastive::pair_losses(
            Tensor::<Flex, 2>::ones([3, 2], &d),
            Tensor::<Flex, 2>::ones([3, 2], &d),
            0.0,
        )
        .into_data()
        .to_vec::<f32>()
        .unwrap();
        for l in flat {
            assert!((l - 3f32.ln()).abs() < 1e-5, "{l}");
        }
    }
}
