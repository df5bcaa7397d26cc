//! `glide inpaint` and `glide img2img`: files in and out around `Text2Im::edit`. Any image size
//! works: the model sees a resized copy, and the result is brought back to the input's size with
//! every unmasked pixel copied from the input.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::TensorData;
use glide_data::imaging::decode_image;
use glide_diffusion::sampling::Sampler;
use glide_model::weights::StateDict;
use glide_pipeline::cascade_edit::cascade_inputs;
use glide_pipeline::image::{encode_png, to_rgb8};
use glide_pipeline::mask::{composite, rgb8_to_chw};
use glide_pipeline::{
    Cascade, EditInput, EditMethod, EditRequest, GenerateRequest, UpsampleOptions, UserMask,
};
use image::imageops::FilterType;

use crate::write;

/// The bundled inpainting model, and the base model the replacement trick (and img2img) uses.
pub const INPAINT_WEIGHTS: &str = "www/models/inpaint.safetensors";
pub const BASE_WEIGHTS: &str = "www/models/base.safetensors";

#[derive(clap::Args)]
pub struct EditArgs {
    /// The picture to edit (PNG, JPEG or WebP, any size).
    #[arg(long)]
    image: PathBuf,
    /// White = regenerate, black = keep; in a mask with transparency, transparent = regenerate.
    /// Resized to the image when the sizes differ.
    #[arg(long)]
    mask: Option<PathBuf>,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative: String,
    /// GLIDE's guidance scale s (the paper edits with 5).
    #[arg(long, default_value_t = 5.0)]
    guidance: f64,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// An original respacing string; overrides --steps.
    #[arg(long)]
    respacing: Option<String>,
    #[arg(long, default_value = "ddim")]
    sampler: Sampler,
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// SDEdit strength in (0, 1]: how far down the chain to start (1 = from pure noise).
    /// Default: 1 for inpaint, 0.6 for img2img.
    #[arg(long)]
    strength: Option<f64>,
    /// auto (the inpainting model if the weights are one), model, or replace (the paper's
    /// baseline for any model: known pixels replaced by the noised input after every step).
    #[arg(long, default_value = "auto")]
    method: EditMethod,
    /// Weights; default: www/models/inpaint.safetensors for masked edits (the base model with
    /// --method replace), www/models/base.safetensors otherwise.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// An upsampling inpainting model (the converted upsample_inpaint.pt): the edit runs as GLIDE's
    /// cascade, the base inpainting model (--weights) at its size, then this one at its own.
    #[arg(long, requires = "weights")]
    upsampler: Option<PathBuf>,
    /// The upsampler's respacing (the original notebook's "fast27").
    #[arg(long, default_value = "fast27")]
    upsample_respacing: String,
    /// The upsampler starts from x_T = temperature · N(0, I) (the notebook's 0.997).
    #[arg(long, default_value_t = 0.997)]
    upsample_temp: f64,
    #[arg(long, default_value = "out.png")]
    out: PathBuf,
    /// Also write the raw sample at the model's size in [-1, 1] (safetensors, key `samples`).
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// Also write before | mask | after side by side (at the input's size).
    #[arg(long)]
    compare: Option<PathBuf>,
}

/// `before | before with the regenerated area tinted | after`, one RGB strip.
fn side_by_side(before: &[u8], after: &[u8], mask: Option<&UserMask>, w: u32, h: u32) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let mut tinted = before.to_vec();
    for i in 0..w * h {
        if mask.is_none_or(|m| m.regenerate[i]) {
            let p = &mut tinted[i * 3..i * 3 + 3];
            p[0] = (p[0] as f32 * 0.4 + 255.0 * 0.6) as u8;
            p[1] = (p[1] as f32 * 0.4) as u8;
            p[2] = (p[2] as f32 * 0.4 + 90.0 * 0.6) as u8;
        }
    }
    let mut out = Vec::with_capacity(w * h * 9);
    for y in 0..h {
        for img in [before, &tinted, after] {
            out.extend_from_slice(&img[y * w * 3..(y + 1) * w * 3]);
        }
    }
    out
}

/// Reads an image file, refusing one larger than `glide_data::imaging::MAX_IMAGE_PIXELS` from its
/// header, before decoding.
fn open_image(path: &Path, what: &str) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the {what} {}; check the path", path.display()))?;
    decode_image(&bytes).with_context(|| {
        format!(
            "cannot use the {what} {}; use a PNG, JPEG or WebP file",
            path.display()
        )
    })
}

/// Reads a mask file at its own size.
pub fn read_mask(path: &Path) -> Result<UserMask> {
    let rgba = open_image(path, "mask")?.to_rgba8();
    let (w, h) = rgba.dimensions();
    Ok(UserMask::from_rgba(rgba.as_raw(), w as usize, h as usize)?)
}

/// The weights an edit uses: --weights, else the bundled inpainting model for a masked edit by
/// the model method, else the bundled base model.
fn edit_weights(a: &EditArgs) -> PathBuf {
    match &a.weights {
        Some(p) => p.clone(),
        None => {
            let inpaint = Path::new(INPAINT_WEIGHTS);
            if a.mask.is_some() && a.method != EditMethod::Replace && inpaint.exists() {
                inpaint.to_path_buf()
            } else {
                PathBuf::from(BASE_WEIGHTS)
            }
        }
    }
}

