//! Training batches: examples resized once to the model's size, then per step a deterministic
//! draw of images, captions (20% empty), flips, timesteps and noise, made on a background thread.
//!
//! Everything a step sees is derived from `(seed, step)`, so a resumed run sees exactly the batches
//! an uninterrupted one would.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use glide_data::Sample;
use glide_diffusion::NoiseRng;
use glide_tokenizer::Tokenizer;
use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::TrainError;
use crate::config::{DataConfig, TrainConfig};
use crate::masks::draw_keep_mask;

/// One training image at the model's resolution, with its caption alternatives.
#[derive(Clone, Debug)]
pub struct Example {
    pub key: String,
    /// RGB, row-major `[size, size, 3]`.
    pub pixels: Vec<u8>,
    /// Caption alternatives (one is drawn per use); empty means unconditional.
    pub captions: Vec<String>,
    /// Whether a horizontal flip keeps the meaning (false for text-like glyphs and arrows).
    pub flip_ok: bool,
    pub meta: serde_json::Value,
}

impl Example {
    /// The emoji group (`base` in the shard metadata) an example shows.
    pub fn base(&self) -> String {
        self.meta
            .get("base")
            .and_then(|v| v.as_str())
            .map_or_else(|| self.key.clone(), str::to_string)
    }
}

/// The training and held-out examples of a run.
pub struct TrainData {
    pub train: Vec<Example>,
    pub heldout: Vec<Example>,
    pub size: usize,
    /// One line for the log: where the data came from and what was skipped.
    pub summary: String,
}

fn to_example(s: Sample, size: usize) -> Example {
    let img = if s.image.width() as usize == size && s.image.height() as usize == size {
        s.image
    } else {
        image::imageops::resize(&s.image, size as u32, size as u32, FilterType::Lanczos3)
    };
    Example {
        key: s.key,
        pixels: img.into_raw(),
        captions: s.captions,
        flip_ok: s.flip_ok,
        meta: s.meta,
    }
}

/// A stable 64-bit mix of a seed and a counter (splitmix64).
pub fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl TrainData {
    /// Reads the configured shards or folder and resizes every image to `size`.
    pub fn load(cfg: &DataConfig, size: usize) -> Result<Self, TrainError> {
        let (mut train, mut heldout, summary) = if let Some(dir) = &cfg.shards {
            let dir = Path::new(dir);
            let train_paths = match glide_data::shard_paths(dir, "train") {
                Ok(p) if !p.is_empty() => p,
                Ok(_) | Err(glide_data::DataError::NoShards { .. }) => {
                    return Err(TrainError::NoTrainShards(dir.display().to_string()));
                }
                Err(e) => return Err(e.into()),
            };
            // Small builds hold nothing out; the held-out loss is then skipped.
            let heldout_paths = match glide_data::shard_paths(dir, "heldout") {
                Err(glide_data::DataError::NoShards { .. }) => Vec::new(),
                other => other?,
            };
            let (train, mut problems) = glide_data::read_shards_lenient(&train_paths)?;
            let (heldout, held_problems) = glide_data::read_shards_lenient(&heldout_paths)?;
            problems.extend(held_problems);
            for p in &problems {
                eprintln!("warning: {p} (training goes on without the damaged part)");
            }
            let summary = format!(
                "{} training and {} held-out images from {} shards in {}{}",
                train.len(),
                heldout.len(),
                train_paths.len() + heldout_paths.len(),
                dir.display(),
                match problems.len() {
                    0 => String::new(),
                    n => format!(" ({n} damaged samples or shard ends skipped, named above)"),
                }
            );
            (train, heldout, summary)
        } else if let Some(dir) = &cfg.folder {
            let (mut all, s) = glide_data::read_folder(Path::new(dir))?;
            // A stable, content-independent split by key.
            all.sort_by_key(|x| glide_data::split::stable_hash(&[x.key.as_bytes()]));
            let n_held = ((all.len() as f64 * cfg.heldout_fraction).round() as usize)
                .min(all.len().saturating_sub(1));
            let heldout = all.split_off(all.len() - n_held);
            let summary = format!(
                "{} images from {} ({} skipped as unreadable, {} with empty and {} with missing \
                 captions); {} held out",
                s.loaded,
                dir,
                s.skipped_unreadable,
                s.empty_captions,
                s.missing_captions,
                heldout.len()
            );
            (all, heldout, summary)
        } else {
            return Err(crate::config::ConfigError::NoData.into());
        };
        train.retain(|s| cfg.keeps(&s.meta));
        heldout.retain(|s| cfg.keeps(&s.meta));
        let summary = match &cfg.groups {
            Some(g) => format!(
                "{summary}; {} training and {} held-out images kept of the groups {}",
                train.len(),
                heldout.len(),
                g.join(", ")
            ),
            None => summary,
        };
        train.sort_by(|a, b| a.key.cmp(&b.key));
        heldout.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(limit) = cfg.limit {
            train.truncate(limit);
        }
        if train.is_empty() {
            return Err(TrainError::EmptyData);
        }
        let convert = |v: Vec<Sample>| v.into_iter().map(|s| to_example(s, size)).collect();
        Ok(Self {
            train: convert(std::mem::take(&mut train)),
            heldout: convert(std::mem::take(&mut heldout)),
            size,
            summary,
        })
    }

    /// Every caption alternative of the training set (the vocabulary is pruned to these).
    pub fn captions(&self) -> impl Iterator<Item = &str> {
        self.train
            .iter()
            .flat_map(|e| e.captions.iter().map(String::as_str))
    }
}

