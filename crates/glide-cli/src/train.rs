//! `glide train`, `glide bench-train`, `glide eval-emoji`: thin wrappers over `glide-train`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use glide_model::weights::{StateDict, config_from_metadata, load_state_dict};
use glide_pipeline::text2im::tokenizer_for;
use glide_train::batch::{Example, TrainData};
use glide_train::eval::{Reference, nn_score, pick_captions};
use glide_train::{TrainConfig, TrainOptions};

use crate::backend::{self, B};

/// A run's config file and its command-line overrides (train, fine-tune, distil).
#[derive(clap::Args)]
pub struct RunArgs {
    /// The run's config, a JSON file (see configs/: `TrainConfig`s; `ClipTrainConfig`s for
    /// train-clip).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue the run in the config's out_dir from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Overrides the config's out_dir.
    #[arg(long)]
    out_dir: Option<String>,
    /// Overrides the config's total steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Overrides the config's wall-clock budget in minutes.
    #[arg(long)]
    max_minutes: Option<f64>,
}

impl RunArgs {
    /// The config file with the overrides applied.
    pub fn config(&self) -> Result<TrainConfig> {
        let mut cfg = TrainConfig::read(&self.config).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the training config {} ({e}); start from configs/smoke.json",
                self.config.display()
            )
        })?;
        self.apply(&mut cfg.out_dir, &mut cfg.steps, &mut cfg.max_minutes);
        Ok(cfg)
    }

    /// Applies the overrides to a config's out_dir, steps and wall-clock budget.
    pub fn apply(&self, out_dir: &mut String, steps: &mut usize, max_minutes: &mut Option<f64>) {
        if let Some(o) = &self.out_dir {
            *out_dir = o.clone();
        }
        if let Some(s) = self.steps {
            *steps = s;
        }
        if self.max_minutes.is_some() {
            *max_minutes = self.max_minutes;
        }
    }
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Start from these weights (fine-tuning, e.g. on your own image folder).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Number of devices the batch is split over: GPUs with --features cuda/wgpu (default 1), or
    /// CPU workers on flex (default: one per core that divides the batch; 1 is the serial path).
    #[arg(long)]
    devices: Option<usize>,
}

#[derive(clap::Args)]
pub struct FinetuneInpaintArgs {
    /// Base (text-to-image) weights to start from, e.g. www/models/base.safetensors.
    #[arg(long)]
    from: PathBuf,
    /// The config (configs/inpaint-emoji32-cpu.json); its model options are replaced by those of
    /// --from, with inpainting on.
    #[command(flatten)]
    run: RunArgs,
    /// Number of devices the batch is split over: GPUs with --features cuda/wgpu (default 1), or
    /// CPU workers on flex (default: one per core that divides the batch; 1 is the serial path).
    #[arg(long)]
    devices: Option<usize>,
}

pub fn finetune_inpaint(a: FinetuneInpaintArgs) -> Result<()> {
    if !a.from.exists() {
        bail!(
            "the base weights {} do not exist; pass --from www/models/base.safetensors or a run's \
             ema.safetensors",
            a.from.display()
        );
    }
    run_train(
        TrainArgs {
            run: a.run,
            init: Some(a.from),
            devices: a.devices,
        },
        true,
    )
}

pub fn train(a: TrainArgs) -> Result<()> {
    run_train(a, false)
}

