//! `glide sample`: text to image with the bundled or given weights, optionally through an
//! upsampler (GLIDE's cascade) or with CLIP guidance.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::tensor::TensorData;
use glide_diffusion::sampling::Sampler;
use glide_model::clip::NoisedClip;
use glide_model::weights::StateDict;
use glide_pipeline::clip_guided::load_noised_clip;
use glide_pipeline::{Cascade, GenerateRequest, UpsampleOptions};

use crate::weights_io::load_pipeline;
use crate::{B, device, run_with_bar, write, write_grid};

/// Where `glide sample` looks for weights when none are given: the bundled model.
const DEFAULT_WEIGHTS: &[&str] = &["www/models/base.safetensors"];

#[derive(clap::Args)]
pub struct SampleArgs {
    /// The caption; repeat the flag for several (one grid row of --n images each).
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Takes the place of the empty prompt in the unconditional branch.
    #[arg(long, default_value = "")]
    negative: String,
    /// Sampling steps: space_timesteps(1000, "N") (default 50; 100 for the base of a cascade).
    #[arg(long)]
    steps: Option<usize>,
    /// An original respacing string ("100", "fast27", "ddim25", "10,15,20"); overrides --steps.
    #[arg(long)]
    respacing: Option<String>,
    /// GLIDE's guidance scale s (1 = no guidance).
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of images (one batch).
    #[arg(long, default_value_t = 1)]
    n: usize,
    #[arg(long, default_value = "ddpm")]
    sampler: Sampler,
    /// DDIM's eta.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Output PNG (a grid when --n > 1 or several prompts).
    #[arg(long, visible_alias = "grid", default_value = "out.png")]
    out: PathBuf,
    /// Grid columns (default: --n with several prompts, else √n).
    #[arg(long)]
    cols: Option<usize>,
    /// Weights (.safetensors with GLIDE `options` metadata).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Also write the raw samples in [-1, 1] as safetensors (key `samples`, [n, 3, H, W]; with
    /// an upsampler also `base_samples`).
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// A super-resolution model (e.g. the converted upsample.pt): the base samples are upsampled
    /// with it as GLIDE's cascade does (64 → 256 px for the released models).
    #[arg(long)]
    upsampler: Option<PathBuf>,
    /// The upsampler's respacing (the original notebook's "fast27").
    #[arg(long, default_value = "fast27")]
    upsample_respacing: String,
    /// The upsampler starts from x_T = temperature · N(0, I) (the notebook's 0.997).
    #[arg(long, default_value_t = 0.997)]
    upsample_temp: f64,
    /// CLIP guidance scale (GLIDE §2.4): the mean moves along s·∇ₓ of a noised CLIP's
    /// image–caption similarity at every step; combines with --guidance. Needs --clip.
    #[arg(long, requires = "clip", conflicts_with = "upsampler")]
    clip_guidance: Option<f64>,
    /// Noised CLIP weights: one file with both towers, or the two files `glide convert` writes
    /// for clip_image_enc.pt and clip_text_enc.pt (repeat the flag).
    #[arg(long)]
    clip: Vec<PathBuf>,
    /// With --upsampler: also write the base model's samples to this PNG.
    #[arg(long, requires = "upsampler")]
    base_out: Option<PathBuf>,
}

impl SampleArgs {
    fn request(&self, prompt: &str) -> GenerateRequest {
        GenerateRequest {
            prompt: prompt.to_string(),
            negative: self.negative.clone(),
            guidance_scale: self.guidance,
            // The original notebook samples the base model of a cascade with 100 steps.
            steps: self
                .steps
                .unwrap_or(if self.upsampler.is_some() { 100 } else { 50 }),
            respacing: self.respacing.clone(),
            sampler: self.sampler,
            eta: self.eta,
            seed: self.seed,
            batch_size: self.n,
        }
    }

    fn cols(&self) -> usize {
        self.cols.unwrap_or(if self.prompt.len() > 1 {
            self.n
        } else {
            (self.n as f64).sqrt().ceil() as usize
        })
    }

    /// PNG text: the request with every prompt, and the model file names.
    fn png_text(&self, models: &[&Path]) -> Vec<(String, String)> {
        let names: Vec<String> = models
            .iter()
            .filter_map(|p| p.file_name())
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        let mut text = self
            .request(&self.prompt.join(" | "))
            .png_text(&names.join(" + "));
        if let Some(s) = self.clip_guidance {
            text.push(("clip_guidance".into(), s.to_string()));
        }
        text
    }
}