/// One batch, ready to become tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub step: usize,
    /// `[B, 3, size, size]` in [-1, 1].
    pub x_start: Vec<f32>,
    /// Embedding rows `[B, text_ctx]` and mask (true = real token).
    pub tokens: Vec<i64>,
    pub mask: Vec<bool>,
    /// Uniform timesteps in 0..T.
    pub t: Vec<usize>,
    /// `[B, 3, size, size]` standard normal.
    pub noise: Vec<f32>,
    pub captions: Vec<String>,
    /// The examples' keys (distillation on stored chains looks them up).
    pub keys: Vec<String>,
    /// Inpainting models: keep masks `[B, 1, size, size]` (1 = keep); empty otherwise.
    pub keep: Vec<f32>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.t.len()
    }

    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// Rows `rows` of one of the batch's images (`x_start` or `noise`) as `[n, 3, S, S]`.
    pub fn image_rows<B: Backend>(
        &self,
        images: &[f32],
        rows: std::ops::Range<usize>,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let px = images.len() / self.len();
        let side = ((px / 3) as f64).sqrt() as usize;
        let n = rows.len();
        Tensor::from_data(
            TensorData::new(
                images[rows.start * px..rows.end * px].to_vec(),
                [n, 3, side, side],
            ),
            device,
        )
    }

    /// Caption rows and mask of examples `lo..hi` as tensors `[n, text_ctx]`.
    pub fn text_tensors<B: Backend>(
        &self,
        lo: usize,
        hi: usize,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
        let ctx = self.tokens.len() / self.len();
        let n = hi - lo;
        (
            Tensor::from_data(
                TensorData::new(self.tokens[lo * ctx..hi * ctx].to_vec(), [n, ctx]),
                device,
            ),
            Tensor::from_data(
                TensorData::new(self.mask[lo * ctx..hi * ctx].to_vec(), [n, ctx]),
                device,
            ),
        )
    }
}

/// Writes `pixels` (HWC u8) as CHW f32 in [-1, 1], flipped horizontally if asked.
pub fn pixels_to_chw(pixels: &[u8], size: usize, flip: bool, out: &mut Vec<f32>) {
    for c in 0..3 {
        for y in 0..size {
            for x in 0..size {
                let sx = if flip { size - 1 - x } else { x };
                out.push(f32::from(pixels[(y * size + sx) * 3 + c]) / 127.5 - 1.0);
            }
        }
    }
}

/// The examples of each emoji group (`base`), in order of first appearance.
fn emoji_groups(data: &[Example]) -> Vec<Vec<usize>> {
    let mut slots = std::collections::HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, ex) in data.iter().enumerate() {
        let slot = *slots.entry(ex.base()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push(i);
    }
    groups
}

