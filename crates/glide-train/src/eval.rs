//! A number a person can check: how often a sample's nearest dataset image (L2 at 16 px) is an
//! image of the emoji its caption names, beside the same figure with shuffled captions (chance).

use burn::tensor::backend::Backend;
use glide_model::{GlideConfig, Text2ImUNet};
use glide_pipeline::image::batch_to_rgb8;
use glide_pipeline::{GenerateRequest, Text2Im};
use glide_tokenizer::{PrunedVocab, Tokenizer};
use image::imageops::FilterType;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::TrainError;
use crate::batch::Example;

/// Side of the images compared.
pub const NN_SIZE: u32 = 16;

fn shrink(rgb: &[u8], size: usize) -> Vec<f32> {
    let img = image::RgbImage::from_raw(size as u32, size as u32, rgb.to_vec())
        .expect("rgb buffer of the stated size");
    image::imageops::resize(&img, NN_SIZE, NN_SIZE, FilterType::Triangle)
        .into_raw()
        .into_iter()
        .map(f32::from)
        .collect()
}

/// The reference set: every dataset image at 16 px with its emoji group.
pub struct Reference {
    images: Vec<Vec<f32>>,
    bases: Vec<String>,
}

impl Reference {
    pub fn new(examples: &[&Example], size: usize) -> Self {
        Self {
            images: examples.iter().map(|e| shrink(&e.pixels, size)).collect(),
            bases: examples.iter().map(|e| e.base()).collect(),
        }
    }

    /// The emoji group of the image nearest to `rgb` (a `size`² RGB image).
    pub fn nearest(&self, rgb: &[u8], size: usize) -> &str {
        let q = shrink(rgb, size);
        let mut best = (f32::MAX, 0);
        for (i, r) in self.images.iter().enumerate() {
            let d: f32 = r.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum();
            if d < best.0 {
                best = (d, i);
            }
        }
        &self.bases[best.1]
    }
}

/// `n` captions with their emoji group: one example per emoji group (the first by key), its
/// first caption, chosen by a seeded shuffle.
pub fn pick_captions(examples: &[Example], n: usize, seed: u64) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeMap::new();
    for ex in examples {
        if let Some(c) = ex.captions.first() {
            seen.entry(ex.base()).or_insert_with(|| c.clone());
        }
    }
    let mut all: Vec<(String, String)> = seen.into_iter().map(|(b, c)| (c, b)).collect();
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    all.truncate(n);
    all
}

/// Nearest-neighbour accuracy of one sample per caption, and the same with the captions' groups
/// shuffled (chance level).
pub struct NnScore {
    pub accuracy: f64,
    pub chance: f64,
    pub n: usize,
}

/// Samples one image per caption (DDIM, `steps`, guidance `scale`, batches of 32 seeded by their
/// index) and scores them against `reference`.
#[allow(clippy::too_many_arguments)]
pub fn nn_score<B: Backend>(
    model: Text2ImUNet<B>,
    config: &GlideConfig,
    vocab: Option<&PrunedVocab>,
    captions: &[(String, String)],
    scale: f64,
    steps: usize,
    reference: &Reference,
    device: &B::Device,
) -> Result<NnScore, TrainError> {
    let mut tokenizer = Tokenizer::gpt2();
    if let Some(v) = vocab {
        tokenizer = tokenizer.with_pruned(v)?;
    }
    let pipe = Text2Im::new(model, config.clone(), device.clone()).with_tokenizer(tokenizer);
    let s = config.image_size;
    let mut nearest = Vec::with_capacity(captions.len());
    for (i, chunk) in captions.chunks(32).enumerate() {
        let prompts: Vec<&str> = chunk.iter().map(|c| c.0.as_str()).collect();
        let req = GenerateRequest {
            guidance_scale: scale,
            steps,
            sampler: glide_diffusion::Sampler::Ddim,
            seed: i as u64,
            ..Default::default()
        };
        let x = pipe.generate_each(&prompts, &req)?.run();
        let raw = x.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
        for rgb in batch_to_rgb8(&raw, prompts.len(), s, s) {
            nearest.push(reference.nearest(&rgb, s).to_string());
        }
    }
    let hits = |targets: &[&String]| {
        nearest.iter().zip(targets).filter(|(a, b)| a == *b).count() as f64
            / captions.len().max(1) as f64
    };
    let targets: Vec<&String> = captions.iter().map(|c| &c.1).collect();
    let mut shuffled = targets.clone();
    shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(7));
    Ok(NnScore {
        accuracy: hits(&targets),
        chance: hits(&shuffled),
        n: captions.len(),
    })
}
