//! Which GLIDE model a state_dict holds, read from its keys and shapes alone.
//!
//! OpenAI's checkpoints carry no configuration: the original code rebuilds the model from
//! `model_and_diffusion_defaults()` and then loads the weights. [`recognize`] reads every option
//! that the shapes fix (channels, levels, residual blocks per level, attention levels, text
//! transformer, inpainting / super-resolution inputs) and takes the rest (image size, heads,
//! noise schedule) from the released preset of the same kind, so that the official files convert
//! with no options at all. Options the shapes cannot show can be given as `overrides`, which win.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::GlideConfig;

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Recognized {
    /// A GLIDE UNet with its text transformer; `preset` names the released model of the same
    /// kind (`base`, `upsample`, `base-inpaint`, `upsample-inpaint`).
    Unet {
        preset: &'static str,
        config: GlideConfig,
    },
    /// The noised CLIP's image tower (`clip_image_enc.pt`); `config` uses the original CLIP
    /// config names (`n_embd`, `patch_size`, …).
    ClipImage { config: Value },
    /// The noised CLIP's text tower (`clip_text_enc.pt`).
    ClipText { config: Value },
}

impl Recognized {
    /// The name printed in summaries and stored as `preset` metadata.
    pub fn preset_name(&self) -> &'static str {
        match self {
            Recognized::Unet { preset, .. } => preset,
            Recognized::ClipImage { .. } => "clip-image-encoder",
            Recognized::ClipText { .. } => "clip-text-encoder",
        }
    }
}

/// A state_dict that is none of GLIDE's models, or options that contradict it.
#[derive(Debug, thiserror::Error)]
pub enum RecognizeError {
    #[error(
        "the checkpoint's keys match none of GLIDE's models (base, upsample, base-inpaint, \
         upsample-inpaint, noised CLIP image or text encoder): {0}; convert the state_dict of one \
         of those models"
    )]
    Unknown(String),
    #[error(
        "the options read from the checkpoint do not make a model (its shapes do not show every \
         option): pass the model's options with --options (original names, e.g. \
         '{{\"image_size\": 64, \"num_head_channels\": 64}}')"
    )]
    Options(#[from] crate::config::OptionsError),
}

/// Tensor name → shape.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// Recognises the model in `shapes`; `overrides` (original option names, a JSON object) replace
/// inferred or preset values.
pub fn recognize(shapes: &Shapes, overrides: &Value) -> Result<Recognized, RecognizeError> {
    if shapes.contains_key("blocks.input.patch_proj") {
        return clip_image(shapes, overrides).map(|config| Recognized::ClipImage { config });
    }
    if shapes.contains_key("blocks.input.w_voc") {
        return clip_text(shapes, overrides).map(|config| Recognized::ClipText { config });
    }
    unet(shapes, overrides)
}

fn shape<'a>(shapes: &'a Shapes, key: &str) -> Result<&'a [usize], RecognizeError> {
    shapes
        .get(key)
        .map(Vec::as_slice)
        .ok_or_else(|| RecognizeError::Unknown(format!("it has no tensor {key:?}")))
}

/// Dimension `i` of tensor `key`.
fn dim(shapes: &Shapes, key: &str, i: usize) -> Result<usize, RecognizeError> {
    shape(shapes, key)?.get(i).copied().ok_or_else(|| {
        RecognizeError::Unknown(format!(
            "tensor {key:?} has fewer than {} dimensions",
            i + 1
        ))
    })
}

/// How many `{prefix}N.` indices exist (0, 1, … without gaps).
fn count(shapes: &Shapes, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            let p = format!("{prefix}{i}.");
            shapes
                .range(p.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&p))
        })
        .count()
}

fn has_prefix(shapes: &Shapes, prefix: &str) -> bool {
    shapes
        .range(prefix.to_string()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(prefix))
}