fn run_train(a: TrainArgs, inpaint: bool) -> Result<()> {
    let mut cfg = a.run.config()?;
    if inpaint {
        cfg.model.inpaint = true;
    }
    let devices = a
        .devices
        .unwrap_or_else(|| backend::default_devices(cfg.batch_size));
    if devices == 0 {
        bail!("--devices must be at least 1");
    }
    eprintln!(
        "training on {} × {} (batch {}), writing to {}",
        devices,
        backend::NAME,
        cfg.batch_size,
        cfg.out_dir
    );
    let outcome = glide_train::train::<Autodiff<B>>(
        cfg,
        backend::devices(devices),
        TrainOptions {
            resume: a.run.resume,
            init: a.init,
            ..Default::default()
        },
    )?;
    let last = outcome.rows.last();
    eprintln!(
        "{} at step {} ({:.1} images/s{}); checkpoint and EMA weights in {}",
        if outcome.interrupted {
            "stopped"
        } else {
            "done"
        },
        outcome.step,
        outcome.images_per_s,
        last.map(|r| format!(", last loss {:.4}", r.loss))
            .unwrap_or_default(),
        outcome.out_dir.display()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchTrainArgs {
    #[arg(long, default_value = "configs/emoji64.json")]
    config: PathBuf,
    /// Steps timed (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// As `glide train --devices` (default: one CPU worker per core, or one GPU).
    #[arg(long)]
    devices: Option<usize>,
    /// Overrides the config's shard directory.
    #[arg(long)]
    data: Option<String>,
}

/// Trains `steps + 1` steps into a scratch directory and reports images/s without the first step.
pub fn bench_train(a: BenchTrainArgs) -> Result<()> {
    let mut cfg = TrainConfig::read(&a.config).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the training config {} ({e})",
            a.config.display()
        )
    })?;
    if a.data.is_some() {
        cfg.data.shards = a.data.clone();
        cfg.data.folder = None;
    }
    let dir = std::env::temp_dir().join(format!("glide-bench-train-{}", std::process::id()));
    cfg.out_dir = dir.to_string_lossy().into_owned();
    cfg.steps = 1;
    cfg.sample_every = 0;
    cfg.eval_every = usize::MAX;
    cfg.eval_size = 0;
    cfg.checkpoint_every = usize::MAX;
    let devices = a
        .devices
        .unwrap_or_else(|| backend::default_devices(cfg.batch_size));
    let run = |cfg: TrainConfig, resume: bool| {
        glide_train::train::<Autodiff<B>>(
            cfg,
            backend::devices(devices),
            TrainOptions {
                resume,
                quiet: true,
                ..Default::default()
            },
        )
    };
    run(cfg.clone(), false)?;
    cfg.steps = 1 + a.steps;
    let out = run(cfg.clone(), true)?;
    let params = out.params;
    println!(
        "train {} on {} × {}: {:.2} images/s ({:.2} steps/s at batch {}, {} image px, {params} parameters)",
        a.config.display(),
        devices,
        backend::NAME,
        out.images_per_s,
        out.images_per_s / cfg.batch_size as f64,
        cfg.batch_size,
        cfg.model.image_size,
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Weights to evaluate (default: the bundled model).
    #[arg(long, default_value = "www/models/base.safetensors")]
    weights: PathBuf,
    /// The shard directory of `glide data emoji`.
    #[arg(long, default_value = "data/emoji")]
    data: String,
    /// Captions per set (training, held-out).
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Guidance scales to score.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    guidance: Vec<f64>,
    /// DDIM steps per sample.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// Draw captions only from these emojibase groups or subgroups (`all` for every one).
    /// Default: the `data.groups` the weights were trained on (their `training_config`).
    /// The reference set is always every image.
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
    /// After each row, list this many samples whose nearest image shows another emoji: the
    /// caption, the emoji it names and the one nearest.
    #[arg(long, default_value_t = 0)]
    show_misses: usize,
    /// Seed of the samples' noise (the model card's numbers use 0); another seed draws other
    /// samples for the same captions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A paraphrase set to score besides the training and held-out captions: one `prompt<TAB>base`
    /// per line (`#` comments). Default: the project's own (`crates/glide-train/assets/paraphrases.tsv`).
    #[arg(long)]
    paraphrases: Option<PathBuf>,
}

/// The `data.groups` of the run that made these weights, if its config was stored with them.
fn trained_groups(state: &StateDict) -> Option<Vec<String>> {
    let cfg: serde_json::Value =
        serde_json::from_str(state.metadata.get("training_config")?).ok()?;
    serde_json::from_value(cfg.get("data")?.get("groups")?.clone()).ok()
}

/// The groups an evaluation draws its images or captions from: `--groups` (`all`: every one),
/// else the groups the weights were trained on.
pub(crate) fn caption_groups(arg: Option<Vec<String>>, state: &StateDict) -> Option<Vec<String>> {
    match arg {
        Some(g) if g.iter().any(|x| x == "all") => None,
        Some(g) => Some(g),
        None => trained_groups(state),
    }
}

/// The held-out examples of `data` (read from `dir`) in `groups`, or a sentence if there are none.
pub(crate) fn heldout_in(
    data: &TrainData,
    groups: &Option<Vec<String>>,
    dir: &str,
) -> Result<Vec<Example>> {
    let heldout = kept(&data.heldout, groups);
    if heldout.is_empty() {
        bail!(
            "{dir} has no held-out images{}; build the full dataset with `make data`",
            if groups.is_some() {
                " of these groups"
            } else {
                ""
            }
        );
    }
    Ok(heldout)
}

