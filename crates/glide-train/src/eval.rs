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
    /// Index into `groups` of each image.
    group_of: Vec<usize>,
    groups: Vec<String>,
}

impl Reference {
    pub fn new(examples: &[&Example], size: usize) -> Self {
        let mut groups: Vec<String> = examples.iter().map(|e| e.base()).collect();
        groups.sort();
        groups.dedup();
        Self {
            images: examples.iter().map(|e| shrink(&e.pixels, size)).collect(),
            group_of: examples
                .iter()
                .map(|e| groups.binary_search(&e.base()).expect("listed above"))
                .collect(),
            groups,
        }
    }

    /// The emoji group of the image nearest to `rgb` (a `size`² RGB image).
    pub fn nearest(&self, rgb: &[u8], size: usize) -> &str {
        self.nearest_in(&self.distances(rgb, size))
    }

    /// The emoji group with the smallest distance in `d`.
    pub fn nearest_in(&self, d: &GroupDistances) -> &str {
        let best = (0..d.len())
            .min_by(|&a, &b| d[a].total_cmp(&d[b]))
            .unwrap_or(0);
        &self.groups[best]
    }

    /// Each emoji group's squared L2 distance to `rgb`: that of its nearest image.
    pub fn distances(&self, rgb: &[u8], size: usize) -> GroupDistances {
        let q = shrink(rgb, size);
        let mut d = vec![f32::MAX; self.groups.len()];
        for (r, &g) in self.images.iter().zip(&self.group_of) {
            let dist: f32 = r.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum();
            d[g] = d[g].min(dist);
        }
        d
    }

    /// Rank (1 = nearest) of the emoji group `target` in `d`, counting the groups strictly
    /// nearer; `None` when the reference has no such group.
    pub fn rank(&self, d: &GroupDistances, target: &str) -> Option<usize> {
        let t = self
            .groups
            .binary_search_by(|g| g.as_str().cmp(target))
            .ok()?;
        Some(1 + d.iter().filter(|&&x| x < d[t]).count())
    }
}

/// Per emoji group of a [`Reference`], the distance of its nearest image to one sample.
pub type GroupDistances = Vec<f32>;

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
/// shuffled (chance level). `top5` and `median_rank` rank the captioned emoji among all emoji
/// groups by their nearest image: a finer signal than top-1 while a model is still learning.
pub struct NnScore {
    pub accuracy: f64,
    pub top5: f64,
    pub median_rank: usize,
    pub chance: f64,
    pub chance_top5: f64,
    pub n: usize,
    /// The emoji group nearest to each sample.
    pub nearest: Vec<String>,
    /// The rank of each sample's own emoji (1 = nearest), in caption order.
    pub ranks: Vec<usize>,
}

/// The project's paraphrase set: prompts in a visitor's words, written apart from the training
/// captions, each with the emoji it names (`assets/paraphrases.tsv`, read by [`parse_paraphrases`]).
pub const PARAPHRASES: &str = include_str!("../assets/paraphrases.tsv");

/// (prompt, emoji base) pairs of a paraphrase file: one `prompt<TAB>base` per line; blank lines
/// and lines starting with `#` are skipped.
pub fn parse_paraphrases(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| match l.split_once('\t') {
            Some((prompt, base)) if !prompt.trim().is_empty() && !base.trim().is_empty() => {
                Ok((prompt.trim().to_string(), base.trim().to_string()))
            }
            _ => Err(format!(
                "line {} of the paraphrase set is not `prompt<TAB>emoji base`: {l:?}; fix or remove it",
                i + 1
            )),
        })
        .collect()
}

/// One row of a per-group table: top-1 and top-5 shares and the median rank over the samples
/// whose caption's emoji is in `group`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    pub group: String,
    pub top1: f64,
    pub top5: f64,
    pub median_rank: usize,
    pub n: usize,
}

/// [`NnScore`]'s ranks split by group (`groups[i]` is caption i's), groups in name order.
pub fn group_rows(ranks: &[usize], groups: &[String]) -> Vec<GroupRow> {
    assert_eq!(ranks.len(), groups.len(), "one group per sample");
    let mut by_group: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (&r, g) in ranks.iter().zip(groups) {
        by_group.entry(g.as_str()).or_default().push(r);
    }
    by_group
        .into_iter()
        .map(|(group, mut r)| {
            let share = |k: usize| r.iter().filter(|&&x| x <= k).count() as f64 / r.len() as f64;
            let (top1, top5) = (share(1), share(5));
            r.sort_unstable();
            GroupRow {
                group: group.to_string(),
                top1,
                top5,
                median_rank: r[r.len() / 2],
                n: r.len(),
            }
        })
        .collect()
}

