//! Beta schedules (`get_named_beta_schedule`, `betas_for_alpha_bar`), computed in f64:
//! "Use float64 for accuracy" (guided-diffusion).

use serde::{Deserialize, Serialize};

use crate::DiffusionError;

/// The schedules GLIDE ships: `squaredcos_cap_v2` for the base model, `linear` for the upsampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSchedule {
    /// Ho et al. 2020: betas linear from 1e-4 to 0.02 (scaled to 1000 steps).
    Linear,
    /// Nichol & Dhariwal 2021: ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), betas capped at 0.999.
    SquaredcosCapV2,
}

impl NoiseSchedule {
    /// The original string name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::SquaredcosCapV2 => "squaredcos_cap_v2",
        }
    }
}

impl std::str::FromStr for NoiseSchedule {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linear" => Ok(Self::Linear),
            "squaredcos_cap_v2" => Ok(Self::SquaredcosCapV2),
            other => Err(DiffusionError::UnknownSchedule(other.to_string())),
        }
    }
}

/// `get_named_beta_schedule(schedule_name, num_diffusion_timesteps)`.
pub fn get_named_beta_schedule(
    schedule: NoiseSchedule,
    num_diffusion_timesteps: usize,
) -> Vec<f64> {
    match schedule {
        NoiseSchedule::Linear => {
            // Linear schedule from Ho et al, extended to work for any number of diffusion steps.
            let scale = 1000.0 / num_diffusion_timesteps as f64;
            linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps)
        }
        NoiseSchedule::SquaredcosCapV2 => betas_for_alpha_bar(
            num_diffusion_timesteps,
            |t| {
                ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            },
            0.999,
        ),
    }
}

/// Discretises ᾱ(t) on [0, 1] into betas: β_i = min(1 − ᾱ(t_{i+1})/ᾱ(t_i), max_beta).
pub fn betas_for_alpha_bar(n: usize, alpha_bar: impl Fn(f64) -> f64, max_beta: f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// `np.linspace(start, stop, n)`: `start + i·step`, with the last point exactly `stop`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    v[n - 1] = stop;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn betas_are_valid_probabilities() {
        for s in [NoiseSchedule::Linear, NoiseSchedule::SquaredcosCapV2] {
            let b = get_named_beta_schedule(s, 1000);
            assert_eq!(b.len(), 1000);
            assert!(b.iter().all(|&x| x > 0.0 && x <= 0.999), "{s:?}");
            // alphas_cumprod strictly decreasing
            let mut ac = 1.0;
            for &x in &b {
                let next = ac * (1.0 - x);
                assert!(next < ac);
                ac = next;
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in [NoiseSchedule::Linear, NoiseSchedule::SquaredcosCapV2] {
            assert_eq!(s.name().parse::<NoiseSchedule>().unwrap(), s);
        }
        assert!("cosine".parse::<NoiseSchedule>().is_err());
    }
}
