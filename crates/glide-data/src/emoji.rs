//! `glide data emoji`: the captioned emoji dataset, built from four art styles installed as npm
//! packages (see [`crate::licenses`]), with a split that tests generalisation (see
//! [`crate::split`]).
//!
//! Output, under `out/`:
//!
//! * `train-NNNNNN.tar`, `heldout-NNNNNN.tar`: WebDataset shards of 64×64 samples (`KEY.png`,
//!   `KEY.txt` with four captions, `KEY.json` with the metadata), keys `{style}_{hexcode}`;
//! * `256/train-NNNNNN.tar`, `256/heldout-NNNNNN.tar`: 256×256 copies of the samples whose source
//!   is that large (OpenMoji, Fluent 3D), same keys, for an upsampler;
//! * `manifest.json`: seed, package versions, counts, the held-out groups and pairs, caption
//!   examples; `LICENSES.md`: sources, licences and the attribution they require.
//!
//! The same packages and seed give byte-identical files.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use crate::captions::{captions, flip_allowed};
use crate::emojibase::{self, EmojiEntry};
use crate::error::DataError;
use crate::hexcode::{base_key, normalize};
use crate::imaging::{LARGE, SMALL, encode_png, render_source};
use crate::licenses::{ATTRIBUTION, licenses_markdown};
use crate::parallel::map_ordered;
use crate::shard::{ShardSample, remove_stale_shards, shard_name, tar_bytes, write_atomic};
use crate::sources::{EMOJIBASE_PACKAGE, Style, index_images, package_version};
use crate::split::{Split, SplitPlan, stable_hash};

/// Samples per shard unless told otherwise.
pub const DEFAULT_SHARD_SIZE: usize = 1000;
/// A full build with fewer images means the packages are incomplete.
pub const MIN_TOTAL_IMAGES: usize = 12_000;
/// A full build with fewer images in some style means that package is incomplete.
pub const MIN_IMAGES_PER_STYLE: usize = 2_000;
/// Emoji never held out, so that demos and sanity checks can rely on them being trained: red
/// apple, cat face, dog face, rocket, star, pizza, rainbow, deciduous tree, automobile, red heart,
/// grinning face, fox.
pub const DEFAULT_KEEP: [&str; 12] = [
    "1F34E", "1F431", "1F436", "1F680", "2B50", "1F355", "1F308", "1F333", "1F697", "2764",
    "1F600", "1F98A",
];
/// Subfolder of the 256 px shard set.
pub const LARGE_DIR: &str = "256";
/// Shard prefixes, as [`Split::shard_prefix`] gives them.
const SHARD_PREFIXES: [&str; 2] = ["train", "heldout"];

/// What to build and where.
#[derive(Clone, Debug)]
pub struct EmojiOptions {
    /// The `node_modules` folder that `npm ci` filled.
    pub node_modules: PathBuf,
    /// Output folder; created if missing. Shards of an earlier build there are replaced.
    pub out: PathBuf,
    /// Fixes the split, the captions and the shard order.
    pub seed: u64,
    /// Samples per shard.
    pub shard_size: usize,
    /// Only the first N emojibase base entries (with their skin-tone variants), for fast tests.
    pub limit: Option<usize>,
    /// Hexcodes of emoji that are never held out (any spelling; grouped like [`base_key`]).
    pub keep: Vec<String>,
}

impl EmojiOptions {
    /// Options with seed 0, [`DEFAULT_SHARD_SIZE`], no limit and [`DEFAULT_KEEP`].
    pub fn new(node_modules: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        EmojiOptions {
            node_modules: node_modules.into(),
            out: out.into(),
            seed: 0,
            shard_size: DEFAULT_SHARD_SIZE,
            limit: None,
            keep: DEFAULT_KEEP.iter().map(|h| h.to_string()).collect(),
        }
    }
}

/// A held-out emoji group.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeldoutEmoji {
    pub base: String,
    pub label: String,
}

