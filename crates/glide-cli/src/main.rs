//! `glide`: the native command line. A thin user of the library crates: sampling, guidance and
//! weight handling all live in `glide-pipeline`, `glide-diffusion` and `glide-model`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Tensor, backend::Backend};
use clap::{Parser, Subcommand};
use glide_diffusion::sampling::Sampler;
use glide_diffusion::sampling::Steps;
use glide_model::weights::{ParamStorage, fixture_style_init, save_weights};
use glide_model::{GlideConfig, check_fixture_with};
use glide_pipeline::image::{batch_to_rgb8, encode_png, grid};
use glide_pipeline::{GenerateRequest, Text2Im};
use indicatif::{ProgressBar, ProgressStyle};

#[cfg(feature = "cuda")]
mod backend {
    pub type B = burn::backend::Cuda;
    pub const NAME: &str = "cuda";
    /// `n` GPUs, numbered from 0.
    pub fn devices(n: usize) -> Vec<burn::backend::cuda::CudaDevice> {
        (0..n).map(burn::backend::cuda::CudaDevice::new).collect()
    }
    /// One GPU unless `--devices` says more.
    pub fn default_devices(_batch_size: usize) -> usize {
        1
    }
}
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
mod backend {
    pub type B = burn::backend::Wgpu;
    pub const NAME: &str = "wgpu";
    /// `n` discrete GPUs, numbered from 0 (the default device when n = 1).
    pub fn devices(n: usize) -> Vec<burn::backend::wgpu::WgpuDevice> {
        if n == 1 {
            return vec![Default::default()];
        }
        (0..n)
            .map(burn::backend::wgpu::WgpuDevice::DiscreteGpu)
            .collect()
    }
    /// One GPU unless `--devices` says more.
    pub fn default_devices(_batch_size: usize) -> usize {
        1
    }
}
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
mod backend {
    pub type B = burn::backend::Flex;
    pub const NAME: &str = "flex (CPU)";
    /// The CPU, `n` times: `n` workers, each computing the gradients of its share of the batch
    /// on its own thread (flex runs a small model's ops on one core).
    pub fn devices(n: usize) -> Vec<burn::backend::flex::FlexDevice> {
        vec![Default::default(); n]
    }
    /// One worker per core, as many as divide the batch evenly.
    pub fn default_devices(batch_size: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (1..=cores.min(batch_size.max(1)))
            .rev()
            .find(|n| batch_size.is_multiple_of(*n))
            .unwrap_or(1)
    }
}
use backend::B;

mod convert;
mod data;
mod distill;
mod edit;
mod eval;
mod sample;
mod train;
mod train_clip;
mod weights_io;

use sample::{SampleArgs, sample};

use weights_io::load_pipeline;