/// How a run's batches are drawn: image size, caption context, batch size, timesteps, the share
/// of empty captions, flips, emoji balancing, the seed, and inpainting masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Draws {
    pub size: usize,
    pub text_ctx: usize,
    pub batch_size: usize,
    pub num_timesteps: usize,
    pub p_uncond: f64,
    pub flip: bool,
    pub balance: bool,
    pub seed: u64,
    pub inpaint: bool,
    /// The share of captions reworded (`data.reword`).
    pub reword: f64,
}

/// Draws the batch of any step from the training examples.
pub struct BatchMaker {
    data: Arc<Vec<Example>>,
    tokenizer: Tokenizer,
    size: usize,
    text_ctx: usize,
    batch_size: usize,
    num_timesteps: usize,
    p_uncond: f64,
    flip: bool,
    seed: u64,
    /// Draw a keep mask per example (inpainting fine-tune).
    inpaint: bool,
    /// The share of captions reworded.
    reword: f64,
    /// With `data.balance`: the examples of each emoji group; an epoch draws each group once.
    groups: Option<Vec<Vec<usize>>>,
    epoch: Option<(usize, Vec<usize>)>,
}

impl BatchMaker {
    /// Draws from `data` as `cfg` says (size, text_ctx, batch, empty captions, flips, seed).
    pub fn new(
        data: Arc<Vec<Example>>,
        tokenizer: Tokenizer,
        cfg: &TrainConfig,
        num_timesteps: usize,
    ) -> Self {
        let draws = Draws {
            size: cfg.model.image_size,
            text_ctx: cfg.model.text_ctx,
            batch_size: cfg.batch_size,
            num_timesteps,
            p_uncond: cfg.p_uncond,
            flip: cfg.data.flip,
            balance: cfg.data.balance,
            seed: cfg.seed,
            inpaint: cfg.model.inpaint,
            reword: cfg.data.reword,
        };
        Self::with_draws(data, tokenizer, draws)
    }

    /// Draws from `data` as `draws` says (any run: the CLIP trainer's too).
    pub fn with_draws(data: Arc<Vec<Example>>, tokenizer: Tokenizer, draws: Draws) -> Self {
        Self {
            tokenizer,
            size: draws.size,
            text_ctx: draws.text_ctx,
            batch_size: draws.batch_size,
            num_timesteps: draws.num_timesteps,
            p_uncond: draws.p_uncond,
            flip: draws.flip,
            seed: draws.seed,
            inpaint: draws.inpaint,
            reword: draws.reword,
            groups: draws.balance.then(|| emoji_groups(&data)),
            data,
            epoch: None,
        }
    }

    /// Index of the `i`-th example drawn: epochs are seeded permutations, so every image is seen
    /// once per epoch.
    /// With `data.balance` the permutation is over emoji groups, and the group's image is drawn
    /// from `(seed, i)`.
    fn index(&mut self, i: usize) -> usize {
        let n = self.groups.as_ref().map_or(self.data.len(), Vec::len);
        let epoch = i / n;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed, epoch as u64)));
            self.epoch = Some((epoch, perm));
        }
        let slot = self.epoch.as_ref().map(|(_, p)| p[i % n]).unwrap_or(0);
        match &self.groups {
            Some(groups) => {
                let members = &groups[slot];
                members[(mix(self.seed ^ 0xba1a, i as u64) % members.len() as u64) as usize]
            }
            None => slot,
        }
    }

    /// The batch of step `step` (the same every time it is asked for).
    pub fn make(&mut self, step: usize) -> Batch {
        let b = self.batch_size;
        let step_seed = mix(self.seed ^ 0xba7c, step as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(step_seed);
        let mut batch = Batch {
            step,
            x_start: Vec::with_capacity(b * 3 * self.size * self.size),
            tokens: Vec::with_capacity(b * self.text_ctx),
            mask: Vec::with_capacity(b * self.text_ctx),
            t: Vec::with_capacity(b),
            noise: NoiseRng::new(mix(self.seed ^ 0x0015e, step as u64))
                .randn_vec(b * 3 * self.size * self.size),
            captions: Vec::with_capacity(b),
            keys: Vec::with_capacity(b),
            keep: Vec::new(),
        };
        // Masks from their own stream, so text-to-image runs draw exactly what they always did.
        let mut mask_rng = ChaCha8Rng::seed_from_u64(mix(self.seed ^ 0x3a5c, step as u64));
        // Rewordings too, so that `reword` = 0 leaves every other draw as it was.
        let mut reword_rng = ChaCha8Rng::seed_from_u64(mix(self.seed ^ 0x4e30, step as u64));
        for j in 0..b {
            let idx = self.index(step * b + j);
            let ex = &self.data[idx];
            let drop = rng.random::<f64>() < self.p_uncond;
            let pick = rng.random_range(0..ex.captions.len().max(1));
            let flip = rng.random::<bool>() && self.flip && ex.flip_ok;
            let t = rng.random_range(0..self.num_timesteps);
            let mut caption = if drop {
                String::new()
            } else {
                ex.captions.get(pick).cloned().unwrap_or_default()
            };
            if self.reword > 0.0 && reword_rng.random::<f64>() < self.reword {
                caption = glide_data::reword::reword(&caption, &mut reword_rng);
            }
            let caption = caption.as_str();
            pixels_to_chw(&ex.pixels, self.size, flip, &mut batch.x_start);
            let (rows, mask) = self.tokenizer.model_tokens_and_mask(caption, self.text_ctx);
            batch.tokens.extend(rows.into_iter().map(i64::from));
            batch.mask.extend(mask);
            batch.t.push(t);
            batch.captions.push(caption.to_string());
            batch.keys.push(ex.key.clone());
            if self.inpaint {
                batch
                    .keep
                    .extend(draw_keep_mask(&mut mask_rng, self.size).0);
            }
        }
        batch
    }
}

