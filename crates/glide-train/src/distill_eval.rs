//! How close distilled students come to their teacher: samples from the same x_T compared with
//! the teacher's many-step guided DDIM (PSNR and MSE), beside the teacher's own DDIM at the
//! students' step counts, with wall time per image. A measurement, not a test.

use burn::tensor::backend::Backend;
use glide_diffusion::Sampler;
use glide_pipeline::{GenerateRequest, Text2Im};

use crate::TrainError;

/// Images sampled for a list of captions, one each (seed = index).
pub struct Sampled {
    /// `[3, S, S]` in [-1, 1] per caption.
    pub images: Vec<Vec<f32>>,
    pub ms_per_image: f64,
    /// UNet evaluations per image.
    pub evaluations: usize,
}

/// Guided DDIM with `steps` steps for each caption, timed.
pub fn sample_captions<B: Backend>(
    pipe: &Text2Im<B>,
    captions: &[String],
    guidance: f64,
    steps: usize,
) -> Result<Sampled, TrainError> {
    let mut images = Vec::new();
    let mut evaluations = 0;
    let t0 = std::time::Instant::now();
    for (i, c) in captions.iter().enumerate() {
        let req = GenerateRequest {
            prompt: c.clone(),
            guidance_scale: guidance,
            steps,
            sampler: Sampler::Ddim,
            seed: i as u64,
            ..Default::default()
        };
        let chain = pipe.generate(&req)?;
        evaluations = chain.total() * pipe.evaluations_per_step(&req);
        images.push(chain.run().into_data().to_vec::<f32>().expect("f32"));
    }
    let ms_per_image = t0.elapsed().as_secs_f64() * 1e3 / captions.len().max(1) as f64;
    Ok(Sampled {
        images,
        ms_per_image,
        evaluations,
    })
}

/// Mean (PSNR in dB, MSE) of `images` against `reference`, image by image; values in [-1, 1]
/// (peak-to-peak 2).
pub fn psnr_mse(images: &[Vec<f32>], reference: &[Vec<f32>]) -> (f64, f64) {
    assert_eq!(images.len(), reference.len(), "one reference per image");
    let (mut mse, mut psnr) = (0.0, 0.0);
    for (x, r) in images.iter().zip(reference) {
        assert_eq!(x.len(), r.len(), "images of one size");
        let m = x
            .iter()
            .zip(r)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        mse += m;
        psnr += 10.0 * (4.0 / m.max(1e-12)).log10();
    }
    let n = images.len().max(1) as f64;
    (psnr / n, mse / n)
}

/// One way of sampling and how close it came to the reference.
pub struct CompareRow {
    pub name: String,
    pub sampled: Sampled,
    pub psnr: f64,
    pub mse: f64,
}

/// Each student at its own step count (or at `steps` for a student without one), beside the
/// teacher's guided DDIM at the same count, against the teacher's `reference_steps`-step DDIM.
/// Returns the reference and the rows.
pub fn compare_students<B: Backend>(
    teacher: &Text2Im<B>,
    students: &[(String, Text2Im<B>)],
    captions: &[String],
    guidance: f64,
    reference_steps: usize,
    steps: &[usize],
) -> Result<(Sampled, Vec<CompareRow>), TrainError> {
    if teacher.is_student() {
        return Err(TrainError::Distill(
            "the teacher must be the base model the students were distilled from".into(),
        ));
    }
    let reference = sample_captions(teacher, captions, guidance, reference_steps)?;
    let mut rows = Vec::new();
    for (name, student) in students {
        let counts = match student.config.student_steps {
            Some(own) => vec![own],
            None if steps.is_empty() => {
                return Err(TrainError::Distill(format!(
                    "{name} has no own step count; pass --steps (e.g. --steps 64 8 4) for a \
                     guidance-distilled student"
                )));
            }
            None => steps.to_vec(),
        };
        for n in counts {
            for (row, pipe) in [
                (format!("student, {n} steps ({name})"), student),
                (format!("teacher's guided DDIM, {n} steps"), teacher),
            ] {
                let sampled = sample_captions(pipe, captions, guidance, n)?;
                let (psnr, mse) = psnr_mse(&sampled.images, &reference.images);
                rows.push(CompareRow {
                    name: row,
                    sampled,
                    psnr,
                    mse,
                });
            }
        }
    }
    Ok((reference, rows))
}

#[cfg(test)]
mod tests {
    use super::psnr_mse;

    #[test]
    fn psnr_is_infinite_like_for_equal_images_and_6db_per_halving_of_the_error() {
        let r = vec![vec![0.0f32; 12]];
        let (p0, m0) = psnr_mse(&r, &r);
        assert_eq!(m0, 0.0);
        assert!(p0 >= 119.0, "{p0}");
        let a = vec![vec![0.2f32; 12]];
        let b = vec![vec![0.1f32; 12]];
        let (pa, ma) = psnr_mse(&a, &r);
        let (pb, _) = psnr_mse(&b, &r);
        assert!((ma - 0.04).abs() < 1e-6);
        assert!((pa - 10.0 * (4.0f64 / 0.04).log10()).abs() < 1e-4, "{pa}");
        assert!((pb - pa - 20.0 * 2f64.log10()).abs() < 1e-3, "{pa} {pb}");
    }
}