/// The examples of `set` in `groups`.
pub(crate) fn kept(set: &[Example], groups: &Option<Vec<String>>) -> Vec<Example> {
    let filter = glide_train::DataConfig::new().with_groups(groups.clone());
    set.iter()
        .filter(|e| filter.keeps(&e.meta))
        .cloned()
        .collect()
}

pub fn eval_emoji(a: EvalArgs) -> Result<()> {
    let bytes = std::fs::read(&a.weights)
        .with_context(|| format!("cannot read the weights {}", a.weights.display()))?;
    let state = StateDict::from_safetensors(&bytes)?;
    let config = config_from_metadata(&state)?;
    let device: burn::tensor::Device<B> = Default::default();
    let model = load_state_dict(config.init::<B>(&device), &state)?;
    let vocab = state
        .metadata
        .get("vocab")
        .map(|j| serde_json::from_str(j))
        .transpose()
        .context("the weights' vocab metadata is not valid")?;
    tokenizer_for(&state)?;
    let data = TrainData::load(
        &glide_train::DataConfig::new().with_shards(Some(a.data.clone())),
        config.image_size,
    )?;
    let all: Vec<_> = data.train.iter().chain(&data.heldout).collect();
    let reference = Reference::new(&all, config.image_size);
    let groups = caption_groups(a.groups, &state);
    let (train, heldout) = (kept(&data.train, &groups), kept(&data.heldout, &groups));
    if let Some(g) = &groups {
        println!(
            "Captions from the groups {} ({} training, {} held-out images); reference: all {} images.",
            g.join(", "),
            train.len(),
            heldout.len(),
            all.len()
        );
    }
    println!(
        "| captions | guidance | NN accuracy | top 5 | median rank | chance (shuffled): top 1 / top 5 | n |\n|---|---|---|---|---|---|---|"
    );
    let group_of: std::collections::HashMap<String, String> = all
        .iter()
        .map(|ex| {
            let g = ex.meta.get("group").and_then(|g| g.as_str()).unwrap_or("?");
            (ex.base(), g.to_string())
        })
        .collect();
    let paraphrases = match &a.paraphrases {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the paraphrase set {}", path.display()))?,
        None => glide_train::eval::PARAPHRASES.to_string(),
    };
    let kept_bases: std::collections::HashSet<String> = train.iter().map(|e| e.base()).collect();
    let paraphrases: Vec<(String, String)> = glide_train::eval::parse_paraphrases(&paraphrases)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter(|(_, base)| kept_bases.contains(base))
        .collect();
    let sets = [
        ("training", pick_captions(&train, a.n, 0)),
        ("held-out", pick_captions(&heldout, a.n, 0)),
        ("paraphrase", paraphrases),
    ];
    let mut tables = Vec::new();
    for (name, captions) in sets {
        if captions.is_empty() {
            continue;
        }
        let caption_groups: Vec<String> = captions
            .iter()
            .map(|c| group_of.get(&c.1).cloned().unwrap_or_else(|| "?".into()))
            .collect();
        for &s in &a.guidance {
            let score = nn_score(
                model.clone(),
                &config,
                vocab.as_ref(),
                &captions,
                s,
                a.steps,
                a.seed,
                &reference,
                &device,
            )?;
            println!(
                "| {name} | {s} | {:.1}% | {:.1}% | {} | {:.1}% / {:.1}% | {} |",
                score.accuracy * 100.0,
                score.top5 * 100.0,
                score.median_rank,
                score.chance * 100.0,
                score.chance_top5 * 100.0,
                score.n
            );
            let misses = captions
                .iter()
                .zip(&score.nearest)
                .filter(|(c, n)| c.1 != **n);
            for ((caption, emoji), nearest) in misses.take(a.show_misses) {
                println!("  \"{caption}\" ({emoji}): nearest is {nearest}");
            }
            tables.push((
                name,
                s,
                glide_train::eval::group_rows(&score.ranks, &caption_groups),
            ));
        }
    }
    print_group_tables(&tables);
    Ok(())
}

