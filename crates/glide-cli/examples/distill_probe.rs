//! Where a guidance-distilled student's chain departs from its teacher's: the measurements behind
//! the README's Distillation section.
//!
//! ```sh
//! cargo run --release -p glide-cli --example distill_probe -- [runs/distill/guidance/ema.safetensors]
//! ```
//!
//! 1. The teacher's guided x̂₀ = (z − σ·ε̂)/α at the noisiest grid positions, before clipping.
//! 2. How much the teacher's own 64-step guided DDIM chain (on the nested grid, s = 3) changes
//!    when its x̂₀ at the noisiest positions is replaced (PSNR against the unchanged chain).
//! 3. With a stage-1 student: the same chain with the student's x̂₀ at some positions.

use burn::backend::Flex;
use burn::tensor::Tensor;
use glide_diffusion::distill::{GRID, ddim_between, grid_t};
use glide_diffusion::guidance::classifier_free_guidance;
use glide_diffusion::{GaussianDiffusion, NoiseRng, NoiseSchedule};
use glide_model::{ImageCond, TextEmb};
use glide_pipeline::Text2Im;

type B = Flex;
const CAPTIONS: [&str; 4] = [
    "a red apple",
    "a fox",
    "pizza, noto style",
    "a rocket, twemoji style",
];
const SCALE: f64 = 3.0;
const SIDE: usize = 32;

/// Which x̂₀ a chain uses at grid position i.
#[derive(Clone, Copy)]
enum Source {
    Teacher,
    Zero,
    /// The teacher's x̂₀ averaged over the image, per channel.
    ColourMean,
    Student,
}

struct Probe {
    teacher: Text2Im<B>,
    student: Option<Text2Im<B>>,
    base: GaussianDiffusion,
}

/// A caption encoded once per chain: `[cond; uncond]` for the teacher, `[cond]` for the student.
struct Texts {
    teacher: TextEmb<B>,
    student: Option<TextEmb<B>>,
}

impl Probe {
    fn texts(&self, caption: &str) -> Texts {
        let (tokens, mask) = self.teacher.tokenize(&[caption, ""]);
        Texts {
            teacher: self.teacher.model.encode_text(tokens, mask),
            student: self.student.as_ref().map(|s| {
                let (tokens, mask) = s.tokenize(&[caption]);
                s.model.encode_text(tokens, mask)
            }),
        }
    }

    /// The teacher's guided prediction (ε or v) at `z`, timestep `t`.
    fn teacher_pred(&self, text: &TextEmb<B>, z: &Tensor<B, 4>, t: usize) -> Tensor<B, 4> {
        let d = z.device();
        let out = self.teacher.model.forward_with_text(
            Tensor::cat(vec![z.clone(), z.clone()], 0),
            Tensor::from_floats([t as f32, t as f32], &d),
            text,
            &ImageCond::none(),
        );
        classifier_free_guidance(out, SCALE, 3).narrow(1, 0, 3)
    }

    fn x0(&self, texts: &Texts, z: &Tensor<B, 4>, i: usize, source: Source) -> Tensor<B, 4> {
        let t = grid_t(i, self.base.num_timesteps());
        if let (Source::Student, Some(s), Some(text)) = (source, &self.student, &texts.student) {
            let d = z.device();
            let v = s.model.forward_with_guidance_weight(
                z.clone(),
                Tensor::from_floats([t as f32], &d),
                text,
                &ImageCond::none(),
                Some(Tensor::from_floats([(SCALE - 1.0) as f32], &d)),
            );
            return self
                .base
                .predict_xstart_from_v(z.clone(), &[t], v.narrow(1, 0, 3))
                .clamp(-1.0, 1.0);
        }
        let eps = self.teacher_pred(&texts.teacher, z, t);
        let x0 = self
            .base
            .predict_xstart(z.clone(), &[t], eps)
            .clamp(-1.0, 1.0);
        match source {
            Source::Zero => x0.zeros_like(),
            Source::ColourMean => x0.mean_dim(3).mean_dim(2).expand([1, 3, SIDE, SIDE]),
            _ => x0,
        }
    }

    /// The 64-step chain from x_T = NoiseRng(seed), with `pick(i)` choosing each x̂₀.
    fn chain(&self, caption: &str, seed: u64, pick: &dyn Fn(usize) -> Source) -> Vec<f32> {
        let texts = self.texts(caption);
        let mut z = NoiseRng::new(seed).randn::<B, 4>([1, 3, SIDE, SIDE], &Default::default());
        for i in (1..=GRID).rev() {
            let x0 = self.x0(&texts, &z, i, pick(i));
            z = ddim_between(&self.base, z, x0, &[i], &[i - 1]);
        }
        z.into_data().to_vec().expect("f32")
    }
}