/// A held-out (group, style) pair.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeldoutPair {
    pub base: String,
    pub label: String,
    pub style: Style,
}

/// What a build wrote.
#[derive(Clone, Debug, Serialize)]
pub struct BuildSummary {
    pub seed: u64,
    /// 64 px samples in all.
    pub images: usize,
    /// Samples that also have a 256 px copy.
    pub images_256: usize,
    /// Samples per style name and split name.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// npm package → installed version.
    pub packages: BTreeMap<String, String>,
    pub heldout_emoji: Vec<HeldoutEmoji>,
    pub heldout_pairs: Vec<HeldoutPair>,
    /// The 64 px shards, train first, then held-out.
    pub shards: Vec<PathBuf>,
    /// The 256 px shards.
    pub shards_256: Vec<PathBuf>,
    /// Bytes on disk of `shards` and of `shards_256`.
    pub bytes: u64,
    pub bytes_256: u64,
    pub manifest: PathBuf,
}

/// How far a build has got, for a progress display.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Packages read and matched: this many images will be rendered.
    Indexed { images: usize },
    /// Images decoded, rasterised and encoded so far.
    Rendered { done: usize, total: usize },
    /// A file was written.
    Wrote { path: PathBuf },
}

/// Builds the dataset, reporting progress on stderr about every 1000 images.
pub fn build(opts: &EmojiOptions) -> Result<BuildSummary, DataError> {
    build_with_progress(opts, &log_progress)
}

fn log_progress(progress: &Progress) {
    match progress {
        Progress::Indexed { images } => eprintln!("emoji: rendering {images} images"),
        Progress::Rendered { done, total } if done % 1000 == 0 || done == total => {
            eprintln!("emoji: {done}/{total} images rendered");
        }
        Progress::Rendered { .. } | Progress::Wrote { .. } => {}
    }
}

/// One image to render: an emojibase entry in one style.
struct Job<'a> {
    entry: &'a EmojiEntry,
    style: Style,
    path: PathBuf,
    key: String,
    base: String,
}

