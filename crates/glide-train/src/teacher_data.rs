//! The teacher's own samples as its students' training images.
//!
//! Distillation regresses the student onto the teacher at noised images z_t. Salimans & Ho and
//! Meng et al. noise the training data; that is right when the teacher's samples look like its
//! data. A weak teacher (the bundled CPU-trained one draws saturated colour fields where its
//! emoji data is drawn on white) sends its sampling chains through z_t that noised data never
//! reaches, and a student trained on data alone has never been asked what the teacher does
//! there. Noising the teacher's own samples instead puts the training inputs where the chains go.

use burn::tensor::backend::Backend;
use glide_diffusion::Sampler;
use glide_diffusion::distill::MAX_W;
use glide_pipeline::{GenerateRequest, Text2Im};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::TrainError;
use crate::batch::{Example, mix};

/// One image drawn by the teacher.
#[derive(Debug, Clone)]
pub struct TeacherSample {
    pub caption: String,
    /// The guidance scale s it was drawn with.
    pub guidance: f64,
    /// `[3, S, S]`, in [-1, 1].
    pub image: Vec<f32>,
}

/// Draws `n` teacher samples in batches of `batch` (one caption each, drawn from `examples`),
/// with guided DDIM of `steps` steps and one s = 1 + U[0, 8] per batch, and hands each to
/// `each(index, sample)`. Deterministic given `seed`.
pub fn teacher_samples<B: Backend>(
    teacher: &Text2Im<B>,
    examples: &[Example],
    n: usize,
    steps: usize,
    batch: usize,
    seed: u64,
    mut each: impl FnMut(usize, TeacherSample),
) -> Result<(), TrainError> {
    check_teacher(teacher, examples, batch)?;
    let side = teacher.config.image_size;
    let px = 3 * side * side;
    for (k, done) in (0..n).step_by(batch).enumerate() {
        let b = batch.min(n - done);
        let (guidance, captions) = draw_captions(examples, b, mix(seed, k as u64));
        let prompts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let req = GenerateRequest {
            steps,
            sampler: Sampler::Ddim,
            guidance_scale: guidance,
            seed: mix(seed ^ 0x7eac_4e55, k as u64),
            ..Default::default()
        };
        let images: Vec<f32> = teacher
            .generate_each(&prompts, &req)?
            .run()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 samples");
        for (i, caption) in captions.into_iter().enumerate() {
            each(
                done + i,
                TeacherSample {
                    caption,
                    guidance,
                    image: images[i * px..(i + 1) * px].to_vec(),
                },
            );
        }
    }
    Ok(())
}

/// Errors shared by the ways of drawing from the teacher: no captions, a zero batch, a student.
pub(crate) fn check_teacher<B: Backend>(
    teacher: &Text2Im<B>,
    examples: &[Example],
    batch: usize,
) -> Result<(), TrainError> {
    if examples.is_empty() {
        return Err(TrainError::EmptyData);
    }
    if batch == 0 {
        return Err(TrainError::Distill(
            "the teacher samples need a batch of at least 1 image; pass --batch 16".into(),
        ));
    }
    if teacher.is_student() {
        return Err(TrainError::Distill(
            "the teacher is a distilled student; draw the samples with the ε model it came from"
                .into(),
        ));
    }
    Ok(())
}

/// One guidance scale s = 1 + U[0, 8] and `b` training captions (one alternative each), drawn
/// from `seed`.
pub(crate) fn draw_captions(examples: &[Example], b: usize, seed: u64) -> (f64, Vec<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let guidance = 1.0 + rng.random_range(0.0..=MAX_W);
    let captions = (0..b)
        .map(|_| {
            let ex = &examples[rng.random_range(0..examples.len())];
            match ex.captions.len() {
                0 => String::new(),
                m => ex.captions[rng.random_range(0..m)].clone(),
            }
        })
        .collect();
    (guidance, captions)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::backend::Flex;
    use glide_model::GlideConfig;
    use glide_model::weights::fixture_style_init;

    /// A training example with one caption (its pixels are never looked at).
    pub(crate) fn example(caption: &str) -> Example {
        Example {
            key: caption.into(),
            pixels: vec![0; 16 * 16 * 3],
            captions: vec![caption.into()],
            flip_ok: true,
            meta: serde_json::Value::Null,
        }
    }

    /// A tiny 16 px ε model with fixture-style weights.
    pub(crate) fn tiny_teacher() -> Text2Im<Flex> {
        let d = Default::default();
        let cfg = GlideConfig::tiny()
            .with_image_size(16)
            .with_channel_mult(vec![1, 2]);
        let model = fixture_style_init(cfg.init::<Flex>(&d), 3, false);
        Text2Im::new(model, cfg, d)
    }

    #[test]
    fn draws_n_images_with_training_captions_deterministically() {
        let teacher = tiny_teacher();
        let examples = [example("a red apple"), example("a fox")];
        let draw = || {
            let mut out = Vec::new();
            teacher_samples(&teacher, &examples, 5, 2, 2, 7, |i, s| out.push((i, s))).unwrap();
            out
        };
        let a = draw();
        assert_eq!(
            a.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        for (_, s) in &a {
            assert!(["a red apple", "a fox"].contains(&s.caption.as_str()));
            assert!((1.0..=9.0).contains(&s.guidance));
            assert_eq!(s.image.len(), 3 * 16 * 16);
            assert!(s.image.iter().all(|v| v.is_finite()));
        }
        // two images of one batch differ (different x_T), and a rerun is identical
        assert_ne!(a[0].1.image, a[1].1.image);
        let b = draw();
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.1.image == y.1.image));
    }
}
