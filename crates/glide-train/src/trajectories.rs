//! The teacher's own sampling chains, stored, as regression targets for few-step students
//! (Luhman & Luhman 2021, "Knowledge Distillation in Iterative Generative Models for Improved
//! Sampling Speed": a student learns to take in one step what the teacher's chain takes in many).
//!
//! A trajectory is the teacher's classifier-free guided DDIM (η = 0) on the nested 64-point grid
//! (`glide_diffusion::distill`), from x_T to the sample, kept at every 8th grid position. A student
//! of N ≤ 8 steps is then trained so that one DDIM step from the teacher's z at position i lands on
//! the teacher's z at i − 64/N: no teacher forward during training, and the targets are the
//! teacher's chain itself rather than an earlier student's approximation of it.
//!
//! On disk a trajectory is three files beside each other: `NNNNN.png` (the sample, 8 bit, for
//! looking at and for the folder reader), `NNNNN.txt` (the caption) and `NNNNN.safetensors` (the
//! states in f32 and the guidance scale).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{TensorData, backend::Backend};
use glide_diffusion::distill::{GRID, student_diffusion};
use glide_diffusion::{NoiseSchedule, Sampler};
use glide_model::weights::StateDict;
use glide_pipeline::{GenerateRequest, Text2Im};

use crate::TrainError;
use crate::batch::{Example, mix};
use crate::teacher_data::{check_teacher, draw_captions};

/// Grid positions between two stored states: 64, 56, …, 8, 0 are kept (students of 8, 4, 2 and
/// 1 steps evaluate only there).
pub const STRIDE: usize = 8;

/// One guided DDIM chain of the teacher.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    pub caption: String,
    /// The guidance scale s it was drawn with.
    pub guidance: f64,
    /// z at grid positions 64, 56, …, 0 (`[3, S, S]` each; the last is the sample).
    pub states: Vec<Vec<f32>>,
}

impl Trajectory {
    /// The state at grid position `i` (a multiple of [`STRIDE`]).
    pub fn at(&self, i: usize) -> &[f32] {
        &self.states[(GRID - i) / STRIDE]
    }

    /// The states (`states`, `[positions, 3, S, S]`) and the scale (metadata) as safetensors.
    pub fn to_safetensors(&self, side: usize) -> Vec<u8> {
        let data: Vec<f32> = self.states.concat();
        let mut sd = StateDict::default();
        sd.tensors.insert(
            "states".into(),
            TensorData::new(data, [self.states.len(), 3, side, side]),
        );
        sd.metadata
            .insert("guidance".into(), format!("{}", self.guidance));
        sd.metadata.insert("caption".into(), self.caption.clone());
        sd.metadata.insert(
            "positions".into(),
            (0..=GRID / STRIDE)
                .map(|k| (GRID - k * STRIDE).to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        sd.to_safetensors(false)
    }

    /// Writes `NNNNN.png` (the sample), `NNNNN.txt` (the caption) and `NNNNN.safetensors` (the
    /// states) into `dir`.
    pub fn write(&self, dir: &Path, index: usize, side: usize) -> std::io::Result<()> {
        use glide_pipeline::image::{batch_to_rgb8, encode_png};
        let rgb = batch_to_rgb8(self.at(0), 1, side, side).remove(0);
        let text = [("guidance".to_string(), format!("{:.3}", self.guidance))];
        let png = dir.join(format!("{index:05}.png"));
        std::fs::write(&png, encode_png(&rgb, side, side, &text))?;
        std::fs::write(png.with_extension("txt"), &self.caption)?;
        std::fs::write(png.with_extension("safetensors"), self.to_safetensors(side))
    }

    /// Reads [`Self::to_safetensors`]'s output.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, String> {
        let sd = StateDict::from_safetensors(bytes).map_err(|e| e.to_string())?;
        let states = sd.tensors.get("states").ok_or("no `states` tensor")?;
        let shape = states.shape.to_vec();
        if shape.len() != 4 || shape[0] != GRID / STRIDE + 1 || shape[1] != 3 {
            return Err(format!(
                "`states` has shape {shape:?}, expected [{}, 3, S, S]",
                GRID / STRIDE + 1
            ));
        }
        let guidance: f64 = sd
            .metadata
            .get("guidance")
            .and_then(|g| g.parse().ok())
            .ok_or("no `guidance` in the metadata")?;
        let flat: Vec<f32> = states
            .clone()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| format!("{e:?}"))?;
        let px = flat.len() / shape[0];
        Ok(Self {
            caption: sd.metadata.get("caption").cloned().unwrap_or_default(),
            guidance,
            states: flat.chunks(px).map(<[f32]>::to_vec).collect(),
        })
    }
}