pub fn sample(a: SampleArgs) -> Result<()> {
    let path = match &a.weights {
        Some(p) => p.clone(),
        None => DEFAULT_WEIGHTS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context(
                "no weights given and the bundled model www/models/base.safetensors is not \
                 here: run glide from the repository root, or pass --weights FILE.safetensors",
            )?,
    };
    if let Some(up) = &a.upsampler {
        let cascade = Cascade::new(load_pipeline(&path)?, load_pipeline(up)?)?;
        return sample_cascade(&a, &cascade, &[&path, up]);
    }
    let pipeline = load_pipeline(&path)?;
    let clip = load_clip(&a.clip, &path)?;
    if a.clip_guidance.is_some() && a.sampler == Sampler::Ddim {
        eprintln!("{}", crate::eval::DDIM_CLIP_WARNING);
    }
    let s = pipeline.config.image_size;
    let mut raw = Vec::new();
    for prompt in &a.prompt {
        let req = a.request(prompt);
        let label = format!("{prompt:?}");
        let sample = match (&clip, a.clip_guidance) {
            (Some(clip), Some(scale)) => {
                run_with_bar(pipeline.generate_clip_guided(&req, clip, scale)?, &label)?
            }
            _ => run_with_bar(pipeline.generate(&req)?, &label)?,
        };
        raw.extend(sample.into_data().to_vec::<f32>().expect("f32 samples"));
    }
    let count = a.n * a.prompt.len();
    write_grid(&a.out, &raw, (count, s, a.cols()), &a.png_text(&[&path]))?;
    if let Some(p) = &a.save_raw {
        let mut st = StateDict::default();
        st.tensors
            .insert("samples".into(), TensorData::new(raw, [count, 3, s, s]));
        write(p, &st.to_safetensors(false))?;
    }
    Ok(())
}

/// The noised CLIP for --clip-guidance (on the autodiff backend: its gradient guides sampling).
/// A CLIP made by `glide train-clip` reads the token ids of the model it was trained for: its
/// vocabulary must be the one of `model` (the diffusion weights it works with).
pub(crate) fn load_clip(
    paths: &[PathBuf],
    model: &Path,
) -> Result<Option<NoisedClip<Autodiff<B>>>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let states = paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| {
                format!(
                    "cannot read the CLIP weights {}; check the path",
                    p.display()
                )
            })?;
            StateDict::from_safetensors(&bytes)
                .with_context(|| format!("{} is not a safetensors file", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    // The model's vocabulary, read only when a tower names one.
    let model_vocab = if states.iter().any(|s| s.metadata.contains_key("vocab")) {
        let bytes = std::fs::read(model)
            .with_context(|| format!("cannot read the weights {}", model.display()))?;
        StateDict::from_safetensors(&bytes)?
            .metadata
            .get("vocab")
            .cloned()
    } else {
        None
    };
    let clip =
        load_noised_clip(&states, model_vocab.as_deref(), &device::<B>()).with_context(|| {
            format!(
                "the CLIP {} does not fit the model {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" + "),
                model.display()
            )
        })?;
    Ok(Some(clip))
}

/// The base model, then the upsampler (GLIDE's 64 → 256 cascade): `--out` gets the upsampled
/// grid, `--base-out` the base samples.
fn sample_cascade(a: &SampleArgs, cascade: &Cascade<B>, models: &[&Path]) -> Result<()> {
    let options = UpsampleOptions {
        respacing: a.upsample_respacing.clone(),
        temperature: a.upsample_temp,
        ..Default::default()
    };
    let (mut low_raw, mut up_raw) = (Vec::new(), Vec::new());
    for prompt in &a.prompt {
        let req = a.request(prompt);
        let low = run_with_bar(cascade.base_steps(&req)?, &format!("{prompt:?} (base)"))?;
        let up = cascade.upsample_steps(low.clone(), &req, &options)?;
        let up = run_with_bar(up, &format!("{prompt:?} (upsampler)"))?;
        low_raw.extend(low.into_data().to_vec::<f32>().expect("f32 samples"));
        up_raw.extend(up.into_data().to_vec::<f32>().expect("f32 samples"));
    }
    let count = a.n * a.prompt.len();
    let text = a.png_text(models);
    let (low_size, up_size) = (
        cascade.base.config.image_size,
        cascade.upsampler.config.image_size,
    );
    write_grid(&a.out, &up_raw, (count, up_size, a.cols()), &text)?;
    if let Some(p) = &a.base_out {
        write_grid(p, &low_raw, (count, low_size, a.cols()), &text)?;
    }
    if let Some(p) = &a.save_raw {
        let mut st = StateDict::default();
        st.tensors.insert(
            "samples".into(),
            TensorData::new(up_raw, [count, 3, up_size, up_size]),
        );
        st.tensors.insert(
            "base_samples".into(),
            TensorData::new(low_raw, [count, 3, low_size, low_size]),
        );
        write(p, &st.to_safetensors(false))?;
    }
    Ok(())
}