/// Replaces the keys of `base` by those of `overrides` (a JSON object, or null for none).
fn merge(mut base: Value, overrides: &Value) -> Value {
    if let (Some(b), Some(o)) = (base.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// Where the decoder upsamples: output block indices whose layers after the first include an
/// upsampling layer (a ResBlock when `resblock_updown`, else a convolution).
fn upsample_blocks(shapes: &Shapes, n_out: usize) -> Vec<(usize, bool)> {
    (0..n_out)
        .filter_map(|i| {
            (1..3).find_map(|j| {
                let p = format!("output_blocks.{i}.{j}.");
                if shapes.contains_key(&format!("{p}in_layers.0.weight")) {
                    Some((i, true))
                } else if shapes.contains_key(&format!("{p}conv.weight")) {
                    Some((i, false))
                } else {
                    None
                }
            })
        })
        .collect()
}

fn unet(shapes: &Shapes, overrides: &Value) -> Result<Recognized, RecognizeError> {
    let stem = "input_blocks.0.0.weight";
    let (num_channels, in_channels) = (dim(shapes, stem, 0)?, dim(shapes, stem, 1)?);
    let (inpaint, super_res, preset) = match in_channels {
        3 => (false, false, "base"),
        7 => (true, false, "base-inpaint"),
        6 => (false, true, "upsample"),
        10 => (true, true, "upsample-inpaint"),
        c => {
            return Err(RecognizeError::Unknown(format!(
                "its first convolution takes {c} channels (GLIDE's take 3, 6, 7 or 10)"
            )));
        }
    };
    let out_channels = dim(shapes, "out.2.weight", 0)?;
    if out_channels != 6 {
        return Err(RecognizeError::Unknown(format!(
            "it outputs {out_channels} channels (GLIDE's learned-variance models output 6)"
        )));
    }
    let n_out = count(shapes, "output_blocks.");
    let ups = upsample_blocks(shapes, n_out);
    let per_level = ups.first().map_or(n_out, |(i, _)| i + 1);
    if per_level == 0 || !n_out.is_multiple_of(per_level) {
        return Err(RecognizeError::Unknown(format!(
            "its {n_out} decoder blocks do not split into levels"
        )));
    }
    let levels = n_out / per_level;
    let mut channel_mult = vec![0; levels];
    let mut attention_levels = Vec::new();
    for j in 0..levels {
        let level = levels - 1 - j;
        let first = j * per_level;
        let ch = dim(
            shapes,
            &format!("output_blocks.{first}.0.out_layers.3.weight"),
            0,
        )?;
        channel_mult[level] = ch / num_channels;
        if shapes.contains_key(&format!("output_blocks.{first}.1.qkv.weight")) {
            attention_levels.push(level);
        }
    }
    let emb_out = dim(shapes, "input_blocks.1.0.emb_layers.1.weight", 0)?;
    let first_ch = dim(shapes, "input_blocks.1.0.out_layers.3.weight", 0)?;
    let released = GlideConfig::preset(preset).expect("the four presets exist");
    let image_size = overrides
        .get("image_size")
        .and_then(Value::as_u64)
        .map_or(released.image_size, |s| s as usize);
    // The original writes "" for the default multipliers of an image size; so do we.
    let default_mult = released.clone().with_image_size(image_size).channel_mult();
    let channel_mult = if channel_mult == default_mult {
        Vec::new()
    } else {
        channel_mult
    };
    let mut attention_resolutions: Vec<usize> =
        attention_levels.iter().map(|l| image_size >> l).collect();
    attention_resolutions.sort_unstable_by(|a, b| b.cmp(a));
    let inferred = released
        .with_num_channels(num_channels)
        .with_num_res_blocks(per_level - 1)
        .with_channel_mult(channel_mult)
        .with_attention_resolutions(attention_resolutions)
        .with_use_scale_shift_norm(emb_out == 2 * first_ch)
        .with_resblock_updown(ups.first().is_none_or(|(_, res)| *res))
        .with_text_ctx(dim(shapes, "positional_embedding", 0)?)
        .with_xf_width(dim(shapes, "positional_embedding", 1)?)
        .with_n_vocab(dim(shapes, "token_embedding.weight", 0)?)
        .with_xf_layers(count(shapes, "transformer.resblocks."))
        .with_xf_final_ln(shapes.contains_key("final_ln.weight"))
        .with_xf_padding(shapes.contains_key("padding_embedding"))
        .with_guidance_embed(has_prefix(shapes, "guidance_embed."))
        .with_inpaint(inpaint)
        .with_super_res(super_res)
        .with_dropout(0.0);
    let options = merge(inferred.to_glide_options(), overrides);
    let config = GlideConfig::from_glide_options(&options)?;
    Ok(Recognized::Unet { preset, config })
}

/// Heads of a tower `n_state` wide when the options do not say: the released towers use
/// 64-wide heads (`n_head_state_* = 64` in glide-text2im's clip/config.yaml).
fn default_heads(n_state: usize) -> usize {
    if n_state.is_multiple_of(64) {
        n_state / 64
    } else {
        1
    }
}

fn clip_image(shapes: &Shapes, overrides: &Value) -> Result<Value, RecognizeError> {
    // The towers' width (`n_state` = heads × head width) and the embedding they output (`n_embd`)
    // differ in the release (768 and 512 for the image tower).
    let patch = shape(shapes, "blocks.input.patch_proj")?;
    let (n_state, patch_size) = (patch[0], *patch.get(2).unwrap_or(&1));
    let n_pos = dim(shapes, "blocks.input.w_pos", 0)?;
    let side = ((n_pos.saturating_sub(1)) as f64).sqrt().round() as usize;
    if side * side + 1 != n_pos {
        return Err(RecognizeError::Unknown(format!(
            "its image position table has {n_pos} rows, not a square number of patches + 1"
        )));
    }
    let heads = default_heads(n_state);
    Ok(merge(
        json!({
            "image_size": side * patch_size,
            "patch_size": patch_size,
            "n_embd": dim(shapes, "blocks.output.f.w", 0)?,
            "n_xf_blocks_image": count(shapes, "blocks.block_"),
            "n_head_image": heads,
            "n_head_state_image": n_state / heads,
            "n_timesteps": dim(shapes, "blocks.input.w_t", 0)?,
        }),
        &only(overrides, "image"),
    ))
}

fn clip_text(shapes: &Shapes, overrides: &Value) -> Result<Value, RecognizeError> {
    let n_state = dim(shapes, "blocks.input.w_voc", 1)?;
    let heads = default_heads(n_state);
    Ok(merge(
        json!({
            "n_vocab": dim(shapes, "blocks.input.w_voc", 0)?,
            "max_text_len": dim(shapes, "blocks.input.w_pos", 0)?,
            "n_embd": dim(shapes, "blocks.output.f.w", 0)?,
            "n_xf_blocks_text": count(shapes, "blocks.block_"),
            "n_head_text": heads,
            "n_head_state_text": n_state / heads,
        }),
        &only(overrides, "text"),
    ))
}

/// The entries of a full noised-CLIP config (as in `noised_clip_tiny`'s metadata) that concern
/// one tower: shared keys and those ending in `_{tower}`.
fn only(overrides: &Value, tower: &str) -> Value {
    let other = if tower == "image" { "_text" } else { "_image" };
    let shared = [
        "n_embd",
        "patch_size",
        "image_size",
        "n_vocab",
        "max_text_len",
    ];
    let keep = |k: &str| {
        k.ends_with(&format!("_{tower}"))
            || shared.contains(&k)
            || (k == "n_timesteps" && tower == "image")
    };
    match overrides.as_object() {
        Some(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| keep(k) && !k.ends_with(other))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::StateDict;

    fn shapes_of(config: &GlideConfig) -> Shapes {
        type B = burn::backend::Flex;
        let model: crate::Text2ImUNet<B> = config.init(&Default::default());
        StateDict::from_module(&model)
            .tensors
            .into_iter()
            .map(|(k, v)| (k, v.shape.to_vec()))
            .collect()
    }

    #[test]
    fn the_shape_fixed_options_of_every_kind_are_read_back() {
        // Small versions of the four released kinds, with options that differ from the presets
        // wherever the shapes can tell.
        let tiny = GlideConfig::tiny().with_num_head_channels(Some(64));
        let cases = [
            (
                "base",
                tiny.clone()
                    .with_image_size(64)
                    .with_attention_resolutions(vec![32, 16]),
            ),
            (
                "base-inpaint",
                tiny.clone()
                    .with_image_size(64)
                    .with_attention_resolutions(vec![32])
                    .with_inpaint(true),
            ),
            (
                "upsample",
                tiny.clone()
                    .with_image_size(256)
                    .with_channel_mult(vec![1, 1, 2])
                    .with_num_res_blocks(2)
                    .with_attention_resolutions(vec![64])
                    .with_noise_schedule("linear".into())
                    .with_super_res(true),
            ),
            (
                "upsample-inpaint",
                tiny.clone()
                    .with_image_size(256)
                    .with_use_scale_shift_norm(false)
                    .with_attention_resolutions(vec![])
                    .with_noise_schedule("linear".into())
                    .with_super_res(true)
                    .with_inpaint(true),
            ),
        ];
        for (preset, config) in cases {
            let got = recognize(&shapes_of(&config), &json!({ "xf_heads": 4 })).unwrap();
            let want = Recognized::Unet {
                preset,
                config: config.clone().with_num_head_channels(Some(64)),
            };
            assert_eq!(got, want, "{preset}");
        }
    }

    #[test]
    fn the_released_presets_are_recognised_without_options() {
        // The released base at a quarter of its width and one text layer (same structure).
        let small = GlideConfig::base()
            .with_num_channels(64)
            .with_xf_width(64)
            .with_xf_layers(1)
            .with_dropout(0.0)
            .with_channel_mult(Vec::new());
        let Recognized::Unet { preset, config } =
            recognize(&shapes_of(&small), &Value::Null).unwrap()
        else {
            panic!("a UNet");
        };
        assert_eq!(preset, "base");
        assert_eq!(config, small);
    }

    #[test]
    fn foreign_state_dicts_are_refused_with_a_reason() {
        let mut shapes = Shapes::new();
        shapes.insert("fc.weight".into(), vec![10, 5]);
        let err = recognize(&shapes, &Value::Null).unwrap_err().to_string();
        assert!(err.contains("input_blocks.0.0.weight"), "{err}");
        shapes.insert("input_blocks.0.0.weight".into(), vec![32, 4, 3, 3]);
        let err = recognize(&shapes, &Value::Null).unwrap_err().to_string();
        assert!(err.contains("takes 4 channels"), "{err}");
    }
}