/// Builds the dataset, calling `progress` as it goes (from several threads while rendering).
pub fn build_with_progress(
    opts: &EmojiOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<BuildSummary, DataError> {
    if opts.shard_size == 0 {
        return Err(DataError::InvalidOption(
            "the shard size must be at least 1; pass --shard-size 1000 or leave it out".into(),
        ));
    }
    let mut packages = BTreeMap::new();
    let mut style_dirs = Vec::new();
    for style in Style::ALL {
        let (dir, version) = package_version(&opts.node_modules, style.package())?;
        packages.insert(style.package().to_string(), version);
        style_dirs.push((style, dir));
    }
    let (emojibase_dir, emojibase_version) =
        package_version(&opts.node_modules, EMOJIBASE_PACKAGE)?;
    packages.insert(EMOJIBASE_PACKAGE.to_string(), emojibase_version);

    let entries = emojibase::load(&emojibase_dir, opts.limit)?;
    let jobs = match_images(&entries, &style_dirs)?;
    let counts_by_style = count_by(&jobs, |j| j.style.name().to_string());
    if opts.limit.is_none() {
        check_complete(jobs.len(), &counts_by_style)?;
    }
    progress(&Progress::Indexed { images: jobs.len() });

    let mut groups: BTreeMap<String, BTreeSet<Style>> = BTreeMap::new();
    for job in &jobs {
        groups
            .entry(job.base.clone())
            .or_default()
            .insert(job.style);
    }
    let keep: BTreeSet<String> = opts.keep.iter().map(|h| base_key(h)).collect();
    let plan = SplitPlan::new(&groups, &keep, opts.seed);
    let no_flip = directional_groups(&entries);

    let total = jobs.len();
    let rendered = map_ordered(
        &jobs,
        |job| {
            render_source(job.style, &job.path).map(|r| {
                let small = encode_png(&r.small);
                (small, r.large.as_ref().map(encode_png))
            })
        },
        &|done| progress(&Progress::Rendered { done, total }),
    );

    let samples = shard_samples(&jobs, rendered, &plan, &no_flip, &packages, opts.seed)?;
    let (shards, shards_256) = write_all_shards(opts, &samples, progress)?;
    let summary = summarize(
        opts, &entries, &plan, &samples, packages, shards, shards_256,
    )?;
    let examples = caption_examples(&samples, &keep);
    write_manifest(opts, &summary, &examples, progress)?;
    Ok(summary)
}

/// A sample's 32/64 px files, its 256 px files (when the source has them) and its split.
type Sample = (ShardSample, Option<ShardSample>, Split);

/// An image rendered as PNG bytes at the small size and, when the source has it, at 256 px.
type Rendered = Result<(Vec<u8>, Option<Vec<u8>>), DataError>;

/// Every rendered image as shard files with captions and metadata, in the seed's shuffled order.
fn shard_samples(
    jobs: &[Job<'_>],
    rendered: Vec<Rendered>,
    plan: &SplitPlan,
    no_flip: &HashSet<String>,
    packages: &BTreeMap<String, String>,
    seed: u64,
) -> Result<Vec<Sample>, DataError> {
    // Samples in key order, then shuffled by the seed, so shards mix styles and groups.
    let mut samples: Vec<Sample> = Vec::with_capacity(jobs.len());
    for (job, images) in jobs.iter().zip(rendered) {
        let (small_png, large_png) = images?;
        let split = plan.split_of(&job.base, job.style);
        let text = captions(&job.entry.label, &job.entry.tags, job.style, seed, &job.key)
            .join("\n")
            + "\n";
        let flip = flip_allowed(&job.entry.group, &job.entry.label) && !no_flip.contains(&job.base);
        let meta = sample_json(job, split, flip, packages);
        let files = |png: Vec<u8>| ShardSample {
            key: job.key.clone(),
            files: vec![
                ("png", png),
                ("txt", text.clone().into_bytes()),
                ("json", meta.clone()),
            ],
        };
        samples.push((files(small_png), large_png.map(files), split));
    }
    samples.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    samples.shuffle(&mut ChaCha8Rng::seed_from_u64(stable_hash(&[
        &seed.to_le_bytes(),
        b"shard order",
    ])));

    Ok(samples)
}

/// Writes the shards of every split (small and 256 px) and removes shards a previous build left.
fn write_all_shards(
    opts: &EmojiOptions,
    samples: &[Sample],
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), DataError> {
    let large_dir = opts.out.join(LARGE_DIR);
    std::fs::create_dir_all(&large_dir).map_err(DataError::io("create", &large_dir))?;
    let mut shards = Vec::new();
    let mut shards_256 = Vec::new();
    for prefix in SHARD_PREFIXES {
        let (small, large): (Vec<&ShardSample>, Vec<&ShardSample>) = {
            let side: Vec<_> = samples
                .iter()
                .filter(|s| s.2.shard_prefix() == prefix)
                .collect();
            (
                side.iter().map(|s| &s.0).collect(),
                side.iter().filter_map(|s| s.1.as_ref()).collect(),
            )
        };
        shards.extend(write_shards(
            &opts.out,
            prefix,
            &small,
            opts.shard_size,
            progress,
        )?);
        shards_256.extend(write_shards(
            &large_dir,
            prefix,
            &large,
            opts.shard_size,
            progress,
        )?);
    }
    remove_stale_shards(
        &opts.out,
        &SHARD_PREFIXES,
        &shards.iter().cloned().collect(),
    )?;
    remove_stale_shards(
        &large_dir,
        &SHARD_PREFIXES,
        &shards_256.iter().cloned().collect(),
    )?;

    Ok((shards, shards_256))
}

/// Counts, held-out lists and sizes of a finished build.
fn summarize(
    opts: &EmojiOptions,
    entries: &[EmojiEntry],
    plan: &SplitPlan,
    samples: &[Sample],
    packages: BTreeMap<String, String>,
    shards: Vec<PathBuf>,
    shards_256: Vec<PathBuf>,
) -> Result<BuildSummary, DataError> {
    let label_of = |base: &str| {
        entries
            .iter()
            .find(|e| base_key(&e.hexcode) == base)
            .map_or_else(String::new, |e| e.label.clone())
    };
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (sample, _, split) in samples {
        let style = sample.key.split('_').next().unwrap_or_default().to_string();
        *counts
            .entry(style)
            .or_default()
            .entry(split.name().to_string())
            .or_default() += 1;
    }
    Ok(BuildSummary {
        seed: opts.seed,
        images: samples.len(),
        images_256: samples.iter().filter(|s| s.1.is_some()).count(),
        counts,
        packages,
        heldout_emoji: plan
            .heldout_emoji
            .iter()
            .map(|b| HeldoutEmoji {
                base: b.clone(),
                label: label_of(b),
            })
            .collect(),
        heldout_pairs: plan
            .heldout_pairs
            .iter()
            .map(|(b, s)| HeldoutPair {
                base: b.clone(),
                label: label_of(b),
                style: *s,
            })
            .collect(),
        bytes: total_size(&shards)?,
        bytes_256: total_size(&shards_256)?,
        shards,
        shards_256,
        manifest: opts.out.join("manifest.json"),
    })
}

/// Every emojibase entry that has an image in a style, as a job; keys are unique.
fn match_images<'a>(
    entries: &'a [EmojiEntry],
    style_dirs: &[(Style, PathBuf)],
) -> Result<Vec<Job<'a>>, DataError> {
    let mut indices = Vec::new();
    for (style, dir) in style_dirs {
        indices.push((*style, index_images(dir, *style)?));
    }
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    for entry in entries {
        let hex = normalize(&entry.hexcode);
        for (style, files) in &indices {
            let Some(path) = files.get(&hex) else {
                continue;
            };
            let key = format!("{}_{hex}", style.name());
            if seen.insert(key.clone()) {
                jobs.push(Job {
                    entry,
                    style: *style,
                    path: path.clone(),
                    key,
                    base: base_key(&entry.hexcode),
                });
            }
        }
    }
    Ok(jobs)
}

