//! Weights files in and out: one safetensors file or a sharded model (`glide_model::shards`),
//! `glide export`, and the pipeline every sampling command loads.

use std::path::Path;

use anyhow::{Context, Result};
use glide_model::shards::{INDEX_SUFFIX, read_weights_file, write_shards};
use glide_model::weights::StateDict;
use glide_pipeline::Text2Im;

use crate::{B, device, write};

/// Reads weights (a safetensors file or a shard index) into a text-to-image pipeline.
pub fn load_pipeline(path: &Path) -> Result<Text2Im<B>> {
    let state = read_weights_file(path)
        .with_context(|| format!("cannot read the weights {}", path.display()))?;
    Text2Im::<B>::from_state_dict(state, &device::<B>())
        .with_context(|| format!("cannot use the weights {}", path.display()))
}

/// Writes `state` to `out` (floats as f16 when `half`): one file, or with `shard_mb` an index at
/// `out` and shards of at most that many MB beside it. Returns the bytes written.
pub fn write_weights(
    out: &Path,
    state: &StateDict,
    half: bool,
    shard_mb: Option<u64>,
) -> Result<u64> {
    let Some(mb) = shard_mb else {
        let bytes = state.to_safetensors(half);
        write(out, &bytes)?;
        return Ok(bytes.len() as u64);
    };
    anyhow::ensure!(mb > 0, "--shard-mb must be at least 1 (browsers handle 64)");
    anyhow::ensure!(
        out.to_string_lossy().ends_with(INDEX_SUFFIX),
        "with --shard-mb, --out names the index: end it in {INDEX_SUFFIX}, e.g. base{INDEX_SUFFIX}"
    );
    let mut io_error = None;
    let index = write_shards(state, out, half, mb * 1_000_000, |p, b| {
        write(p, b).map_err(|e| {
            let text = format!("{e:#}");
            io_error = Some(e);
            glide_model::WeightsError::Shards(text)
        })
    });
    if let Some(e) = io_error {
        return Err(e);
    }
    let index = index?;
    eprintln!(
        "wrote {} shards of at most {mb} MB and their index {}",
        index.shards.len(),
        out.display()
    );
    Ok(index.download_bytes())
}

/// `glide export`: weights re-stored (f16 or f32, one file or shards) with metadata added.
pub fn export(
    input: &Path,
    out: &Path,
    half: bool,
    shard_mb: Option<u64>,
    meta: &[String],
) -> Result<()> {
    let mut state = read_weights_file(input)
        .with_context(|| format!("cannot read the weights {}", input.display()))?;
    for m in meta {
        let (k, v) = m
            .split_once('=')
            .with_context(|| format!("--meta {m:?} is not KEY=VALUE or KEY=@FILE"))?;
        let v = match v.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {file} for --meta {k}"))?,
            None => v.to_string(),
        };
        state.metadata.insert(k.to_string(), v);
    }
    // Refuse files the pipeline could not load later (a CLIP of `glide train-clip` or a UNet).
    if state.metadata.get("format").map(String::as_str) == Some("glide-rs-clip") {
        glide_model::clip::NoisedClip::<B>::from_states(
            std::slice::from_ref(&state),
            &device::<B>(),
        )
        .with_context(|| format!("cannot use the CLIP {}", input.display()))?;
    } else {
        Text2Im::<B>::from_state_dict(&state, &device::<B>())
            .with_context(|| format!("cannot use the weights {}", input.display()))?;
    }
    let written = write_weights(out, &state, half, shard_mb)?;
    eprintln!(
        "wrote {} ({:.1} MB, {})",
        out.display(),
        written as f64 / 1e6,
        if half { "f16" } else { "f32" }
    );
    Ok(())
}
