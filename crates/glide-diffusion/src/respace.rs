//! `space_timesteps` from `respace.py`: which of the original steps a shorter chain keeps.

use std::collections::BTreeSet;

use crate::DiffusionError;

/// The original timesteps to keep when sampling with fewer steps.
///
/// `section_counts` is a step count (`"100"`), a comma list of counts for equal sections of the
/// original chain (`"10,15,20"`), `"ddimN"` (the DDIM paper's fixed integer stride) or `"fast27"`
/// (GLIDE's 27-step schedule that avoids the noisiest step).
pub fn space_timesteps(
    num_timesteps: usize,
    section_counts: &str,
) -> Result<BTreeSet<usize>, DiffusionError> {
    let s = section_counts.trim();
    if let Some(n) = s.strip_prefix("ddim") {
        let desired: usize = n
            .parse()
            .map_err(|_| DiffusionError::BadRespacing(s.to_string()))?;
        for i in 1..num_timesteps {
            if (0..num_timesteps).step_by(i).len() == desired {
                return Ok((0..num_timesteps).step_by(i).collect());
            }
        }
        return Err(DiffusionError::NoDdimStride(desired));
    }
    if s == "fast27" {
        let mut steps = space_timesteps(num_timesteps, "10,10,3,2,2")?;
        // Help reduce DDIM artifacts from noisiest timesteps.
        steps.remove(&(num_timesteps - 1));
        steps.insert(num_timesteps - 3);
        return Ok(steps);
    }
    let counts: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| DiffusionError::BadRespacing(s.to_string()))?;
    if counts.is_empty() || counts.contains(&0) {
        return Err(DiffusionError::BadRespacing(s.to_string()));
    }
    let size_per = num_timesteps / counts.len();
    let extra = num_timesteps % counts.len();
    let mut start_idx = 0;
    let mut all = BTreeSet::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(DiffusionError::SectionTooLarge {
                total: num_timesteps,
                wanted: counts.clone(),
            });
        }
        let frac_stride = if count <= 1 {
            1.0
        } else {
            (size - 1) as f64 / (count - 1) as f64
        };
        let mut cur_idx = 0.0f64;
        for _ in 0..count {
            // Python's round() rounds halves to even.
            all.insert(start_idx + cur_idx.round_ties_even() as usize);
            cur_idx += frac_stride;
        }
        start_idx += size;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bounds() {
        for s in [
            "1", "4", "50", "100", "250", "1000", "27", "fast27", "ddim50", "10,15,20",
        ] {
            let steps = space_timesteps(1000, s).unwrap();
            assert!(steps.iter().all(|&t| t < 1000), "{s}");
            assert!(steps.contains(&0), "{s}");
        }
        assert_eq!(space_timesteps(1000, "100").unwrap().len(), 100);
        assert_eq!(space_timesteps(1000, "1000").unwrap().len(), 1000);
    }

    #[test]
    fn bad_strings_are_errors() {
        assert!(space_timesteps(1000, "1001").is_err());
        assert!(space_timesteps(1000, "abc").is_err());
        assert!(space_timesteps(1000, "0").is_err());
        assert!(space_timesteps(1000, "ddim999").is_err());
    }
}
