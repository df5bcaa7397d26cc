//! Model configuration with the original option names (`model_and_diffusion_defaults`), and the
//! presets GLIDE released.

use burn::config::Config;
use serde_json::{Value, json};

/// The largest model glide-rs builds from a file's options (GLIDE's released base has 0.39G).
pub const MAX_PARAMS: u64 = 4_000_000_000;

/// Options of a GLIDE model, named as in `glide_text2im/model_creation.py`.
#[derive(Config, Debug, PartialEq)]
pub struct GlideConfig {
    /// Output resolution in pixels.
    #[config(default = 64)]
    pub image_size: usize,
    /// Base channel count of the UNet (`model_channels`).
    #[config(default = 192)]
    pub num_channels: usize,
    #[config(default = 3)]
    pub num_res_blocks: usize,
    /// Channel multiplier per level; empty means the original default for `image_size`.
    #[config(default = "Vec::new()")]
    pub channel_mult: Vec<usize>,
    /// Heads per attention layer when `num_head_channels` is unset.
    #[config(default = 1)]
    pub num_heads: usize,
    /// Channels per attention head (the original's -1 is `None`).
    #[config(default = "Some(64)")]
    pub num_head_channels: Option<usize>,
    /// Heads in the decoder's attention (the original's -1 is `None`: same as `num_heads`).
    #[config(default = "None")]
    pub num_heads_upsample: Option<usize>,
    /// Resolutions (pixels) that get attention layers.
    #[config(default = "vec![32, 16, 8]")]
    pub attention_resolutions: Vec<usize>,
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Text tokens per caption.
    #[config(default = 128)]
    pub text_ctx: usize,
    #[config(default = 512)]
    pub xf_width: usize,
    #[config(default = 16)]
    pub xf_layers: usize,
    #[config(default = 8)]
    pub xf_heads: usize,
    #[config(default = true)]
    pub xf_final_ln: bool,
    /// Learned embeddings for padded text positions.
    #[config(default = true)]
    pub xf_padding: bool,
    /// Rows of the token embedding (GPT-2: 50257).
    #[config(default = 50257)]
    pub n_vocab: usize,
    #[config(default = 1000)]
    pub diffusion_steps: usize,
    /// `squaredcos_cap_v2` (base) or `linear` (upsampler).
    #[config(default = "String::from(\"squaredcos_cap_v2\")")]
    pub noise_schedule: String,
    #[config(default = true)]
    pub use_scale_shift_norm: bool,
    #[config(default = true)]
    pub resblock_updown: bool,
    /// 7 (or 10) input channels: x_t, the masked image and the mask (1 = keep).
    #[config(default = false)]
    pub inpaint: bool,
    /// Input is x_t plus the bilinearly upsampled low-resolution image.
    #[config(default = false)]
    pub super_res: bool,
    /// A distilled student (not in the original): the guidance weight w = s − 1 is an input,
    /// embedded like the timestep and added to it (Meng et al. 2023).
    #[config(default = false)]
    pub guidance_embed: bool,
    /// The first three output channels are v = α·ε − σ·x₀ (Salimans & Ho 2022) instead of ε.
    #[config(default = false)]
    pub predict_v: bool,
    /// A progressively distilled student samples with exactly this many DDIM steps on the nested
    /// grid (see `glide_diffusion::distill`).
    #[config(default = "None")]
    pub student_steps: Option<usize>,
}

/// An option value the model cannot be built from.
#[derive(Debug, thiserror::Error)]
#[error(
    "GLIDE option {key:?} is missing or invalid ({why}); use the keys of model_and_diffusion_defaults()"
)]
pub struct OptionsError {
    pub key: String,
    pub why: String,
}

impl GlideConfig {
    /// GLIDE's base text-to-image model (64 px, 385,030,726 parameters).
    pub fn base() -> Self {
        Self::new()
    }

    /// GLIDE's 64 → 256 px upsampler (398,361,286 parameters).
    pub fn upsample() -> Self {
        Self::new()
            .with_image_size(256)
            .with_num_res_blocks(2)
            .with_noise_schedule("linear".into())
            .with_super_res(true)
    }

    /// The base model fine-tuned for inpainting.
    pub fn base_inpaint() -> Self {
        Self::base().with_inpaint(true)
    }

    /// The upsampler fine-tuned for inpainting.
    pub fn upsample_inpaint() -> Self {
        Self::upsample().with_inpaint(true)
    }