fn count_by(jobs: &[Job<'_>], f: impl Fn(&Job<'_>) -> String) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for job in jobs {
        *counts.entry(f(job)).or_default() += 1;
    }
    counts
}

fn check_complete(total: usize, per_style: &BTreeMap<String, usize>) -> Result<(), DataError> {
    let short_style = Style::ALL
        .iter()
        .any(|s| per_style.get(s.name()).copied().unwrap_or(0) < MIN_IMAGES_PER_STYLE);
    if total < MIN_TOTAL_IMAGES || short_style {
        let per_style = Style::ALL
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.name(),
                    per_style.get(s.name()).copied().unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(DataError::TooFewImages {
            found: total,
            per_style,
        });
    }
    Ok(())
}

/// Groups drawn facing one way that have a mirrored "facing right" ZWJ variant (`… 200D 27A1`):
/// flipping them draws the other emoji, so they are never flipped.
fn directional_groups(entries: &[EmojiEntry]) -> HashSet<String> {
    entries
        .iter()
        .filter_map(|e| {
            let hex = normalize(&e.hexcode);
            hex.contains("-200d-27a1")
                .then(|| base_key(&hex.replace("-200d-27a1", "")))
        })
        .collect()
}

fn sample_json(
    job: &Job<'_>,
    split: Split,
    flip: bool,
    packages: &BTreeMap<String, String>,
) -> Vec<u8> {
    let package = job.style.package();
    let meta = json!({
        "key": job.key,
        "hexcode": job.entry.hexcode,
        "emoji": job.entry.emoji,
        "label": job.entry.label,
        "group": job.entry.group,
        "subgroup": job.entry.subgroup,
        "base": job.base,
        "style": job.style.name(),
        "split": split.name(),
        "tags": job.entry.tags,
        "flip": flip,
        "source": format!("{package}@{}", packages[package]),
        "license": job.style.license(),
    });
    serde_json::to_vec(&meta).expect("a json value serialises")
}