impl NnScore {
    /// Scores the samples' group distances against the captions' emoji `targets`.
    pub fn new(reference: &Reference, distances: &[GroupDistances], targets: &[&str]) -> Self {
        assert_eq!(distances.len(), targets.len(), "one target per sample");
        let ranks = |targets: &[&str]| -> Vec<usize> {
            distances
                .iter()
                .zip(targets)
                .map(|(d, t)| reference.rank(d, t).unwrap_or(usize::MAX))
                .collect()
        };
        let share = |r: &[usize], k: usize| {
            r.iter().filter(|&&r| r <= k).count() as f64 / r.len().max(1) as f64
        };
        let mut own = ranks(targets);
        let in_order = own.clone();
        let mut shuffled = targets.to_vec();
        shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(7));
        let chance = ranks(&shuffled);
        let (accuracy, top5) = (share(&own, 1), share(&own, 5));
        own.sort_unstable();
        Self {
            accuracy,
            top5,
            median_rank: own.get(own.len() / 2).copied().unwrap_or(0),
            chance: share(&chance, 1),
            chance_top5: share(&chance, 5),
            n: targets.len(),
            nearest: distances
                .iter()
                .map(|d| reference.nearest_in(d).to_string())
                .collect(),
            ranks: in_order,
        }
    }
}

/// Samples one image per caption (DDIM, `steps`, guidance `scale`, batches of 32, batch i seeded
/// by `seed · 1,000,003 + i`) and scores them against `reference`.
#[allow(clippy::too_many_arguments)]
pub fn nn_score<B: Backend>(
    model: Text2ImUNet<B>,
    config: &GlideConfig,
    vocab: Option<&PrunedVocab>,
    captions: &[(String, String)],
    scale: f64,
    steps: usize,
    seed: u64,
    reference: &Reference,
    device: &B::Device,
) -> Result<NnScore, TrainError> {
    let mut tokenizer = Tokenizer::gpt2();
    if let Some(v) = vocab {
        tokenizer = tokenizer.with_pruned(v)?;
    }
    let pipe = Text2Im::new(model, config.clone(), device.clone()).with_tokenizer(tokenizer);
    let s = config.image_size;
    let mut distances = Vec::with_capacity(captions.len());
    for (i, chunk) in captions.chunks(32).enumerate() {
        let prompts: Vec<&str> = chunk.iter().map(|c| c.0.as_str()).collect();
        let req = GenerateRequest {
            guidance_scale: scale,
            steps,
            sampler: glide_diffusion::Sampler::Ddim,
            seed: seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            ..Default::default()
        };
        let x = pipe.generate_each(&prompts, &req)?.run();
        let raw = x.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
        for rgb in batch_to_rgb8(&raw, prompts.len(), s, s) {
            distances.push(reference.distances(&rgb, s));
        }
    }
    let targets: Vec<&str> = captions.iter().map(|c| c.1.as_str()).collect();
    Ok(NnScore::new(reference, &distances, &targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paraphrase_set_parses_and_bad_lines_say_where() {
        let set = parse_paraphrases(PARAPHRASES).unwrap();
        assert!(set.len() >= 80, "{} paraphrases", set.len());
        assert!(set.iter().any(|(p, b)| p == "cheeseburger" && b == "1F354"));
        let err = parse_paraphrases("# c\nok\t1F34E\nno tab here\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn group_rows_split_ranks_by_group() {
        let ranks = [1, 3, 1, 9, 2, 1];
        let groups: Vec<String> = ["b", "a", "b", "a", "a", "c"].map(String::from).to_vec();
        let rows = group_rows(&ranks, &groups);
        let names: Vec<&str> = rows.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let a = &rows[0];
        assert_eq!((a.n, a.median_rank), (3, 3));
        assert!((a.top1 - 0.0).abs() < 1e-12 && (a.top5 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((rows[1].top1, rows[1].n), (1.0, 2));
    }

    fn example(key: &str, base: &str, grey: u8) -> Example {
        Example {
            key: key.into(),
            pixels: vec![grey; 16 * 16 * 3],
            captions: vec![],
            flip_ok: true,
            meta: serde_json::json!({ "base": base }),
        }
    }

    #[test]
    fn ranks_count_emoji_groups_by_their_nearest_image() {
        // Two images of "b" (grey 100 and 200), one of "a" (0), one of "c" (150).
        let ex = [
            example("b1", "b", 100),
            example("a1", "a", 0),
            example("b2", "b", 200),
            example("c1", "c", 150),
        ];
        let reference = Reference::new(&ex.iter().collect::<Vec<_>>(), 16);
        let sample = vec![190u8; 16 * 16 * 3];
        assert_eq!(reference.nearest(&sample, 16), "b");
        let d = reference.distances(&sample, 16);
        assert_eq!(reference.rank(&d, "b"), Some(1));
        assert_eq!(reference.rank(&d, "c"), Some(2));
        assert_eq!(reference.rank(&d, "a"), Some(3));
        assert_eq!(reference.rank(&d, "z"), None);

        // Samples near "a", "c", "b": targets a, b, b → ranks 1, 2, 1.
        let d: Vec<GroupDistances> = [5u8, 140, 120]
            .iter()
            .map(|&g| reference.distances(&vec![g; 16 * 16 * 3], 16))
            .collect();
        let score = NnScore::new(&reference, &d, &["a", "b", "b"]);
        assert!((score.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(score.top5, 1.0, "three groups: every rank is within 5");
        assert_eq!(score.median_rank, 1);
        assert_eq!(score.n, 3);
        assert_eq!(score.nearest, ["a", "c", "b"]);
    }
}