    /// A 32 px, 3.1M-parameter model (1.6M of it the GPT-2 token embedding) for tests and the
    /// in-browser demo before training.
    pub fn tiny() -> Self {
        Self::new()
            .with_image_size(32)
            .with_num_channels(32)
            .with_num_res_blocks(1)
            .with_channel_mult(vec![1, 2, 2])
            .with_num_head_channels(Some(16))
            .with_attention_resolutions(vec![16, 8])
            .with_dropout(0.0)
            .with_text_ctx(16)
            .with_xf_width(32)
            .with_xf_layers(2)
            .with_xf_heads(4)
    }

    /// An upsampling inpainting model 16 → 32 px with the reference fixtures' tiny upsampler
    /// configuration (`upsample_tiny`): the converted `inpaint_tiny.pt` and this one make an
    /// inpainting cascade for tests (no released file this small exists).
    pub fn tiny_upsample_inpaint() -> Self {
        Self::tiny()
            .with_attention_resolutions(vec![8])
            .with_text_ctx(8)
            .with_noise_schedule("linear".into())
            .with_super_res(true)
            .with_inpaint(true)
    }

    /// A preset by name: `base`, `upsample`, `base-inpaint`, `upsample-inpaint`, `tiny`,
    /// `tiny-inpaint`, `tiny-upsample-inpaint`.
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "base" => Self::base(),
            "upsample" => Self::upsample(),
            "base-inpaint" => Self::base_inpaint(),
            "upsample-inpaint" => Self::upsample_inpaint(),
            "tiny" => Self::tiny(),
            "tiny-inpaint" => Self::tiny().with_inpaint(true),
            "tiny-upsample-inpaint" => Self::tiny_upsample_inpaint(),
            _ => return None,
        })
    }

    /// Channel multipliers, resolving the original's defaults by image size.
    pub fn channel_mult(&self) -> Vec<usize> {
        if !self.channel_mult.is_empty() {
            return self.channel_mult.clone();
        }
        match self.image_size {
            256 => vec![1, 1, 2, 2, 4, 4],
            128 => vec![1, 1, 2, 3, 4],
            64 => vec![1, 2, 3, 4],
            // 2^(levels + 2) = image_size, as the original asserts for explicit lists
            s => vec![1; (s.max(8).ilog2() as usize).saturating_sub(2).max(1)],
        }
    }

    /// Downsampling factors that get attention (`attention_ds`).
    pub fn attention_ds(&self) -> Vec<usize> {
        self.attention_resolutions
            .iter()
            .map(|r| self.image_size / r)
            .collect()
    }

    /// UNet input channels: 3, +4 for inpainting, +3 for super-resolution.
    pub fn in_channels(&self) -> usize {
        3 + if self.inpaint { 4 } else { 0 } + if self.super_res { 3 } else { 0 }
    }

    /// UNet output channels: eps and the learned-range variance (3 + 3).
    pub fn out_channels(&self) -> usize {
        6
    }

    /// Builds a config from the original options dictionary (as stored in the reference
    /// fixtures' `options` metadata): strings for lists, -1 for "unset".
    pub fn from_glide_options(v: &Value) -> Result<Self, OptionsError> {
        let err = |key: &str, why: &str| OptionsError {
            key: key.into(),
            why: why.into(),
        };
        let usize_of = |key: &str| -> Result<usize, OptionsError> {
            v.get(key)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| err(key, "expected a non-negative integer"))
        };
        let opt_of = |key: &str| -> Result<Option<usize>, OptionsError> {
            match v.get(key).and_then(Value::as_i64) {
                Some(-1) => Ok(None),
                Some(x) if x > 0 => Ok(Some(x as usize)),
                _ => Err(err(key, "expected a positive integer or -1")),
            }
        };
        let bool_of = |key: &str, default: bool| -> bool {
            v.get(key).and_then(Value::as_bool).unwrap_or(default)
        };
        let list_of = |key: &str| -> Result<Vec<usize>, OptionsError> {
            let s = v
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| err(key, "expected a comma-separated string"))?;
            if s.is_empty() {
                return Ok(Vec::new());
            }
            s.split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| err(key, "expected integers separated by commas"))
        };
        let config = Self::new()
            .with_image_size(usize_of("image_size")?)
            .with_num_channels(usize_of("num_channels")?)
            .with_num_res_blocks(usize_of("num_res_blocks")?)
            .with_channel_mult(list_of("channel_mult")?)
            .with_num_heads(usize_of("num_heads")?)
            .with_num_head_channels(opt_of("num_head_channels")?)
            .with_num_heads_upsample(opt_of("num_heads_upsample")?)
            .with_attention_resolutions(list_of("attention_resolutions")?)
            .with_dropout(v.get("dropout").and_then(Value::as_f64).unwrap_or(0.0))
            .with_text_ctx(usize_of("text_ctx")?)
            .with_xf_width(usize_of("xf_width")?)
            .with_xf_layers(usize_of("xf_layers")?)
            .with_xf_heads(usize_of("xf_heads")?)
            .with_xf_final_ln(bool_of("xf_final_ln", true))
            .with_xf_padding(bool_of("xf_padding", true))
            .with_n_vocab(v.get("n_vocab").and_then(Value::as_u64).unwrap_or(50257) as usize)
            .with_diffusion_steps(usize_of("diffusion_steps")?)
            .with_noise_schedule(
                v.get("noise_schedule")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err("noise_schedule", "expected a schedule name"))?
                    .to_string(),
            )
            .with_use_scale_shift_norm(bool_of("use_scale_shift_norm", true))
            .with_resblock_updown(bool_of("resblock_updown", true))
            .with_inpaint(bool_of("inpaint", false))
            .with_super_res(bool_of("super_res", false))
            .with_guidance_embed(bool_of("guidance_embed", false))
            .with_predict_v(bool_of("predict_v", false))
            .with_student_steps(
                v.get("student_steps")
                    .and_then(Value::as_u64)
                    .map(|x| x as usize),
            );
        config.validate()?;
        Ok(config)
    }

    /// Checks what building the model would otherwise assert: channel counts that GroupNorm's 32
    /// groups and the attention heads divide, attention resolutions the image size reaches, and
    /// a text width the heads divide.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let err = |key: &str, why: String| {
            Err(OptionsError {
                key: key.into(),
                why,
            })
        };
        // A file's options decide what is allocated: absurd sizes (a hostile or damaged file) are
        // refused here, before any tensor exists.
        let caps = [
            ("image_size", self.image_size, 1024),
            ("num_channels", self.num_channels, 2048),
            ("num_res_blocks", self.num_res_blocks, 16),
            ("channel_mult", self.channel_mult().len(), 8),
            (
                "channel_mult",
                self.channel_mult().into_iter().max().unwrap_or(1),
                16,
            ),
            ("text_ctx", self.text_ctx, 4096),
            ("xf_width", self.xf_width, 8192),
            ("xf_layers", self.xf_layers, 128),
            ("n_vocab", self.n_vocab, 1 << 20),
        ];
        if let Some((key, v, cap)) = caps.iter().find(|(_, v, cap)| v > cap) {
            return err(
                key,
                format!(
                    "{v} is more than glide-rs builds ({cap}); the file is damaged or not a GLIDE model"
                ),
            );
        }
        let params = self.approx_params();
        if params > MAX_PARAMS {
            return err(
                "num_channels",
                format!(
                    "these options make a model of ~{:.1}G parameters, more than glide-rs builds ({}G)",
                    params as f64 / 1e9,
                    MAX_PARAMS / 1_000_000_000
                ),
            );
        }
        if !self.resblock_updown {
            return err(
                "resblock_updown",
                "glide-rs implements GLIDE's residual up/downsampling only (true)".into(),
            );
        }
        let mult = self.channel_mult();
        let widths: Vec<usize> = mult.iter().map(|m| m * self.num_channels).collect();
        if let Some(w) = widths.iter().find(|w| **w == 0 || !w.is_multiple_of(32)) {
            return err(
                "num_channels",
                format!("a level has {w} channels; GroupNorm needs a multiple of 32"),
            );
        }
        let levels = mult.len();
        let mut attention: Vec<usize> = vec![widths[levels - 1]]; // the middle block
        for r in &self.attention_resolutions {
            if *r == 0 || !self.image_size.is_multiple_of(*r) {
                return err(
                    "attention_resolutions",
                    format!("{r} px does not divide image_size {}", self.image_size),
                );
            }
            let ds = self.image_size / r;
            if let Some(level) = (0..levels).find(|l| 1 << l == ds) {
                attention.push(widths[level]);
            }
        }
        let heads = [
            self.num_heads,
            self.num_heads_upsample.unwrap_or(self.num_heads),
        ];
        for ch in attention {
            match self.num_head_channels {
                Some(hc) if !ch.is_multiple_of(hc) => {
                    return err(
                        "num_head_channels",
                        format!("{ch} attention channels do not split into heads of {hc}"),
                    );
                }
                None if heads.iter().any(|h| *h == 0 || !ch.is_multiple_of(*h)) => {
                    return err(
                        "num_heads",
                        format!("{ch} attention channels do not split into {heads:?} heads"),
                    );
                }
                _ => {}
            }
        }
        if self.xf_heads == 0 || !self.xf_width.is_multiple_of(self.xf_heads) {
            return err(
                "xf_heads",
                format!(
                    "xf_width {} does not split into {} heads",
                    self.xf_width, self.xf_heads
                ),
            );
        }
        Ok(())
    }

    /// An upper estimate of the parameter count, from the options alone: 3×3 convolutions of the
    /// residual blocks at each level's width and the text transformer.
    pub fn approx_params(&self) -> u64 {
        let blocks = 3 * self.num_res_blocks as u64 + 3;
        let unet: u64 = self
            .channel_mult()
            .iter()
            .map(|m| {
                let w = (m * self.num_channels) as u64;
                blocks * 20 * w * w
            })
            .sum();
        let (xf, ctx) = (self.xf_width as u64, self.text_ctx as u64);
        unet + self.xf_layers as u64 * 13 * xf * xf + (self.n_vocab as u64 + ctx) * xf
    }

    /// The original options dictionary for this config (inverse of [`Self::from_glide_options`]).
    pub fn to_glide_options(&self) -> Value {
        let join = |v: &[usize]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let opt = |o: Option<usize>| o.map(|x| x as i64).unwrap_or(-1);
        let mut v = json!({
            "image_size": self.image_size,
            "num_channels": self.num_channels,
            "num_res_blocks": self.num_res_blocks,
            "channel_mult": join(&self.channel_mult),
            "num_heads": self.num_heads,
            "num_head_channels": opt(self.num_head_channels),
            "num_heads_upsample": opt(self.num_heads_upsample),
            "attention_resolutions": join(&self.attention_resolutions),
            "dropout": self.dropout,
            "text_ctx": self.text_ctx,
            "xf_width": self.xf_width,
            "xf_layers": self.xf_layers,
            "xf_heads": self.xf_heads,
            "xf_final_ln": self.xf_final_ln,
            "xf_padding": self.xf_padding,
            "n_vocab": self.n_vocab,
            "diffusion_steps": self.diffusion_steps,
            "noise_schedule": self.noise_schedule,
            "timestep_respacing": "",
            "use_scale_shift_norm": self.use_scale_shift_norm,
            "resblock_updown": self.resblock_updown,
            "use_fp16": false,
            "cache_text_emb": false,
            "inpaint": self.inpaint,
            "super_res": self.super_res,
        });
        // glide-rs's distillation options, only when used (original files stay as they were).
        if self.guidance_embed || self.predict_v || self.student_steps.is_some() {
            v["guidance_embed"] = json!(self.guidance_embed);
            v["predict_v"] = json!(self.predict_v);
            v["student_steps"] = json!(self.student_steps);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        for c in [
            GlideConfig::base(),
            GlideConfig::upsample_inpaint(),
            GlideConfig::tiny(),
            GlideConfig::tiny()
                .with_guidance_embed(true)
                .with_predict_v(true)
                .with_student_steps(Some(4)),
        ] {
            let back = GlideConfig::from_glide_options(&c.to_glide_options()).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn defaults_follow_the_original() {
        assert_eq!(GlideConfig::base().channel_mult(), [1, 2, 3, 4]);
        assert_eq!(GlideConfig::upsample().channel_mult(), [1, 1, 2, 2, 4, 4]);
        assert_eq!(GlideConfig::base().attention_ds(), [2, 4, 8]);
        assert_eq!(GlideConfig::base_inpaint().in_channels(), 7);
        assert_eq!(GlideConfig::upsample_inpaint().in_channels(), 10);
        assert!(GlideConfig::from_glide_options(&json!({"image_size": "x"})).is_err());
    }

    #[test]
    fn options_a_model_cannot_be_built_from_are_refused() {
        for c in [
            GlideConfig::base(),
            GlideConfig::upsample(),
            GlideConfig::tiny(),
        ] {
            c.validate().unwrap();
        }
        let heads = GlideConfig::tiny().with_num_head_channels(Some(48));
        assert_eq!(heads.validate().unwrap_err().key, "num_head_channels");
        let norm = GlideConfig::tiny().with_num_channels(48);
        assert_eq!(norm.validate().unwrap_err().key, "num_channels");
        let updown = GlideConfig::tiny().with_resblock_updown(false);
        assert_eq!(updown.validate().unwrap_err().key, "resblock_updown");
        let xf = GlideConfig::tiny().with_xf_heads(5);
        assert_eq!(xf.validate().unwrap_err().key, "xf_heads");
        let res = GlideConfig::tiny().with_attention_resolutions(vec![12]);
        assert_eq!(res.validate().unwrap_err().key, "attention_resolutions");
        let mut options = heads.to_glide_options();
        options["num_head_channels"] = json!(48);
        assert!(GlideConfig::from_glide_options(&options).is_err());
    }
}