/// Writes `samples` as shards of `shard_size` into `dir`; returns their paths.
fn write_shards(
    dir: &Path,
    prefix: &str,
    samples: &[&ShardSample],
    shard_size: usize,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Vec<PathBuf>, DataError> {
    let mut paths = Vec::new();
    for (index, chunk) in samples.chunks(shard_size).enumerate() {
        let path = dir.join(shard_name(prefix, index));
        let owned: Vec<ShardSample> = chunk
            .iter()
            .map(|s| ShardSample {
                key: s.key.clone(),
                files: s.files.clone(),
            })
            .collect();
        write_atomic(&path, &tar_bytes(&owned))?;
        progress(&Progress::Wrote { path: path.clone() });
        paths.push(path);
    }
    Ok(paths)
}

fn total_size(paths: &[PathBuf]) -> Result<u64, DataError> {
    paths.iter().try_fold(0, |sum, p| {
        let meta = std::fs::metadata(p).map_err(DataError::io("read", p))?;
        Ok(sum + meta.len())
    })
}

/// Captions of the kept emoji, one style each in turn, to show what the text side looks like.
fn caption_examples(samples: &[Sample], keep: &BTreeSet<String>) -> serde_json::Value {
    let mut by_key: BTreeMap<&str, &ShardSample> = BTreeMap::new();
    for (sample, _, _) in samples {
        by_key.insert(&sample.key, sample);
    }
    let mut examples = Vec::new();
    for (i, base) in keep.iter().enumerate() {
        let hex = normalize(base);
        let styles = Style::ALL
            .iter()
            .cycle()
            .skip(i % Style::ALL.len())
            .take(Style::ALL.len());
        if let Some(sample) = styles
            .filter_map(|s| by_key.get(format!("{}_{hex}", s.name()).as_str()))
            .next()
        {
            let text = String::from_utf8_lossy(&sample.files[1].1).into_owned();
            examples
                .push(json!({ "key": sample.key, "captions": text.lines().collect::<Vec<_>>() }));
        }
    }
    serde_json::Value::Array(examples)
}

fn write_manifest(
    opts: &EmojiOptions,
    summary: &BuildSummary,
    examples: &serde_json::Value,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<(), DataError> {
    let relative = |paths: &[PathBuf]| -> Vec<String> {
        paths
            .iter()
            .map(|p| {
                p.strip_prefix(&opts.out)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect()
    };
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for per_split in summary.counts.values() {
        for (split, n) in per_split {
            *totals.entry(split.as_str()).or_default() += n;
        }
    }
    let manifest = json!({
        "dataset": "glide-rs emoji",
        "seed": opts.seed,
        "limit": opts.limit,
        "shard_size": opts.shard_size,
        "image_size": SMALL,
        "large_image_size": LARGE,
        "packages": summary.packages,
        "images": summary.images,
        "images_256": summary.images_256,
        "counts": summary.counts,
        "totals": totals,
        "keep": opts.keep,
        "heldout_emoji": summary.heldout_emoji,
        "heldout_pairs": summary.heldout_pairs,
        "caption_examples": examples,
        "shards": relative(&summary.shards),
        "shards_256": relative(&summary.shards_256),
        "attribution": ATTRIBUTION,
    });
    let text = serde_json::to_string_pretty(&manifest).expect("a json value serialises") + "\n";
    write_atomic(&summary.manifest, text.as_bytes())?;
    progress(&Progress::Wrote {
        path: summary.manifest.clone(),
    });

    let versions: Vec<(String, String)> = summary.packages.clone().into_iter().collect();
    let licenses = opts.out.join("LICENSES.md");
    write_atomic(&licenses, licenses_markdown(&versions).as_bytes())?;
    progress(&Progress::Wrote { path: licenses });
    Ok(())
}