/// The picture at side `s` (Lanczos3; unchanged when it already is).
fn resized(original: &image::RgbImage, s: usize) -> image::RgbImage {
    if original.dimensions() == (s as u32, s as u32) {
        original.clone()
    } else {
        image::imageops::resize(original, s as u32, s as u32, FilterType::Lanczos3)
    }
}

/// The picture as the model at side `s` sees it: resized, with the painted mask at that size.
fn input_at(original: &image::RgbImage, mask: Option<&UserMask>, s: usize) -> EditInput {
    EditInput {
        image: rgb8_to_chw(resized(original, s).as_raw(), s, s),
        keep: mask.map(|m| m.keep_at(s)),
    }
}

/// Runs the edit on one model, or as GLIDE's inpainting cascade with `--upsampler`: the raw
/// result, its side, the method and the models' names.
fn sample_edit(
    a: &EditArgs,
    req: &EditRequest,
    original: &image::RgbImage,
    mask: Option<&UserMask>,
) -> Result<(Vec<f32>, usize, EditMethod, String)> {
    let weights = edit_weights(a);
    let name = |p: &Path| {
        p.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let pipe = crate::load_pipeline(&weights)?;
    let method = pipe.edit_method(a.method)?;
    let label = format!("{:?} ({method:?})", a.prompt);
    let Some(up_path) = &a.upsampler else {
        let s = pipe.config.image_size;
        let x = crate::run_with_bar(pipe.edit(req, &input_at(original, mask, s))?, &label)?;
        return Ok((
            x.into_data().to_vec().expect("f32"),
            s,
            method,
            name(&weights),
        ));
    };
    let cascade = Cascade::new_inpaint(pipe, crate::load_pipeline(up_path)?)?;
    let (low_s, s) = (
        cascade.base.config.image_size,
        cascade.upsampler.config.image_size,
    );
    // The picture at the upsampler's size; the base stage sees its box average.
    let (low_in, high_in) = cascade_inputs(resized(original, s).as_raw(), mask, low_s, s)?;
    let low = crate::run_with_bar(
        cascade.edit_steps(req, &low_in)?,
        &format!("{label} (base)"),
    )?;
    let options = UpsampleOptions {
        respacing: a.upsample_respacing.clone(),
        temperature: a.upsample_temp,
        ..Default::default()
    };
    let up = cascade.upsample_edit_steps(low, req, &high_in, &options)?;
    let x = crate::run_with_bar(up, &format!("{label} (upsampler)"))?;
    let names = format!("{} + {}", name(&weights), name(up_path));
    Ok((x.into_data().to_vec().expect("f32"), s, method, names))
}

pub fn run(a: EditArgs, img2img: bool) -> Result<()> {
    let strength = a.strength.unwrap_or(if img2img { 0.6 } else { 1.0 });
    if !img2img && a.mask.is_none() {
        bail!(
            "glide inpaint needs --mask FILE (white = regenerate); for a whole-image edit use glide img2img"
        );
    }
    let original = open_image(&a.image, "image")?.to_rgb8();
    let (w, h) = original.dimensions();
    let mask = match &a.mask {
        Some(p) => Some(read_mask(p)?.require_some()?),
        None => None,
    };
    // The model's mask comes from the file as painted; the composite uses it at the image's size.
    let full_mask = mask.as_ref().map(|m| {
        if (m.width, m.height) != (w as usize, h as usize) {
            eprintln!(
                "note: the mask is {}×{} but the image {w}×{h}; resized the mask to the image",
                m.width, m.height
            );
        }
        m.resized(w as usize, h as usize)
    });
    let req = EditRequest {
        generate: GenerateRequest {
            prompt: a.prompt.clone(),
            negative: a.negative.clone(),
            guidance_scale: a.guidance,
            steps: a.steps,
            respacing: a.respacing.clone(),
            sampler: a.sampler,
            eta: a.eta,
            seed: a.seed,
            batch_size: 1,
        },
        strength,
        method: a.method,
    };
    let (raw, s, method, model) = sample_edit(&a, &req, &original, mask.as_ref())?;

    // Back to the input's size; unmasked pixels come from the input itself.
    let result =
        image::RgbImage::from_raw(s as u32, s as u32, to_rgb8(&raw, s, s)).expect("s×s RGB");
    let result = if (w, h) == (s as u32, s as u32) {
        result
    } else {
        image::imageops::resize(&result, w, h, FilterType::Lanczos3)
    };
    let rgb = match &full_mask {
        Some(m) => composite(original.as_raw(), result.as_raw(), m),
        None => result.into_raw(),
    };
    let mut text = req.generate.png_text(&model);
    if a.upsampler.is_some() {
        text.push(("upsample_respacing".into(), a.upsample_respacing.clone()));
    }
    text.push(("strength".into(), strength.to_string()));
    text.push(("edit".into(), format!("{method:?}").to_lowercase()));
    write(&a.out, &encode_png(&rgb, w as usize, h as usize, &text))?;
    eprintln!("wrote {} ({w}×{h})", a.out.display());
    if let Some(p) = &a.compare {
        let strip = side_by_side(original.as_raw(), &rgb, full_mask.as_ref(), w, h);
        write(p, &encode_png(&strip, 3 * w as usize, h as usize, &text))?;
        eprintln!("wrote {} (before | mask | after)", p.display());
    }
    if let Some(p) = a.save_raw {
        let mut st = StateDict::default();
        st.tensors
            .insert("samples".into(), TensorData::new(raw, [1, 3, s, s]));
        write(&p, &st.to_safetensors(false))?;
    }
    Ok(())
}
