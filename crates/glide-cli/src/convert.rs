//! `glide convert`: OpenAI's PyTorch checkpoints to safetensors (see `glide_model::pytorch`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use glide_model::pytorch::convert_pytorch;
use glide_model::recognize::Recognized;
use glide_model::weights::StateDict;
use serde_json::Value;

use crate::weights_io::write_weights;
use crate::{B, device};

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// A PyTorch checkpoint (torch.save of a state_dict), e.g. base.pt.
    #[arg(long)]
    pub from: PathBuf,
    /// The safetensors file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Storage of the written floats.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    pub dtype: String,
    /// Write shards of at most this many MB and an index (--out must end in
    /// .safetensors.index.json), as the web page downloads the released models.
    #[arg(long)]
    pub shard_mb: Option<u64>,
    /// Options the shapes cannot show, as JSON with the original names (they win over the
    /// released preset's), e.g. '{"image_size": 64, "num_head_channels": 64}'.
    #[arg(long)]
    pub options: Option<String>,
    /// Take those options from the `options` (or noised CLIP `config`) metadata of a
    /// safetensors file, e.g. a reference fixture.
    #[arg(long, conflicts_with = "options")]
    pub options_from: Option<PathBuf>,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let overrides = overrides(&a)?;
    let conversion = convert_pytorch::<B>(&a.from, &overrides, &device::<B>())?;
    let written = write_weights(&a.out, &conversion.state, a.dtype == "f16", a.shard_mb)?;
    let what = match &conversion.recognized {
        Recognized::Unet { preset, config } => format!(
            "{preset} ({} px, {} channels)",
            config.image_size, config.num_channels
        ),
        other => other.preset_name().to_string(),
    };
    let from: Vec<_> = conversion.source_dtypes.iter().cloned().collect();
    println!(
        "{}: {what}, {} parameters, {} → {} ({:.1} MB): {}",
        a.from.display(),
        group_thousands(conversion.num_params),
        from.join("+"),
        a.dtype,
        written as f64 / 1e6,
        a.out.display()
    );
    Ok(())
}

fn overrides(a: &ConvertArgs) -> Result<Value> {
    if let Some(text) = &a.options {
        let v: Value = serde_json::from_str(text).with_context(|| {
            format!("--options {text:?} is not JSON; write e.g. '{{\"image_size\": 64}}'")
        })?;
        if !v.is_object() {
            bail!("--options must be a JSON object of original option names");
        }
        return Ok(v);
    }
    let Some(path) = &a.options_from else {
        return Ok(Value::Null);
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {}; check the path", path.display()))?;
    let state = StateDict::from_safetensors(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let text = state
        .metadata
        .get("options")
        .or_else(|| state.metadata.get("config"))
        .with_context(|| {
            format!(
                "{} has no `options` or `config` metadata to take options from",
                path.display()
            )
        })?;
    serde_json::from_str(text)
        .with_context(|| format!("the options metadata of {} is not JSON", path.display()))
}

fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
