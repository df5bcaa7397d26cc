//! What a model asks of a GPU, estimated from its options before a byte is downloaded: the
//! weights (f32 on the device), the largest single weight and the largest activation (WebGPU
//! caps every buffer at the adapter's `maxBufferSize` and `maxStorageBufferBindingSize`; the
//! WebGPU default for the latter is 128 MiB), and a rough total for a sampling step.

use crate::GlideConfig;

/// The adapter limits a model must fit in (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuLimits {
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
}

impl GpuLimits {
    /// Both limits lowered to at most `cap` bytes (to preview what a smaller GPU allows).
    pub fn capped(self, cap: Option<u64>) -> Self {
        let Some(cap) = cap else { return self };
        Self {
            max_buffer_size: self.max_buffer_size.min(cap),
            max_storage_buffer_binding_size: self.max_storage_buffer_binding_size.min(cap),
        }
    }

    /// The largest buffer a kernel can use, and the limit's WebGPU name.
    pub fn largest_buffer(&self) -> (u64, &'static str) {
        if self.max_storage_buffer_binding_size <= self.max_buffer_size {
            (
                self.max_storage_buffer_binding_size,
                "maxStorageBufferBindingSize",
            )
        } else {
            (self.max_buffer_size, "maxBufferSize")
        }
    }
}

/// A model's GPU needs for `rows` UNet rows per evaluation (images × 2 with classifier-free
/// guidance), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuNeeds {
    /// All parameters in f32.
    pub weights: u64,
    /// The largest parameter tensor.
    pub largest_weight: u64,
    /// The largest activation of one evaluation (an attention matrix or a feature map).
    pub largest_activation: u64,
    /// Weights plus the activations a step keeps alive at once (an estimate).
    pub total: u64,
}

const F32: u64 = 4;

impl GlideConfig {
    /// Per level: (side in pixels, channels).
    fn levels(&self) -> Vec<(u64, u64)> {
        self.channel_mult()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    (self.image_size >> i).max(1) as u64,
                    (m * self.num_channels) as u64,
                )
            })
            .collect()
    }

    fn heads_at(&self, channels: u64) -> u64 {
        match self.num_head_channels {
            Some(hc) if hc > 0 => (channels / hc as u64).max(1),
            _ => self.num_heads.max(1) as u64,
        }
    }

    /// The estimate described in the module docs.
    pub fn gpu_needs(&self, rows: usize) -> GpuNeeds {
        let rows = rows.max(1) as u64;
        let levels = self.levels();
        let widest = levels.iter().map(|l| l.1).max().unwrap_or(1);
        let (xf, ctx) = (self.xf_width as u64, self.text_ctx as u64);
        let largest_weight = [
            self.n_vocab as u64 * xf,
            2 * widest * widest * 9,
            3 * widest * widest,
            4 * xf * xf,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            * F32;
        let mut largest_activation = 0;
        let mut skips = 0;
        for &(side, ch) in &levels {
            let pixels = side * side;
            // a decoder block's input: the feature map and its skip, concatenated
            largest_activation = largest_activation.max(rows * 2 * ch * pixels * F32);
            skips += (self.num_res_blocks as u64 + 1) * rows * ch * pixels * F32;
            if self.attention_resolutions.contains(&(side as usize)) {
                let keys = pixels + if self.xf_width > 0 { ctx } else { 0 };
                let weights = rows * self.heads_at(ch) * pixels * keys * F32;
                largest_activation = largest_activation.max(weights);
            }
        }
        let weights = self.approx_params() * F32;
        GpuNeeds {
            weights,
            largest_weight,
            largest_activation,
            total: weights + skips + 4 * largest_activation,
        }
    }
}

impl GpuNeeds {
    /// The needs when the weights are held in f16 ([`crate::weights::ParamStorage::F16`]): half
    /// the weights, plus one layer widened to f32 while it runs (estimated as the largest weight
    /// in f32, which is also the largest weight buffer a kernel then binds).
    pub fn held_in_f16(self) -> Self {
        let weights = self.weights / 2;
        GpuNeeds {
            weights,
            total: self.total - (self.weights - weights) + self.largest_weight,
            ..self
        }
    }

    /// The needs of a cascade: `self`'s stage, then `next`'s, with both stages' weights resident
    /// and one stage's activations alive at a time.
    pub fn then(self, next: GpuNeeds) -> GpuNeeds {
        let activations = (self.total - self.weights).max(next.total - next.weights);
        let weights = self.weights + next.weights;
        GpuNeeds {
            weights,
            largest_weight: self.largest_weight.max(next.largest_weight),
            largest_activation: self.largest_activation.max(next.largest_activation),
            total: weights + activations,
        }
    }
}