fn psnr(a: &[f32], b: &[f32]) -> f64 {
    glide_train::distill_eval::psnr_mse(&[a.to_vec()], &[b.to_vec()]).0
}

fn corr(a: &[f32], b: &[f32]) -> f64 {
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (mut c, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        c += x * y;
        va += x * x;
        vb += y * y;
    }
    c / (va * vb).sqrt()
}

fn main() -> anyhow::Result<()> {
    let load = |p: &str| -> anyhow::Result<Text2Im<B>> {
        let bytes = std::fs::read(p)
            .map_err(|e| anyhow::anyhow!("cannot read {p} ({e}); check the path"))?;
        Ok(Text2Im::from_safetensors(&bytes, &Default::default())?)
    };
    let teacher = load("www/models/base.safetensors")?;
    let student = std::env::args().nth(1).map(|p| load(&p)).transpose()?;
    let schedule: NoiseSchedule = teacher.config.noise_schedule.parse()?;
    let probe = Probe {
        base: GaussianDiffusion::from_schedule(schedule, teacher.config.diffusion_steps)
            .with_model_mean_type(teacher.model_mean_type()),
        teacher,
        student,
    };

    println!("1. the teacher's guided x̂₀ before clipping (s = {SCALE}, 4 captions)");
    for i in [64, 63, 62, 60, 56] {
        let t = grid_t(i, probe.base.num_timesteps());
        let (mut abs, mut clipped, mut c) = (0.0, 0.0, 0.0);
        for (seed, caption) in CAPTIONS.iter().enumerate() {
            let z =
                NoiseRng::new(seed as u64).randn::<B, 4>([1, 3, SIDE, SIDE], &Default::default());
            let eps = probe.teacher_pred(&probe.texts(caption).teacher, &z, t);
            let x0: Vec<f32> = probe
                .base
                .predict_xstart(z.clone(), &[t], eps)
                .into_data()
                .to_vec()
                .expect("f32");
            let zv: Vec<f32> = z.into_data().to_vec().expect("f32");
            let n = x0.len() as f64;
            abs += x0.iter().map(|v| f64::from(v.abs())).sum::<f64>() / n;
            clipped += x0.iter().filter(|v| v.abs() > 1.0).count() as f64 / n;
            c += corr(&x0, &zv);
        }
        let k = CAPTIONS.len() as f64;
        println!(
            "   position {i:2} (t = {t:3}): mean |x̂₀| {:8.2}, clipped {:5.1}%, corr(x̂₀, z) {:5.2}",
            abs / k,
            100.0 * clipped / k,
            c / k
        );
    }

    let reference: Vec<Vec<f32>> = CAPTIONS
        .iter()
        .enumerate()
        .map(|(seed, c)| probe.chain(c, seed as u64, &|_| Source::Teacher))
        .collect();
    let score = |pick: &dyn Fn(usize) -> Source| -> f64 {
        CAPTIONS
            .iter()
            .enumerate()
            .map(|(seed, c)| psnr(&probe.chain(c, seed as u64, pick), &reference[seed]))
            .sum::<f64>()
            / CAPTIONS.len() as f64
    };
    println!("2. the teacher's 64-step chain with its x̂₀ replaced (PSNR vs the unchanged chain)");
    let cases: [(&str, &dyn Fn(usize) -> Source); 4] = [
        ("x̂₀ = 0 at t = 999 only", &|i| {
            if i == 64 {
                Source::Zero
            } else {
                Source::Teacher
            }
        }),
        ("its colour mean at t = 999 only", &|i| {
            if i == 64 {
                Source::ColourMean
            } else {
                Source::Teacher
            }
        }),
        ("its colour mean at t ≥ 984", &|i| {
            if i >= 63 {
                Source::ColourMean
            } else {
                Source::Teacher
            }
        }),
        ("x̂₀ = 0 at t ≥ 937", &|i| {
            if i >= 60 {
                Source::Zero
            } else {
                Source::Teacher
            }
        }),
    ];
    for (name, pick) in cases {
        println!("   {name:34} {:6.2} dB", score(pick));
    }
    if probe.student.is_some() {
        println!("3. the student's x̂₀ at some positions, the teacher's elsewhere");
        let cases: [(&str, &dyn Fn(usize) -> Source); 3] = [
            ("student everywhere", &|_| Source::Student),
            ("student at t ≥ 937 only", &|i| {
                if i >= 60 {
                    Source::Student
                } else {
                    Source::Teacher
                }
            }),
            ("student at t < 749 only", &|i| {
                if i < 48 {
                    Source::Student
                } else {
                    Source::Teacher
                }
            }),
        ];
        for (name, pick) in cases {
            println!("   {name:34} {:6.2} dB", score(pick));
        }
    }
    Ok(())
}
