//! `glide eval`: the paper's automatic metrics (CLIP score, CLIP R-precision, Fréchet distance of
//! CLIP embeddings) over held-out captions at one or more guidance scales; `glide eval sweep`
//! sweeps both guidance methods and draws the trade-off plot. The metrics are library code
//! (`glide_train::clip_eval`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use glide_diffusion::Sampler;
use glide_model::weights::StateDict;
use glide_train::batch::TrainData;
use glide_train::clip_eval::{
    EvalPoint, EvalSampling, Guidance, eval_set, evaluate_point, plot_tradeoff, points_from_table,
    table,
};

use crate::sample::load_clip;
use crate::train::{caption_groups, heldout_in};
use crate::weights_io::load_pipeline;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Classifier-free scales 1, 2, 3, 5, 8 and, with --guide-clip, CLIP scales 1, 2, 4, 8, 16;
    /// writes the table and --plot.
    Sweep,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    mode: Option<Mode>,
    /// The text-to-image model.
    #[arg(long, default_value = "www/models/base.safetensors")]
    weights: PathBuf,
    /// The evaluation CLIP (one file with both towers, or the two tower files; repeat the flag).
    /// Never the guiding one: scoring with the CLIP that guided flatters CLIP guidance.
    #[arg(long, required = true)]
    clip: Vec<PathBuf>,
    /// The noised CLIP that guides the CLIP-guidance points (repeat for two tower files).
    #[arg(long)]
    guide_clip: Vec<PathBuf>,
    /// The shard directory of `glide data emoji`, or a folder of images with `.txt` captions
    /// (their held-out images and captions are used).
    #[arg(long, default_value = "data/emoji")]
    data: String,
    /// Samples per point: one per held-out caption, cycling through the held-out images.
    #[arg(long, default_value_t = 256)]
    samples: usize,
    /// Classifier-free guidance scales (default 3; the sweep's 1,2,3,5,8).
    #[arg(long, value_delimiter = ',')]
    guidance: Vec<f64>,
    /// CLIP guidance scales (needs --guide-clip; the sweep's 1,2,4,8,16).
    #[arg(long, value_delimiter = ',')]
    clip_guidance: Vec<f64>,
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// DDPM by default: GLIDE samples CLIP guidance with it (DDIM's rule saturates the samples
    /// of a CLIP guided run; README, CLIP guidance).
    #[arg(long, default_value = "ddpm")]
    sampler: Sampler,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Held-out images of these emojibase groups or subgroups only (`all` for every one).
    /// Default: the `data.groups` the model was trained on.
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
    /// Points already measured: a table an earlier `glide eval` printed with the same model,
    /// CLIPs, --samples, --steps, --sampler and --seed. Its points are not sampled again but are
    /// in the table and the plot (to go on with a sweep that was stopped).
    #[arg(long)]
    known: Option<PathBuf>,
    /// The trade-off plot (sweep).
    #[arg(long, default_value = "docs/samples/guidance-tradeoff.png")]
    plot: PathBuf,
}

/// Said when CLIP guidance meets DDIM (measured: saturated samples at CLIP scale ≥ 0.5).
pub(crate) const DDIM_CLIP_WARNING: &str = "warning: CLIP guidance with DDIM (guided-diffusion's \
    condition_score) shifts x̂₀ by up to ~140× the gradient and saturates the samples of our \
    CLIPs; GLIDE uses --sampler ddpm with CLIP guidance";

pub fn run(mut a: EvalArgs) -> Result<()> {
    if a.mode == Some(Mode::Sweep) {
        if a.guidance.is_empty() {
            a.guidance = vec![1.0, 2.0, 3.0, 5.0, 8.0];
        }
        if a.clip_guidance.is_empty() && !a.guide_clip.is_empty() {
            a.clip_guidance = vec![1.0, 2.0, 4.0, 8.0, 16.0];
        }
    } else if a.guidance.is_empty() && a.clip_guidance.is_empty() {
        a.guidance = vec![3.0];
    }
    if !a.clip_guidance.is_empty() && a.guide_clip.is_empty() {
        bail!("--clip-guidance needs a guiding CLIP: pass --guide-clip FILE");
    }
    if !a.clip_guidance.is_empty() && a.sampler == Sampler::Ddim {
        eprintln!("{DDIM_CLIP_WARNING}");
    }
    let pipe = load_pipeline(&a.weights)?;
    let eval_clip = load_clip(&a.clip, &a.weights)?.context("--clip is required")?;
    let guide = load_clip(&a.guide_clip, &a.weights)?;
    let size = pipe.config.image_size;
    if eval_clip.config.image_size != size {
        bail!(
            "the evaluation CLIP reads {} px images and the model draws {size} px; use a CLIP \
             trained at {size} px",
            eval_clip.config.image_size
        );
    }
    let bytes = std::fs::read(&a.weights)
        .with_context(|| format!("cannot read the weights {}", a.weights.display()))?;
    let groups = caption_groups(a.groups.clone(), &StateDict::from_safetensors(&bytes)?);
    // Shards from `glide data emoji`, or a folder of images with `.txt` captions (its held-out
    // slice is used).
    let shards = glide_data::shard_paths(std::path::Path::new(&a.data), "train")
        .is_ok_and(|p| !p.is_empty());
    let source = glide_train::DataConfig::new();
    let source = if shards {
        source.with_shards(Some(a.data.clone()))
    } else {
        source.with_folder(Some(a.data.clone()))
    };
    let data = TrainData::load(&source, size)?;
    let heldout = heldout_in(&data, &groups, &a.data)?;
    let set = eval_set(&pipe, &eval_clip, &heldout, a.samples)?;
    println!(
        "{} samples per point from {} held-out images' captions; {} steps of {}",
        a.samples,
        heldout.len(),
        a.steps,
        a.sampler.name()
    );
    let (real_score, real_precision) = set.real_scores();
    println!(
        "real held-out images under their captions: CLIP score {real_score:.2}, R-precision \
         {:.1}% (the evaluation CLIP's ceiling)",
        100.0 * real_precision
    );
    let sampling = EvalSampling {
        sampler: a.sampler,
        steps: a.steps,
        seed: a.seed,
    };
    let points: Vec<Guidance> = a
        .guidance
        .iter()
        .map(|&s| Guidance::ClassifierFree(s))
        .chain(a.clip_guidance.iter().map(|&s| Guidance::Clip(s)))
        .collect();
    let mut done: Vec<EvalPoint> = match &a.known {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the table of known points {}", path.display())
            })?;
            points_from_table(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let known: Vec<Guidance> = done.iter().map(|p| p.guidance).collect();
    for g in points.into_iter().filter(|g| !known.contains(g)) {
        let p = evaluate_point(&pipe, &eval_clip, guide.as_ref(), &set, g, &sampling)?;
        eprintln!(
            "{} guidance {}: CLIP score {:.2}, R-precision {:.1}%, Fréchet distance {:.4}",
            g.method(),
            g.scale(),
            p.clip_score,
            p.r_precision * 100.0,
            p.frechet
        );
        done.push(p);
    }
    print!("{}", table(&done));
    if a.mode == Some(Mode::Sweep) {
        if let Some(dir) = a.plot.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        plot_tradeoff(&done, &a.plot)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", a.plot.display()))?;
        eprintln!("wrote {}", a.plot.display());
    }
    Ok(())
}