/// Why a model does not fit a GPU, as a sentence that says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuFitError {
    #[error(
        "This GPU allows buffers of at most {limit_mb:.0} MB ({limit_name}), but this model has a \
         weight of {need_mb:.0} MB: it cannot run on this GPU. Add ?backend=cpu to the address to \
         run it on the CPU, or pick a smaller model."
    )]
    Weights {
        limit_mb: f64,
        limit_name: &'static str,
        need_mb: f64,
    },
    #[error(
        "This GPU allows buffers of at most {limit_mb:.0} MB ({limit_name}), but {images} images \
         at once need one of {need_mb:.0} MB. Generate at most {fits} images at once, or add \
         ?backend=cpu to the address to run on the CPU."
    )]
    Batch {
        limit_mb: f64,
        limit_name: &'static str,
        need_mb: f64,
        images: usize,
        fits: usize,
    },
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Checks that the weights and `images` images (with `guided` doubling the rows) fit `limits`.
pub fn check_gpu_fit(
    cfg: &GlideConfig,
    images: usize,
    guided: bool,
    limits: &GpuLimits,
) -> Result<GpuNeeds, GpuFitError> {
    let per_image = if guided { 2 } else { 1 };
    let needs = cfg.gpu_needs(images * per_image);
    let (limit, limit_name) = limits.largest_buffer();
    if needs.largest_weight > limit {
        return Err(GpuFitError::Weights {
            limit_mb: mb(limit),
            limit_name,
            need_mb: mb(needs.largest_weight),
        });
    }
    if needs.largest_activation > limit {
        let fits = (1..images)
            .rev()
            .find(|&n| cfg.gpu_needs(n * per_image).largest_activation <= limit)
            .unwrap_or(0);
        return Err(GpuFitError::Batch {
            limit_mb: mb(limit),
            limit_name,
            need_mb: mb(needs.largest_activation),
            images,
            fits,
        });
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBGPU_DEFAULT: GpuLimits = GpuLimits {
        max_buffer_size: 256 << 20,
        max_storage_buffer_binding_size: 128 << 20,
    };

    #[test]
    fn the_released_base_fits_webgpu_defaults_for_one_image_not_for_many() {
        let base = GlideConfig::base();
        let one = check_gpu_fit(&base, 1, true, &WEBGPU_DEFAULT).unwrap();
        // the 50,257 × 512 token embedding
        assert_eq!(one.largest_weight, 50_257 * 512 * 4);
        // 385M parameters in f32, within the estimate's slack (it counts 346M)
        assert!((1.3e9..2.0e9).contains(&(one.weights as f64)), "{one:?}");
        let e = check_gpu_fit(&base, 16, true, &WEBGPU_DEFAULT).unwrap_err();
        let GpuFitError::Batch { fits, .. } = e else {
            panic!("{e:?}")
        };
        assert!((1..16).contains(&fits));
        assert!(check_gpu_fit(&base, fits, true, &WEBGPU_DEFAULT).is_ok());
        assert!(e.to_string().contains(&format!("at most {fits} images")));
        let tiny = GpuLimits {
            max_buffer_size: 1 << 20,
            max_storage_buffer_binding_size: 1 << 30,
        };
        let e = check_gpu_fit(&base, 1, true, &tiny)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("maxBufferSize") && e.contains("?backend=cpu"),
            "{e}"
        );
    }

    #[test]
    fn weights_held_in_f16_need_half_the_memory_and_the_same_buffers() {
        let full = GlideConfig::base().gpu_needs(2);
        let half = full.held_in_f16();
        assert_eq!(half.weights, full.weights / 2);
        assert_eq!(half.largest_weight, full.largest_weight);
        assert_eq!(half.largest_activation, full.largest_activation);
        // the released base: ~1.5 GB of f32 weights, ~0.77 GB in f16
        assert!(half.total + full.weights / 2 - full.largest_weight == full.total);
        assert!(half.total < full.total * 3 / 4, "{half:?} vs {full:?}");
    }

    #[test]
    fn a_cascade_holds_both_stages_weights_and_one_stages_activations() {
        let (base, up) = (GlideConfig::base(), GlideConfig::upsample());
        let (a, b) = (base.gpu_needs(2), up.gpu_needs(2));
        let both = a.then(b);
        assert_eq!(both.weights, a.weights + b.weights);
        assert_eq!(
            both.total - both.weights,
            (a.total - a.weights).max(b.total - b.weights)
        );
        assert!(both.total > a.total.max(b.total));
        assert_eq!(
            both.largest_activation,
            a.largest_activation.max(b.largest_activation)
        );
    }
}