#[derive(Parser)]
#[command(
    name = "glide",
    version,
    about = "GLIDE text-to-image (arXiv 2112.10741) in Rust on burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images from a prompt.
    Sample(SampleArgs),
    /// Build training data.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Fill the masked part of an image as a prompt says (inpainting).
    Inpaint(edit::EditArgs),
    /// Redraw an image under a prompt, keeping its layout (SDEdit; --mask limits it to an area).
    #[command(name = "img2img")]
    Img2Img(edit::EditArgs),
    /// Train a model (from scratch, from --init weights, or --resume a run).
    Train(train::TrainArgs),
    /// Train a CLIP on the data: noised (it guides sampling, GLIDE §2.4) or clean (it scores
    /// samples in `glide eval`).
    TrainClip(train_clip::TrainClipArgs),
    /// Fine-tune base weights into an inpainting model (extra input channels start at zero).
    FinetuneInpaint(train::FinetuneInpaintArgs),
    /// Compare an inpainting model with the replacement trick on held-out images and masks.
    EvalInpaint(train::EvalInpaintArgs),
    /// Distil a few-step student (guidance, then progressive distillation).
    #[command(subcommand)]
    Distill(distill::DistillCommand),
    /// PSNR/MSE of distilled students and the teacher's own few-step DDIM against the teacher's
    /// many-step samples, with wall time per image (a measurement, not a test).
    EvalDistill(distill::EvalDistillArgs),
    /// Training throughput in images/s for a config (a benchmark, not a test).
    BenchTrain(train::BenchTrainArgs),
    /// Nearest-neighbour accuracy of samples for training and held-out captions.
    EvalEmoji(train::EvalArgs),
    /// The paper's metrics over held-out captions with an evaluation CLIP: CLIP score, CLIP
    /// R-precision, Fréchet distance of CLIP embeddings (`glide eval sweep`: trade-off plot).
    Eval(eval::EvalArgs),
    /// Redraw a run's loss curve (loss.png) from its log.csv.
    Plot {
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Copy weights (a run's ema.safetensors, or a CLIP run's clip.safetensors) for shipping: f16
    /// storage, metadata kept.
    Export {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Keep f32 storage instead of f16.
        #[arg(long)]
        f32: bool,
        /// Add or replace a metadata entry: KEY=VALUE, or KEY=@FILE for a file's text.
        #[arg(long)]
        meta: Vec<String>,
        /// Write shards of at most this many MB and an index (--out must end in
        /// .safetensors.index.json), as a browser downloads large models.
        #[arg(long)]
        shard_mb: Option<u64>,
    },
    /// Convert an OpenAI PyTorch checkpoint (base.pt, upsample.pt, …) to safetensors, without
    /// running its pickle.
    Convert(convert::ConvertArgs),
    /// Check a model against reference outputs stored in a safetensors fixture.
    Check {
        /// A file with `param.*` weights, `in.*` inputs, `out.*` outputs and `options` metadata.
        #[arg(long)]
        fixture: PathBuf,
        /// Run the fixture's inputs through these weights (e.g. a converted checkpoint) instead
        /// of its own `param.*`.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Largest relative L2 error accepted.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f64,
        /// Hold the parameters in f16 (rounded; each layer widened to f32 where it runs), as the
        /// web page does on a GPU with `shader-f16`.
        #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
        param_dtype: String,
    },
    /// Write a seeded model with non-zero random weights (fixture-style init), or all zeros.
    Init {
        /// base, upsample, base-inpaint, upsample-inpaint, tiny, tiny-inpaint or
        /// tiny-upsample-inpaint.
        #[arg(long, default_value = "tiny")]
        preset: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Every parameter 0: a model whose eps is exactly 0.
        #[arg(long)]
        zero: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time sampling steps (a benchmark, not a test).
    Bench {
        #[arg(long, default_value = "base")]
        preset: String,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        n: usize,
        #[arg(long, default_value_t = 3.0)]
        guidance: f64,
        /// Hold the parameters in f16 (each layer widened to f32 where it runs).
        #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
        param_dtype: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sample(args) => sample(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Inpaint(args) => edit::run(args, false),
        Command::Img2Img(args) => edit::run(args, true),
        Command::Train(args) => train::train(args),
        Command::TrainClip(args) => train_clip::train_clip_cmd(args),
        Command::FinetuneInpaint(args) => train::finetune_inpaint(args),
        Command::EvalInpaint(args) => train::eval_inpaint(args),
        Command::Distill(cmd) => distill::run(cmd),
        Command::EvalDistill(args) => distill::eval_distill(args),
        Command::BenchTrain(args) => train::bench_train(args),
        Command::EvalEmoji(args) => train::eval_emoji(args),
        Command::Eval(args) => eval::run(args),
        Command::Export {
            input,
            out,
            f32,
            meta,
            shard_mb,
        } => weights_io::export(&input, &out, !f32, shard_mb, &meta),
        Command::Plot { log, out } => plot(&log, &out),
        Command::Convert(args) => convert::run(args),
        Command::Check {
            fixture,
            weights,
            tolerance,
            param_dtype,
        } => check(
            &fixture,
            weights.as_deref(),
            tolerance,
            param_dtype == "f16",
        ),
        Command::Init {
            preset,
            seed,
            zero,
            out,
        } => init(&preset, seed, zero, &out),
        Command::Bench {
            preset,
            steps,
            n,
            guidance,
            param_dtype,
        } => bench(&preset, steps, n, guidance, param_dtype == "f16"),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn device<BB: Backend>() -> BB::Device {
    Default::default()
}

fn preset(name: &str) -> Result<GlideConfig> {
    GlideConfig::preset(name).with_context(|| {
        format!(
            "unknown preset {name:?}: use base, upsample, base-inpaint, upsample-inpaint, tiny, \
             tiny-inpaint or tiny-upsample-inpaint"
        )
    })
}

/// Runs a sampling chain to the end behind a progress bar; prints the time per step.
fn run_with_bar<M>(mut steps: Steps<'_, B, M>, label: &str) -> Result<Tensor<B, 4>>
where
    M: FnMut(Tensor<B, 4>, &[usize]) -> Tensor<B, 4>,
{
    let total = steps.total();
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} steps {elapsed}<{eta} {msg}")
            .expect("valid template"),
    );
    bar.set_message(format!("{label} on {}", backend::NAME));
    let start = Instant::now();
    let mut last = None;
    for step in steps.by_ref() {
        bar.set_position(step.step as u64);
        last = Some(step.sample);
    }
    bar.finish();
    eprintln!(
        "{:.1} ms per step on {}",
        start.elapsed().as_secs_f64() * 1e3 / total as f64,
        backend::NAME
    );
    last.context("the chain has no steps")
}

/// Writes `count` samples in [-1, 1] of `size` px as one PNG grid.
fn write_grid(
    path: &Path,
    raw: &[f32],
    (count, size, cols): (usize, usize, usize),
    text: &[(String, String)],
) -> Result<()> {
    let images = batch_to_rgb8(raw, count, size, size);
    let (rgb, w, h) = grid(&images, size, size, cols);
    write(path, &encode_png(&rgb, w, h, text))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Redraws a run's loss plot; the title names the objective when the run's config.json is beside
/// the log.
fn plot(log: &Path, out: &Path) -> Result<()> {
    let rows = glide_train::log::CsvLog::read(log)?;
    let title = log
        .parent()
        .map(|d| d.join("config.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| glide_train::TrainConfig::parse(&text).ok())
        .map_or_else(|| "loss".to_string(), |c| c.loss_name());
    glide_train::log::plot_losses(&rows, out, &title).map_err(|e| anyhow::anyhow!(e))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn check(fixture: &Path, weights: Option<&Path>, tolerance: f64, half: bool) -> Result<()> {
    let bytes = std::fs::read(fixture)
        .with_context(|| format!("cannot read the fixture {}", fixture.display()))?;
    let weights = weights
        .map(|p| {
            glide_model::shards::read_weights_file(p)
                .map(|state| state.to_safetensors(false))
                .with_context(|| format!("cannot read the weights {}", p.display()))
        })
        .transpose()?;
    let storage = match half {
        true => ParamStorage::F16,
        false => ParamStorage::F32,
    };
    let report = check_fixture_with::<B>(&bytes, weights.as_deref(), storage, &device::<B>())?;
    println!(
        "{}: {} parameters{}",
        fixture.display(),
        report.num_params,
        match report.expected_num_params {
            Some(n) if n == report.num_params => " (matches n_params)".to_string(),
            Some(n) => format!(" (file says n_params = {n}!)"),
            None => String::new(),
        }
    );
    println!(
        "  parameters held in {} ({})",
        glide_model::half::dtype_names(&report.param_dtypes),
        backend::NAME
    );
    for (key, err) in &report.errors {
        let verdict = if *err <= tolerance { "ok" } else { "FAIL" };
        println!("  {key}: relative L2 error {err:.3e} {verdict}");
    }
    if !report.unused_keys.is_empty() {
        println!("  not compared: {}", report.unused_keys.join(", "));
    }
    if report.errors.is_empty() {
        bail!("the fixture has no out.* tensors to compare against");
    }
    if report.max_error() > tolerance {
        bail!(
            "relative L2 error {:.3e} is above {tolerance:e}: the weights or options do not \
             reproduce the reference outputs",
            report.max_error()
        );
    }
    Ok(())
}

fn init(name: &str, seed: u64, zero: bool, out: &Path) -> Result<()> {
    let config = preset(name)?;
    let model = fixture_style_init(config.init::<B>(&device::<B>()), seed, zero);
    let kind = if zero { "zero" } else { "random" };
    let bytes = save_weights(
        &model,
        &config,
        &[
            ("init", format!("{kind}, seed {seed}")),
            ("preset", name.to_string()),
        ],
        false,
    );
    write(out, &bytes)?;
    eprintln!(
        "wrote {} ({} parameters, {kind} weights, untrained)",
        out.display(),
        model.num_params()
    );
    Ok(())
}

use burn::module::Module;

/// The base sample's side a super-resolution model upsamples (a quarter of its own, as GLIDE's
/// 64 → 256 px), or `None` for other models.
fn config_low_res(config: &GlideConfig) -> Option<usize> {
    config.super_res.then(|| (config.image_size / 4).max(1))
}

fn bench(name: &str, steps: usize, n: usize, guidance: f64, half: bool) -> Result<()> {
    let config = preset(name)?;
    let t0 = Instant::now();
    let mut model = fixture_style_init(config.init::<B>(&device::<B>()), 0, false);
    if half {
        model = glide_model::half::cast_params(model, burn::tensor::DType::F16);
    }
    eprintln!(
        "{name}: {} parameters, built in {:.1} s",
        model.num_params(),
        t0.elapsed().as_secs_f64()
    );
    let pipeline = Text2Im::new(model, config, device::<B>());
    let req = GenerateRequest {
        prompt: "an oil painting of a corgi".into(),
        guidance_scale: guidance,
        steps: steps + 1,
        batch_size: n,
        sampler: Sampler::Ddim,
        ..Default::default()
    };
    let low_side = config_low_res(&pipeline.config);
    let mut it: Box<dyn Iterator<Item = glide_diffusion::SampleStep<B>>> = match low_side {
        // an upsampler samples from a (here grey) base sample of a quarter of its side
        Some(side) => Box::new(pipeline.upsample(
            Tensor::zeros([n, 3, side, side], &device::<B>()),
            &req,
            &glide_pipeline::UpsampleOptions {
                respacing: (steps + 1).to_string(),
                ..Default::default()
            },
        )?),
        None => Box::new(pipeline.generate(&req)?),
    };
    // The first step includes one-off costs (kernel compilation on GPUs): time the rest.
    let first = it.next().context("no steps")?;
    let _ = first.sample.into_data();
    let start = Instant::now();
    let mut done = 0;
    for step in it {
        let _ = step.sample.into_data();
        done += 1;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / done.max(1) as f64;
    println!(
        "{name} on {}: {ms:.1} ms per sampling step (batch {n}, guidance {guidance}: {} UNet rows per step, parameters in {})",
        backend::NAME,
        if guidance != 1.0 { 2 * n } else { n },
        if half { "f16" } else { "f32" }
    );
    Ok(())
}
