//! Inpainting pictures and numbers: the fine-tune's sample grids, and the comparison of an
//! inpainting model against the replacement trick on a base model (same images, masks, seeds).

use burn::tensor::backend::Backend;
use glide_pipeline::image::{batch_to_rgb8, encode_png, grid};
use glide_pipeline::{EditInput, EditRequest, GenerateRequest, Text2Im};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::TrainError;
use crate::batch::{Example, mix, pixels_to_chw};
use crate::masks::{MaskKind, draw_keep_mask};

/// A fixed edit task: an example, its first caption and a partial mask (never "everything").
pub struct EditCase {
    pub key: String,
    pub caption: String,
    /// `[3, S, S]` in [-1, 1].
    pub image: Vec<f32>,
    /// `[S, S]`, 1 = keep.
    pub keep: Vec<f32>,
}

/// `n` examples spread evenly over `examples` (sorted by key, so not all from one emoji group),
/// with seeded masks (rectangles, strokes or outpainting bands).
pub fn edit_cases(examples: &[Example], n: usize, size: usize, seed: u64) -> Vec<EditCase> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ 0x1a9a, 0));
    let n = n.min(examples.len());
    (0..n)
        .map(|i| &examples[i * examples.len() / n])
        .map(|ex| {
            let keep = loop {
                let (keep, kind) = draw_keep_mask(&mut rng, size);
                if kind != MaskKind::Everything {
                    break keep;
                }
            };
            let mut image = Vec::with_capacity(3 * size * size);
            pixels_to_chw(&ex.pixels, size, false, &mut image);
            EditCase {
                key: ex.key.clone(),
                caption: ex.captions.first().cloned().unwrap_or_default(),
                image,
                keep,
            }
        })
        .collect()
}

/// Runs one edit per case (seed = case index) and returns the samples `[3, S, S]` each.
pub fn run_edits<B: Backend>(
    pipe: &Text2Im<B>,
    cases: &[EditCase],
    guidance: f64,
    steps: usize,
) -> Result<Vec<Vec<f32>>, TrainError> {
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let req = EditRequest {
                generate: GenerateRequest {
                    prompt: c.caption.clone(),
                    guidance_scale: guidance,
                    steps,
                    sampler: glide_diffusion::Sampler::Ddim,
                    seed: i as u64,
                    ..Default::default()
                },
                ..Default::default()
            };
            let input = EditInput {
                image: c.image.clone(),
                keep: Some(c.keep.clone()),
            };
            let x = pipe.edit(&req, &input)?.run();
            Ok(x.into_data().convert::<f32>().to_vec::<f32>().expect("f32"))
        })
        .collect()
}

/// The input with its regenerated area grey, as RGB bytes (the middle picture of a triple).
pub fn masked_rgb(case: &EditCase, size: usize) -> Vec<u8> {
    let plane = size * size;
    let masked: Vec<f32> = (0..3 * plane)
        .map(|i| case.image[i] * case.keep[i % plane])
        .collect();
    glide_pipeline::image::to_rgb8(&masked, size, size)
}

/// A PNG with one row per case: original, masked input, then each method's result.
pub fn triples_png(
    cases: &[EditCase],
    results: &[&[Vec<f32>]],
    size: usize,
    text: &[(String, String)],
) -> Vec<u8> {
    let mut images = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        images.push(glide_pipeline::image::to_rgb8(&c.image, size, size));
        images.push(masked_rgb(c, size));
        for r in results {
            images.extend(batch_to_rgb8(&r[i], 1, size, size));
        }
    }
    let cols = 2 + results.len();
    let (rgb, w, h) = grid(&images, size, size, cols);
    encode_png(&rgb, w, h, text)
}