/// The fixed held-out batch: the first `n` held-out examples by key, their first caption, timesteps
/// spread evenly over 0..T and seeded noise (and seeded keep masks when `inpaint`).
#[allow(clippy::too_many_arguments)]
pub fn eval_batch(
    heldout: &[Example],
    n: usize,
    tokenizer: &Tokenizer,
    size: usize,
    text_ctx: usize,
    num_timesteps: usize,
    seed: u64,
    inpaint: bool,
) -> Option<Batch> {
    let n = n.min(heldout.len());
    if n == 0 {
        return None;
    }
    let mut batch = Batch {
        step: 0,
        x_start: Vec::new(),
        tokens: Vec::new(),
        mask: Vec::new(),
        t: (0..n)
            .map(|i| ((i as f64 + 0.5) * num_timesteps as f64 / n as f64) as usize)
            .collect(),
        noise: NoiseRng::new(mix(seed ^ 0xe7a1, 0)).randn_vec(n * 3 * size * size),
        captions: Vec::new(),
        keys: Vec::new(),
        keep: Vec::new(),
    };
    let mut mask_rng = ChaCha8Rng::seed_from_u64(mix(seed ^ 0xe7a1, 1));
    if inpaint {
        for _ in 0..n {
            batch.keep.extend(draw_keep_mask(&mut mask_rng, size).0);
        }
    }
    for ex in &heldout[..n] {
        let caption = ex.captions.first().map_or("", String::as_str);
        pixels_to_chw(&ex.pixels, size, false, &mut batch.x_start);
        let (rows, mask) = tokenizer.model_tokens_and_mask(caption, text_ctx);
        batch.tokens.extend(rows.into_iter().map(i64::from));
        batch.mask.extend(mask);
        batch.captions.push(caption.to_string());
        batch.keys.push(ex.key.clone());
    }
    Some(batch)
}

/// Makes batches `first..last` on a background thread, a few steps ahead of the trainer.
pub struct Prefetcher {
    rx: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    pub fn start(mut maker: BatchMaker, first: usize, last: usize, depth: usize) -> Self {
        let (tx, rx): (SyncSender<Batch>, _) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("glide-batches".into())
            .spawn(move || {
                for step in first..last {
                    if tx.send(maker.make(step)).is_err() {
                        break;
                    }
                }
            })
            .expect("can spawn the batch thread");
        Self {
            rx,
            handle: Some(handle),
        }
    }

    /// The next batch; `None` once the range is done.
    pub fn next_batch(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Unblock the sender, then wait for the thread so no work outlives the trainer.
        let (_, dummy) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dummy));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests;
