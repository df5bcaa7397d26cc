//! Checkpoints: one safetensors file with the model, the EMA, the optimiser state, the step and the
//! run's config, written atomically (temp file + rename).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::TensorData;
use glide_model::weights::StateDict;

use crate::TrainError;

/// What a run needs to continue exactly where it stopped.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Optimiser steps completed.
    pub step: usize,
    /// Live weights, EMA weights (original names).
    pub model: StateDict,
    pub ema: StateDict,
    /// `optim.<path>.m|v` tensors and each parameter's Adam step count.
    pub optim: BTreeMap<String, TensorData>,
    pub optim_times: BTreeMap<String, usize>,
    /// The `TrainConfig` as JSON, the model's GLIDE options and its pruned vocabulary (JSON).
    pub config: String,
    pub options: String,
    pub vocab: Option<String>,
    /// Wall time spent training so far, in seconds.
    pub elapsed_s: f64,
}

pub use glide_data::shard::write_atomic;

/// The checkpoint of a run directory.
pub fn checkpoint_path(out: &Path) -> std::path::PathBuf {
    out.join("checkpoint.safetensors")
}

impl Checkpoint {
    /// The checkpoint of run directory `out` when resuming (`None` otherwise); resuming a run
    /// that has none is an error that says so.
    pub fn for_resume(out: &Path, resume: bool) -> Result<Option<Self>, TrainError> {
        if !resume {
            return Ok(None);
        }
        let path = checkpoint_path(out);
        if !path.exists() {
            return Err(TrainError::NoCheckpoint(path));
        }
        Self::load(&path).map(Some)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut all = StateDict::default();
        for (prefix, sd) in [("model.", &self.model), ("ema.", &self.ema)] {
            for (k, v) in &sd.tensors {
                all.tensors.insert(format!("{prefix}{k}"), v.clone());
            }
        }
        all.tensors
            .extend(self.optim.iter().map(|(k, v)| (k.clone(), v.clone())));
        let meta = &mut all.metadata;
        meta.insert("format".into(), "glide-rs-checkpoint".into());
        meta.insert("step".into(), self.step.to_string());
        meta.insert("config".into(), self.config.clone());
        meta.insert("options".into(), self.options.clone());
        meta.insert(
            "optim_times".into(),
            serde_json::to_string(&self.optim_times).expect("a map of numbers serialises"),
        );
        meta.insert("elapsed_s".into(), self.elapsed_s.to_string());
        if let Some(v) = &self.vocab {
            meta.insert("vocab".into(), v.clone());
        }
        all.to_safetensors(false)
    }

    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        Ok(write_atomic(path, &self.to_bytes())?)
    }

    /// Reads a checkpoint; a truncated or foreign file is reported by name.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let bad = |why: String| TrainError::BadCheckpoint(path.to_path_buf(), why);
        let bytes = std::fs::read(path).map_err(|e| TrainError::Io(path.to_path_buf(), e))?;
        let all = StateDict::from_safetensors(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = |k: &str| {
            all.metadata
                .get(k)
                .cloned()
                .ok_or_else(|| bad(format!("its metadata has no `{k}`")))
        };
        if meta("format")? != "glide-rs-checkpoint" {
            return Err(bad("it is not a glide-rs training checkpoint".into()));
        }
        let step = meta("step")?
            .parse()
            .map_err(|_| bad("`step` is not a number".into()))?;
        let optim_times = serde_json::from_str(&meta("optim_times")?)
            .map_err(|e| bad(format!("`optim_times` is not JSON: {e}")))?;
        let part = |prefix: &str| StateDict {
            tensors: all
                .tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect(),
            metadata: Default::default(),
        };
        Ok(Self {
            step,
            model: part("model."),
            ema: part("ema."),
            optim: all
                .tensors
                .iter()
                .filter(|(k, _)| k.starts_with("optim."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            optim_times,
            config: meta("config")?,
            options: meta("options")?,
            vocab: all.metadata.get("vocab").cloned(),
            elapsed_s: meta("elapsed_s")?.parse().unwrap_or(0.0),
        })
    }
}
