//! Tests of [`super::Text2Im`]: batching, determinism, guidance and students.

use super::*;
use burn::backend::Flex;
use glide_model::weights::fixture_style_init;

fn tiny() -> Text2Im<Flex> {
    let d = Default::default();
    let cfg = GlideConfig::tiny()
        .with_image_size(16)
        .with_channel_mult(vec![1, 2]);
    let model = fixture_style_init(cfg.init::<Flex>(&d), 3, false);
    Text2Im::new(model, cfg, d)
}

fn sample(p: &Text2Im<Flex>, req: &GenerateRequest) -> Vec<f32> {
    p.generate(req).unwrap().run().into_data().to_vec().unwrap()
}

#[test]
fn generate_each_samples_one_image_per_prompt_in_one_batch() {
    let p = tiny();
    let req = GenerateRequest {
        steps: 3,
        seed: 9,
        sampler: Sampler::Ddim,
        ..Default::default()
    };
    let both: Vec<f32> = p
        .generate_each(&["a red apple", "a blue car"], &req)
        .unwrap()
        .run()
        .into_data()
        .to_vec()
        .unwrap();
    let n = both.len() / 2;
    // DDIM (η = 0) draws only x_T; the first image's x_T equals a batch of one.
    let alone = sample(
        &p,
        &GenerateRequest {
            prompt: "a red apple".into(),
            ..req.clone()
        },
    );
    assert_eq!(alone.len(), n);
    let diff = alone
        .iter()
        .zip(&both[..n])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "{diff}");
    assert_ne!(both[..n], both[n..]);
    assert!(p.generate_each(&[], &req).is_err());
}

#[test]
fn yields_every_step_and_is_deterministic() {
    let p = tiny();
    let req = GenerateRequest {
        prompt: "a red apple".into(),
        steps: 4,
        batch_size: 2,
        seed: 5,
        ..Default::default()
    };
    let steps: Vec<_> = p.generate(&req).unwrap().map(|s| (s.step, s.t)).collect();
    assert_eq!(steps, [(1, 3), (2, 2), (3, 1), (4, 0)]);
    let a = sample(&p, &req);
    assert_eq!(a, sample(&p, &req));
    assert_ne!(
        a,
        sample(
            &p,
            &GenerateRequest {
                seed: 6,
                ..req.clone()
            }
        )
    );
    assert_ne!(
        a,
        sample(
            &p,
            &GenerateRequest {
                prompt: "a blue car".into(),
                ..req.clone()
            }
        )
    );
    assert_ne!(
        a,
        sample(
            &p,
            &GenerateRequest {
                negative: "red".into(),
                ..req.clone()
            }
        )
    );
    assert!(a.iter().all(|v| v.is_finite()));
}

#[test]
fn guidance_one_equals_the_conditional_branch_of_a_guided_batch() {
    // s = 1 skips the unconditional half; the result must equal the full guided batch at s = 1.
    let p = tiny();
    let req = GenerateRequest {
        prompt: "a cat".into(),
        guidance_scale: 1.0,
        steps: 3,
        sampler: Sampler::Ddim,
        ..Default::default()
    };
    let fast = sample(&p, &req);
    let diffusion = p.diffusion(&req).unwrap();
    let (tokens, mask) = p.tokenize(&["a cat", ""]);
    let text = p.model.encode_text(tokens, mask);
    let d = *p.device();
    let model = |x: Tensor<Flex, 4>, t: &[usize]| {
        let ts: Vec<f32> = [t, t].concat().iter().map(|&v| v as f32).collect();
        let out = p.model.forward_with_text(
            Tensor::cat(vec![x.clone(), x], 0),
            Tensor::from_floats(ts.as_slice(), &d),
            &text,
            &ImageCond::none(),
        );
        classifier_free_guidance(out, 1.0, 3)
    };
    let mut rng = NoiseRng::new(req.seed);
    let x_t = rng.randn::<Flex, 4>([1, 3, 16, 16], &d);
    let full: Vec<f32> = Sampler::Ddim
        .sample(diffusion, model, x_t, rng, SampleOptions::default())
        .run()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(fast.len(), full.len());
    let max = fast
        .iter()
        .zip(&full)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max < 1e-4, "{max}");
}

#[test]
fn a_student_runs_its_own_steps_with_one_evaluation_each_and_guidance_as_an_input() {
    let d = Default::default();
    let cfg = GlideConfig::tiny()
        .with_image_size(16)
        .with_channel_mult(vec![1, 2])
        .with_guidance_embed(true)
        .with_predict_v(true)
        .with_student_steps(Some(4));
    let model = fixture_style_init(cfg.init::<Flex>(&d), 3, false);
    let p = Text2Im::new(model, cfg, d);
    let req = GenerateRequest {
        prompt: "a red apple".into(),
        steps: 50,
        sampler: Sampler::Ddpm,
        guidance_scale: 3.0,
        ..Default::default()
    };
    assert_eq!(p.evaluations_per_step(&req), 1);
    let diffusion = p.diffusion(&req).unwrap();
    assert_eq!(diffusion.timestep_map, [250, 500, 749, 999]);
    assert_eq!(p.generate(&req).unwrap().count(), 4);
    let a = sample(&p, &req);
    let b = sample(
        &p,
        &GenerateRequest {
            guidance_scale: 5.0,
            ..req.clone()
        },
    );
    assert_ne!(a, b, "the guidance scale is not used");
    assert!(a.iter().all(|v| v.is_finite()));
    assert!(matches!(
        p.generate(&GenerateRequest {
            guidance_scale: 12.0,
            ..req
        })
        .err(),
        Some(PipelineError::StudentGuidance(_))
    ));
}

#[test]
fn bad_requests_are_errors() {
    let p = tiny();
    let ok = GenerateRequest {
        steps: 2,
        ..Default::default()
    };
    assert!(
        p.generate(&GenerateRequest {
            steps: 0,
            ..ok.clone()
        })
        .is_err()
    );
    assert!(
        p.generate(&GenerateRequest {
            batch_size: 0,
            ..ok.clone()
        })
        .is_err()
    );
    assert!(
        p.generate(&GenerateRequest {
            guidance_scale: f64::NAN,
            ..ok.clone()
        })
        .is_err()
    );
    assert!(
        p.generate(&GenerateRequest {
            respacing: Some("x".into()),
            ..ok
        })
        .is_err()
    );
}
