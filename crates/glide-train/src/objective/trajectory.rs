//! Trajectory fine-tuning: one DDIM step of a student of N steps, from a state of the teacher's
//! own stored guided chain (`crate::trajectories`), lands where that chain is 64/N grid points
//! later. The "teacher" is a folder of `glide distill trajectories`; each chain keeps its scale.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use glide_diffusion::GaussianDiffusion;
use glide_diffusion::distill::{GRID, grid_t, one_step_target};
use rand::Rng;

use crate::TrainError;
use crate::batch::{Batch, Example, TrainData};
use crate::distill::{StudentTargets, Targets, draws, to_vec};
use crate::trajectories::{Trajectory, load_trajectories};

/// A student of `steps` steps (1, 2, 4 or 8) learns the stored chains' steps.
pub struct TrajectoryFineTune<TB: Backend> {
    /// The stored chains by data key.
    pub chains: HashMap<String, Trajectory>,
    pub steps: usize,
    /// The student's unspaced chain.
    pub base: GaussianDiffusion,
    pub device: TB::Device,
}

impl<TB: Backend> TrajectoryFineTune<TB> {
    /// The chains in `folder`, checked against the run's data: every example has its chain,
    /// with the same caption, and no caption is dropped (`p_uncond` 0).
    pub fn load(
        folder: &Path,
        steps: usize,
        base: GaussianDiffusion,
        data: &TrainData,
        p_uncond: f64,
        device: &TB::Device,
    ) -> Result<Self, TrainError> {
        let objective = Self {
            chains: load_trajectories(folder)?,
            steps,
            base,
            device: device.clone(),
        };
        objective.check_chains(data.train.iter().chain(&data.heldout), p_uncond)?;
        Ok(objective)
    }

    fn check_chains<'a>(
        &self,
        examples: impl Iterator<Item = &'a Example>,
        p_uncond: f64,
    ) -> Result<(), TrainError> {
        if p_uncond != 0.0 {
            return Err(TrainError::Distill(
                "each stored chain was drawn for its caption, so a trajectory run cannot drop \
                 captions; set \"p_uncond\": 0 in the config"
                    .into(),
            ));
        }
        for ex in examples {
            let Some(chain) = self.chains.get(&ex.key) else {
                return Err(TrainError::Distill(format!(
                    "the image {} has no chain ({0}.safetensors); point data.folder at a folder \
                     written by `glide distill trajectories`",
                    ex.key
                )));
            };
            if ex.captions.first().map_or("", String::as_str) != chain.caption {
                return Err(TrainError::Distill(format!(
                    "the caption of {} differs from its chain's; redraw the folder with `glide \
                     distill trajectories`",
                    ex.key
                )));
            }
        }
        Ok(())
    }
}

impl<TB: Backend> StudentTargets for TrajectoryFineTune<TB> {
    fn base(&self) -> &GaussianDiffusion {
        &self.base
    }

    /// The targets of `batch[lo..hi]`: a state of each example's chain at one of the student's
    /// grid points, and the x̃ from which one DDIM step lands on the chain's state 64/N later.
    fn targets(&self, batch: &Batch, lo: usize, hi: usize) -> Targets {
        let n = hi - lo;
        let px = batch.x_start.len() / batch.len();
        let side = ((px / 3) as f64).sqrt() as usize;
        let (mut rngs, mut w) = draws(batch.step, lo, hi);
        let stride = GRID / self.steps;
        let nt = self.base.num_timesteps();
        let (mut z, mut z2) = (Vec::with_capacity(n * px), Vec::with_capacity(n * px));
        let (mut from, mut to) = (Vec::new(), Vec::new());
        for (r, rng) in (lo..hi).zip(&mut rngs) {
            let chain = &self.chains[&batch.keys[r]];
            let i = rng.random_range(1..=self.steps) * stride;
            z.extend_from_slice(chain.at(i));
            z2.extend_from_slice(chain.at(i - stride));
            from.push(i);
            to.push(i - stride);
            // the chain's own scale, not a drawn one
            w[r - lo] = (chain.guidance - 1.0) as f32;
        }
        let img = |v: Vec<f32>| {
            Tensor::<TB, 4>::from_data(TensorData::new(v, [n, 3, side, side]), &self.device)
        };
        let z = img(z);
        let target = one_step_target(&self.base, z.clone(), img(z2), &from, &to);
        Targets {
            z: to_vec(z),
            t: from.iter().map(|&i| grid_t(i, nt)).collect(),
            w,
            target: to_vec(target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectories::STRIDE;
    use burn::backend::Flex;
    use glide_diffusion::NoiseSchedule;
    use glide_diffusion::distill::ddim_between;

    #[test]
    fn trajectory_targets_take_one_ddim_step_to_the_chains_next_kept_state() {
        let device = Default::default();
        let base = GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
        let side = 4;
        let px = 3 * side * side;
        let chain = |seed: u64, guidance: f64| Trajectory {
            caption: format!("chain {seed}"),
            guidance,
            states: (0..=GRID / STRIDE)
                .map(|k| {
                    glide_diffusion::NoiseRng::new(seed * 100 + k as u64)
                        .randn_vec(px)
                        .into_iter()
                        .map(|v| v * 0.5)
                        .collect()
                })
                .collect(),
        };
        let chains: HashMap<String, Trajectory> = [("a", chain(1, 2.5)), ("b", chain(2, 7.0))]
            .into_iter()
            .map(|(k, c)| (k.to_string(), c))
            .collect();
        let teacher = TrajectoryFineTune::<Flex> {
            chains: chains.clone(),
            steps: 4,
            base: base.clone(),
            device,
        };
        let keys = ["a", "b", "a", "b", "b", "a"];
        let n = keys.len();
        let batch = Batch {
            step: 3,
            x_start: vec![0.0; n * px],
            tokens: vec![0; n * 2],
            mask: vec![true; n * 2],
            t: vec![0; n],
            noise: vec![0.0; n * px],
            captions: vec![String::new(); n],
            keys: keys.iter().map(|k| k.to_string()).collect(),
            keep: Vec::new(),
        };
        let tg = teacher.targets(&batch, 1, n);
        let m = n - 1;
        let positions: Vec<usize> =
            tg.t.iter()
                .map(|&t| (1..=GRID).find(|&i| grid_t(i, 1000) == t).unwrap())
                .collect();
        let to: Vec<usize> = positions.iter().map(|&i| i - 16).collect();
        assert!(positions.iter().all(|i| [16, 32, 48, 64].contains(i)));
        let img = |v: Vec<f32>| {
            Tensor::<Flex, 4>::from_data(TensorData::new(v, [m, 3, side, side]), &device)
        };
        let z = img(tg.z.clone());
        let landed: Vec<f32> = ddim_between(&base, z, img(tg.target.clone()), &positions, &to)
            .into_data()
            .to_vec()
            .unwrap();
        for r in 0..m {
            let c = &chains[keys[r + 1]];
            assert_eq!(&tg.z[r * px..(r + 1) * px], c.at(positions[r]));
            assert!((tg.w[r] - (c.guidance as f32 - 1.0)).abs() < 1e-6);
            let err = landed[r * px..(r + 1) * px]
                .iter()
                .zip(c.at(to[r]))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-3, "row {r}: {err}");
        }
    }
}