/// Draws `n` trajectories in batches of `batch` (one caption each from `examples`, one
/// s = 1 + U[0, 8] per batch, x_T from `NoiseRng`), handing each to `each(index, trajectory)`.
/// Deterministic given `seed`.
pub fn teacher_trajectories<B: Backend>(
    teacher: &Text2Im<B>,
    examples: &[Example],
    n: usize,
    batch: usize,
    seed: u64,
    mut each: impl FnMut(usize, Trajectory),
) -> Result<(), TrainError> {
    check_teacher(teacher, examples, batch)?;
    let side = teacher.config.image_size;
    let schedule: NoiseSchedule = teacher.config.noise_schedule.parse()?;
    let grid = student_diffusion(schedule, teacher.config.diffusion_steps, GRID)?;
    for (k, done) in (0..n).step_by(batch).enumerate() {
        let b = batch.min(n - done);
        let (guidance, captions) = draw_captions(examples, b, mix(seed ^ 0x7a1e, k as u64));
        let prompts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let req = GenerateRequest {
            sampler: Sampler::Ddim,
            guidance_scale: guidance,
            seed: mix(seed ^ 0x7a1f, k as u64),
            ..Default::default()
        };
        // The pipeline's guided DDIM on the grid: chain index j steps from position j + 1 to j.
        let mut chain = teacher.generate_each_on(&prompts, &req, grid.clone())?;
        let mut states = vec![chain.current().clone()];
        for step in chain.by_ref() {
            if step.t.is_multiple_of(STRIDE) {
                states.push(step.sample);
            }
        }
        let states: Vec<Vec<f32>> = states
            .into_iter()
            .map(|s| s.into_data().convert::<f32>().to_vec().expect("f32"))
            .collect();
        let px = 3 * side * side;
        for (r, caption) in captions.into_iter().enumerate() {
            each(
                done + r,
                Trajectory {
                    caption,
                    guidance,
                    states: states
                        .iter()
                        .map(|s| s[r * px..(r + 1) * px].to_vec())
                        .collect(),
                },
            );
        }
    }
    Ok(())
}

/// Every trajectory under a folder, by the key the folder reader gives its PNG (the path
/// relative to the folder without extension).
pub fn load_trajectories(dir: &Path) -> Result<HashMap<String, Trajectory>, TrainError> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| TrainError::Io(d.clone(), e))?;
        for entry in entries {
            let path = entry.map_err(|e| TrainError::Io(d.clone(), e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "safetensors") {
                let bytes = std::fs::read(&path).map_err(|e| TrainError::Io(path.clone(), e))?;
                let tr = Trajectory::from_safetensors(&bytes).map_err(|e| {
                    TrainError::Distill(format!(
                        "{} is not a teacher trajectory ({e}); draw them with `glide distill \
                         trajectories`",
                        path.display()
                    ))
                })?;
                let key = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .with_extension("")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(key, tr);
            }
        }
    }
    if out.is_empty() {
        return Err(TrainError::Distill(format!(
            "{} holds no trajectories; draw them with `glide distill trajectories --out {}`",
            dir.display(),
            dir.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teacher_data::tests::{example, tiny_teacher};

    #[test]
    fn chains_run_from_noise_to_the_sample_and_round_trip_through_files() {
        let teacher = tiny_teacher();
        let examples = [example("a red apple"), example("a fox")];
        let mut got = Vec::new();
        teacher_trajectories(&teacher, &examples, 3, 2, 5, |i, t| got.push((i, t))).unwrap();
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
        for (_, t) in &got {
            assert_eq!(t.states.len(), GRID / STRIDE + 1);
            assert!((1.0..=9.0).contains(&t.guidance));
            // x_T is standard normal, the sample lies in [-1, 1] (the last step lands on x̂₀)
            let std = (t.at(64).iter().map(|v| v * v).sum::<f32>() / 768.0).sqrt();
            assert!((0.8..1.2).contains(&std), "{std}");
            assert!(t.at(0).iter().all(|v| v.abs() <= 1.0 + 1e-5));
            assert_ne!(t.at(8), t.at(0));
        }
        let back = Trajectory::from_safetensors(&got[1].1.to_safetensors(16)).unwrap();
        assert_eq!(back, got[1].1);
        assert!(Trajectory::from_safetensors(b"not a file").is_err());
    }
}