/// Per emojibase group: top 1, top 5 and median rank of each (caption set, guidance) row.
fn print_group_tables(tables: &[(&str, f64, Vec<glide_train::eval::GroupRow>)]) {
    if tables.iter().all(|(_, _, rows)| rows.len() < 2) {
        return;
    }
    println!("\nPer group (top 1 / top 5 / median rank, n):\n");
    let groups: std::collections::BTreeSet<&str> = tables
        .iter()
        .flat_map(|(_, _, rows)| rows.iter().map(|r| r.group.as_str()))
        .collect();
    let head: Vec<String> = tables
        .iter()
        .map(|(n, s, _)| format!("{n}, s = {s}"))
        .collect();
    println!("| group | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(tables.len()));
    for g in groups {
        let cells: Vec<String> = tables
            .iter()
            .map(|(_, _, rows)| match rows.iter().find(|r| r.group == g) {
                Some(r) => format!(
                    "{:.0}% / {:.0}% / {} ({})",
                    r.top1 * 100.0,
                    r.top5 * 100.0,
                    r.median_rank,
                    r.n
                ),
                None => "–".to_string(),
            })
            .collect();
        println!("| {g} | {} |", cells.join(" | "));
    }
}

#[derive(clap::Args)]
pub struct EvalInpaintArgs {
    /// Base weights, run with the replacement trick.
    #[arg(long, default_value = "www/models/base.safetensors")]
    base: PathBuf,
    /// The fine-tuned inpainting weights.
    #[arg(long, default_value = "www/models/inpaint.safetensors")]
    inpaint: PathBuf,
    /// The shard directory of `glide data emoji` (its held-out images are used).
    #[arg(long, default_value = "data/emoji")]
    data: String,
    /// Images (each with its own seeded mask).
    #[arg(long, default_value_t = 32)]
    n: usize,
    #[arg(long, default_value_t = 5.0)]
    guidance: f64,
    /// DDIM steps per edit.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// The picture: original, masked, inpainting model, replacement trick per row.
    #[arg(long, default_value = "inpaint-compare.png")]
    out: PathBuf,
    /// Rows in the picture.
    #[arg(long, default_value_t = 8)]
    rows: usize,
    /// Use held-out images of these emojibase groups or subgroups only (`all` for every one).
    /// Default: the `data.groups` the inpainting weights were trained on.
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
}

fn load_pipe(path: &PathBuf) -> Result<glide_pipeline::Text2Im<B>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the weights {}; check the path", path.display()))?;
    glide_pipeline::Text2Im::<B>::from_safetensors(&bytes, &Default::default())
        .with_context(|| format!("cannot use the weights {}", path.display()))
}

pub fn eval_inpaint(a: EvalInpaintArgs) -> Result<()> {
    use glide_train::inpaint_eval::{edit_cases, mean_score, run_edits, triples_png};
    let base = load_pipe(&a.base)?;
    let inpaint = load_pipe(&a.inpaint)?;
    if !inpaint.config.inpaint || base.config.inpaint {
        bail!("--inpaint must be inpainting weights and --base a text-to-image model");
    }
    let size = base.config.image_size;
    let data = TrainData::load(
        &glide_train::DataConfig::new().with_shards(Some(a.data.clone())),
        size,
    )?;
    let bytes = std::fs::read(&a.inpaint)
        .with_context(|| format!("cannot read the weights {}", a.inpaint.display()))?;
    let groups = caption_groups(a.groups, &StateDict::from_safetensors(&bytes)?);
    let heldout = heldout_in(&data, &groups, &a.data)?;
    let cases = edit_cases(&heldout, a.n, size, 0);
    let by_model = run_edits(&inpaint, &cases, a.guidance, a.steps)?;
    let by_replace = run_edits(&base, &cases, a.guidance, a.steps)?;
    let originals: Vec<Vec<f32>> = cases.iter().map(|c| c.image.clone()).collect();
    let m = mean_score(&cases, &by_model, size);
    let r = mean_score(&cases, &by_replace, size);
    let o = mean_score(&cases, &originals, size);
    println!(
        "{} held-out images, seeded masks, s = {}, {} DDIM steps\n\n\
         | method | MSE inside the mask | mean jump across the mask edge |\n|---|---|---|\n\
         | (a) fine-tuned inpainting model | {:.4} | {:.4} |\n\
         | (b) replacement trick, base model | {:.4} | {:.4} |\n\
         | original image (reference) | 0 | {:.4} |",
        cases.len(),
        a.guidance,
        a.steps,
        m.mse_inside,
        m.edge_jump,
        r.mse_inside,
        r.edge_jump,
        o.edge_jump
    );
    let rows = a.rows.min(cases.len());
    let text = vec![(
        "columns".to_string(),
        "original | masked | inpainting model | replacement trick".to_string(),
    )];
    let png = triples_png(
        &cases[..rows],
        &[&by_model[..rows], &by_replace[..rows]],
        size,
        &text,
    );
    crate::write(&a.out, &png)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