/// The fine-tune's sample grid: a row per case (original, masked input, fill) from `model`.
#[allow(clippy::too_many_arguments)]
pub fn inpaint_grid<B: Backend>(
    model: glide_model::Text2ImUNet<B>,
    config: &glide_model::GlideConfig,
    vocab: Option<&glide_tokenizer::PrunedVocab>,
    cases: &[EditCase],
    guidance: f64,
    steps: usize,
    device: &B::Device,
) -> Result<Vec<u8>, TrainError> {
    let mut tokenizer = glide_tokenizer::Tokenizer::gpt2();
    if let Some(v) = vocab {
        tokenizer = tokenizer.with_pruned(v)?;
    }
    let pipe = Text2Im::new(model, config.clone(), device.clone()).with_tokenizer(tokenizer);
    let results = run_edits(&pipe, cases, guidance, steps)?;
    let captions: Vec<&str> = cases.iter().map(|c| c.caption.as_str()).collect();
    let text = vec![
        ("prompts".to_string(), captions.join(" | ")),
        ("guidance".to_string(), guidance.to_string()),
        ("steps".to_string(), format!("ddim{steps}")),
    ];
    Ok(triples_png(cases, &[&results], config.image_size, &text))
}

/// How well an edit fills its mask, against the original pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EditScore {
    /// Mean squared error inside the mask, in [-1, 1] units.
    pub mse_inside: f64,
    /// Mean |difference| between neighbouring pixels across the mask edge (one kept, one
    /// regenerated): a seam shows up as a jump the original does not have.
    pub edge_jump: f64,
}

/// Scores one result; `None` when the mask has no edge.
pub fn score(image: &[f32], keep: &[f32], out: &[f32], size: usize) -> EditScore {
    let plane = size * size;
    let (mut se, mut n_in) = (0.0f64, 0usize);
    for j in 0..plane {
        if keep[j] < 0.5 {
            for c in 0..3 {
                se += f64::from(out[c * plane + j] - image[c * plane + j]).powi(2);
            }
            n_in += 3;
        }
    }
    let (mut jump, mut n_edge) = (0.0f64, 0usize);
    for y in 0..size {
        for x in 0..size {
            let p = y * size + x;
            for q in [
                (x + 1 < size).then_some(p + 1),
                (y + 1 < size).then_some(p + size),
            ]
            .into_iter()
            .flatten()
            {
                if (keep[p] < 0.5) != (keep[q] < 0.5) {
                    for c in 0..3 {
                        jump += f64::from((out[c * plane + p] - out[c * plane + q]).abs());
                    }
                    n_edge += 3;
                }
            }
        }
    }
    EditScore {
        mse_inside: se / n_in.max(1) as f64,
        edge_jump: jump / n_edge.max(1) as f64,
    }
}

/// Mean scores of results over cases.
pub fn mean_score(cases: &[EditCase], results: &[Vec<f32>], size: usize) -> EditScore {
    let mut m = EditScore::default();
    for (c, r) in cases.iter().zip(results) {
        let s = score(&c.image, &c.keep, r, size);
        m.mse_inside += s.mse_inside;
        m.edge_jump += s.edge_jump;
    }
    let n = cases.len().max(1) as f64;
    EditScore {
        mse_inside: m.mse_inside / n,
        edge_jump: m.edge_jump / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_fill_scores_zero_error_and_the_originals_edge() {
        let size = 4;
        let image: Vec<f32> = (0..48).map(|i| (i as f32 / 24.0) - 1.0).collect();
        let keep: Vec<f32> = (0..16).map(|j| if j % 4 < 2 { 1.0 } else { 0.0 }).collect();
        let s = score(&image, &keep, &image, size);
        assert_eq!(s.mse_inside, 0.0);
        let flat: Vec<f32> = image
            .iter()
            .enumerate()
            .map(|(i, &v)| if keep[i % 16] < 0.5 { 1.0 } else { v })
            .collect();
        let bad = score(&image, &keep, &flat, size);
        assert!(bad.mse_inside > 0.0);
        assert!(bad.edge_jump > s.edge_jump);
    }
}
