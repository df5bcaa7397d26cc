//! `glide train`, `glide bench-train`, `glide eval-emoji`: thin wrappers over `glide-train`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::config::Config;
use glide_model::weights::{StateDict, config_from_metadata, load_state_dict};
use glide_pipeline::text2im::tokenizer_for;
use glide_train::batch::TrainData;
use glide_train::eval::{Reference, nn_score, pick_captions};
use glide_train::{TrainConfig, TrainOptions};

use crate::backend::{self, B};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A `TrainConfig` JSON file (see configs/).
    #[arg(long)]
    config: PathBuf,
    /// Start from these weights (fine-tuning, e.g. on your own image folder).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Continue the run in the config's out_dir from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Overrides the config's out_dir.
    #[arg(long)]
    out_dir: Option<String>,
    /// Overrides the config's total steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Overrides the config's wall-clock budget in minutes.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Number of devices (GPUs with --features cuda/wgpu) the batch is split over.
    #[arg(long, default_value_t = 1)]
    devices: usize,
}

fn load_config(path: &PathBuf) -> Result<TrainConfig> {
    TrainConfig::load(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the training config {} ({e}); start from configs/smoke.json",
            path.display()
        )
    })
}

pub fn train(a: TrainArgs) -> Result<()> {
    let mut cfg = load_config(&a.config)?;
    if let Some(o) = a.out_dir {
        cfg.out_dir = o;
    }
    if let Some(s) = a.steps {
        cfg.steps = s;
    }
    if a.max_minutes.is_some() {
        cfg.max_minutes = a.max_minutes;
    }
    if a.devices == 0 {
        bail!("--devices must be at least 1");
    }
    eprintln!(
        "training on {} × {} (batch {}), writing to {}",
        a.devices,
        backend::NAME,
        cfg.batch_size,
        cfg.out_dir
    );
    let outcome = glide_train::train::<Autodiff<B>>(
        cfg,
        backend::devices(a.devices),
        TrainOptions {
            resume: a.resume,
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
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Overrides the config's shard directory.
    #[arg(long)]
    data: Option<String>,
}

/// Trains `steps + 1` steps into a scratch directory and reports images/s without the first step.
pub fn bench_train(a: BenchTrainArgs) -> Result<()> {
    let mut cfg = load_config(&a.config)?;
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
    let run = |cfg: TrainConfig, resume: bool| {
        glide_train::train::<Autodiff<B>>(
            cfg,
            backend::devices(a.devices),
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
        a.devices,
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
    println!(
        "| captions | guidance | NN accuracy | chance (shuffled) | n |\n|---|---|---|---|---|"
    );
    for (name, set) in [("training", &data.train), ("held-out", &data.heldout)] {
        let captions = pick_captions(set, a.n, 0);
        for &s in &a.guidance {
            let score = nn_score(
                model.clone(),
                &config,
                vocab.as_ref(),
                &captions,
                s,
                a.steps,
                &reference,
                &device,
            )?;
            println!(
                "| {name} | {s} | {:.1}% | {:.1}% | {} |",
                score.accuracy * 100.0,
                score.chance * 100.0,
                score.n
            );
        }
    }
    Ok(())
}
