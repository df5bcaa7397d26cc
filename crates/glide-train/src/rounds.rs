//! Progressive distillation's rounds (Salimans & Ho 2022, Algorithm 2): a student of N steps
//! teaches one of N/2, which teaches one of N/4, … Each round is a training run of its own.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;

use crate::TrainError;
use crate::config::{DistillSpec, DistillStage, TrainConfig, TrainOptions};
use crate::trainer::{TrainOutcome, train};

/// Halves a `from`-step student (the guidance-distilled one: 64) down to `to` steps: round
/// N → N/2 trains `cfg` into `<cfg.out_dir>/steps-{N/2}` with the last round's EMA weights as
/// teacher and starting point. `each(n, outcome)` hears about every finished round. Returns the
/// last student's weights.
pub fn progressive_rounds<B: AutodiffBackend>(
    cfg: &TrainConfig,
    teacher: &Path,
    (from, to): (usize, usize),
    devices: &[B::Device],
    resume: bool,
    mut each: impl FnMut(usize, &TrainOutcome),
) -> Result<PathBuf, TrainError> {
    if !(to >= 1 && from > to && from.is_power_of_two() && to.is_power_of_two()) {
        return Err(TrainError::Distill(format!(
            "cannot halve {from} steps down to {to}: both must be powers of two with from > to \
             (e.g. --from 64 --to 4)"
        )));
    }
    let mut teacher = teacher.to_path_buf();
    let mut n = from;
    while n > to {
        let mut round = cfg.clone();
        round.out_dir = Path::new(&cfg.out_dir)
            .join(format!("steps-{}", n / 2))
            .to_string_lossy()
            .into_owned();
        round.distill = Some(DistillSpec {
            teacher: teacher.clone(),
            stage: DistillStage::Progressive { teacher_steps: n },
        });
        let options = TrainOptions {
            resume,
            init: Some(teacher.clone()),
            ..Default::default()
        };
        let outcome = train::<B>(round, devices.to_vec(), options).map_err(|e| {
            TrainError::Distill(format!("the round {n} → {} steps failed: {e}", n / 2))
        })?;
        each(n, &outcome);
        teacher = outcome.out_dir.join("ema.safetensors");
        n /= 2;
    }
    Ok(teacher)
}
