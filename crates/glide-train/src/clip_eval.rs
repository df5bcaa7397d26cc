//! The paper's automatic metrics (GLIDE §4.1, Fig. 6 and 7), measured with an evaluation CLIP:
//! **CLIP score** (100 × the mean cosine similarity of a sample's and its caption's embeddings),
//! **CLIP R-precision** (how often a sample's own caption is the most similar among it and 99
//! others) and the **Fréchet distance** between the embeddings of real and generated images (FID's
//! formula on CLIP embeddings). The evaluation CLIP must not be the one that guides: the paper
//! warns that scoring with the guiding CLIP flatters CLIP guidance.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use glide_diffusion::Sampler;
use glide_model::clip::NoisedClip;
use glide_pipeline::{GenerateRequest, Text2Im};
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use crate::TrainError;
use crate::batch::{Example, pixels_to_chw};

/// Captions (and distractors) per R-precision question: the true one and 99 others.
pub const R_PRECISION_CANDIDATES: usize = 100;

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// 100 × the mean cosine similarity of `images[i]` and `texts[i]`.
pub fn clip_score(images: &[Vec<f64>], texts: &[Vec<f64>]) -> f64 {
    assert_eq!(images.len(), texts.len(), "one caption per image");
    let sum: f64 = images.iter().zip(texts).map(|(i, t)| cosine(i, t)).sum();
    100.0 * sum / images.len().max(1) as f64
}

/// The share of images whose own caption (`texts[i]`) is more similar to them than each of
/// `candidates − 1` other captions of the set (drawn without replacement, seeded; all others when
/// the set is smaller; copies of its own caption do not count). Chance is 1 / candidates.
pub fn r_precision(images: &[Vec<f64>], texts: &[Vec<f64>], candidates: usize, seed: u64) -> f64 {
    assert_eq!(images.len(), texts.len(), "one caption per image");
    let n = texts.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let others = candidates.saturating_sub(1).min(n.saturating_sub(1));
    let hits = (0..n)
        .filter(|&i| {
            let own = cosine(&images[i], &texts[i]);
            sample(&mut rng, n - 1, others)
                .into_iter()
                .map(|j| if j >= i { j + 1 } else { j })
                // The same caption elsewhere in the set (another style of the emoji) is no
                // distractor.
                .filter(|&j| texts[j] != texts[i])
                .all(|j| cosine(&images[i], &texts[j]) < own)
        })
        .count();
    hits as f64 / n.max(1) as f64
}

/// Mean and (unbiased) covariance of the rows.
fn moments(rows: &[Vec<f64>]) -> (DVector<f64>, DMatrix<f64>) {
    let (n, d) = (rows.len(), rows.first().map_or(0, Vec::len));
    let x = DMatrix::from_fn(n, d, |i, j| rows[i][j]);
    let mean = x.row_mean().transpose();
    let centred = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
    let cov = centred.transpose() * &centred / (n.max(2) - 1) as f64;
    (mean, cov)
}

/// The square root of a symmetric positive semi-definite matrix (negative eigenvalues from
/// rounding are taken as 0).
fn sqrt_psd(m: DMatrix<f64>) -> DMatrix<f64> {
    let sym = (&m + m.transpose()) * 0.5;
    let eig = sym.symmetric_eigen();
    let roots = eig.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// The Fréchet distance between Gaussians fitted to two sets of embeddings (FID's formula):
/// ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½).
pub fn frechet_distance(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let (mu_a, cov_a) = moments(a);
    let (mu_b, cov_b) = moments(b);
    let root_a = sqrt_psd(cov_a.clone());
    let cross = sqrt_psd(&root_a * &cov_b * &root_a);
    let d = (mu_a - mu_b).norm_squared() + cov_a.trace() + cov_b.trace() - 2.0 * cross.trace();
    d.max(0.0)
}

/// Normalised embeddings `[n, n_embd]` as rows.
fn rows<B: burn::tensor::backend::Backend>(t: Tensor<B, 2>) -> Vec<Vec<f64>> {
    let [_, d] = t.dims();
    let flat = t.into_data().convert::<f64>().to_vec::<f64>().expect("f64");
    flat.chunks(d).map(<[f64]>::to_vec).collect()
}

/// Image embeddings at t = 0 of images `[n, 3, S, S]` in [-1, 1] given as flat CHW rows.
pub fn image_embeddings<A: AutodiffBackend>(
    clip: &NoisedClip<A>,
    images: &[f32],
    n: usize,
    device: &A::Device,
) -> Result<Vec<Vec<f64>>, TrainError> {
    let s = clip.config.image_size;
    if images.len() != n * 3 * s * s {
        return Err(TrainError::ClipSize(
            s,
            (images.len() / (3 * n.max(1))).isqrt(),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for chunk in images.chunks(32 * 3 * s * s) {
        let b = chunk.len() / (3 * s * s);
        let x = Tensor::<A, 4>::from_data(TensorData::new(chunk.to_vec(), [b, 3, s, s]), device);
        out.extend(rows(clip.image_embeddings(x, &vec![0; b]).inner()));
    }
    Ok(out)
}

/// `n` captions over `examples` (each example's captions in turn, cycling through the
/// examples), their text embeddings, and every example's image embedding (the real set).
pub fn eval_set<A: AutodiffBackend>(
    pipe: &Text2Im<A::InnerBackend>,
    eval_clip: &NoisedClip<A>,
    examples: &[Example],
    n: usize,
) -> Result<EvalSet, TrainError> {
    let size = pipe.config.image_size;
    if examples.is_empty() {
        return Err(TrainError::EmptyData);
    }
    let captions: Vec<String> = (0..n)
        .map(|i| {
            let ex = &examples[i % examples.len()];
            let k = (i / examples.len()) % ex.captions.len().max(1);
            ex.captions.get(k).cloned().unwrap_or_default()
        })
        .collect();
    let mut text = Vec::with_capacity(n);
    for c in &captions {
        text.extend(rows(pipe.clip_text_embedding(eval_clip, c, 1)?));
    }
    let mut pixels = Vec::with_capacity(examples.len() * 3 * size * size);
    for ex in examples {
        pixels_to_chw(&ex.pixels, size, false, &mut pixels);
    }
    let real = image_embeddings(eval_clip, &pixels, examples.len(), pipe.device())?;
    Ok(EvalSet {
        captions,
        text,
        real,
    })
}

/// How the samples of one point are guided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guidance {
    /// Classifier-free guidance at this scale.
    ClassifierFree(f64),
    /// CLIP guidance at this scale with the guiding CLIP (no classifier-free guidance).
    Clip(f64),
}

/// One point of a trade-off curve.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    pub guidance: Guidance,
    pub clip_score: f64,
    pub r_precision: f64,
    pub frechet: f64,
    pub n: usize,
}

/// What a point is measured against: the captions, their text embeddings and the real images'
/// embeddings under the evaluation CLIP.
pub struct EvalSet {
    pub captions: Vec<String>,
    pub text: Vec<Vec<f64>>,
    pub real: Vec<Vec<f64>>,
}

impl EvalSet {
    /// CLIP score and R-precision of the real held-out images under their own captions (caption
    /// `i` belongs to image `i mod n`): what the evaluation CLIP can tell apart at best.
    pub fn real_scores(&self) -> (f64, f64) {
        let n = self.real.len().max(1);
        let images: Vec<Vec<f64>> = (0..self.captions.len())
            .map(|i| self.real[i % n].clone())
            .collect();
        (
            clip_score(&images, &self.text),
            r_precision(&images, &self.text, R_PRECISION_CANDIDATES, 0),
        )
    }
}

/// Sampling settings shared by every point.
#[derive(Debug, Clone)]
pub struct EvalSampling {
    pub sampler: Sampler,
    pub steps: usize,
    pub seed: u64,
}

/// One sample per caption of `set`, guided as `guidance` says (`guide`: the guiding CLIP for
/// [`Guidance::Clip`]), scored by `eval_clip`.
pub fn evaluate_point<A: AutodiffBackend>(
    pipe: &Text2Im<A::InnerBackend>,
    eval_clip: &NoisedClip<A>,
    guide: Option<&NoisedClip<A>>,
    set: &EvalSet,
    guidance: Guidance,
    sampling: &EvalSampling,
) -> Result<EvalPoint, TrainError> {
    let s = pipe.config.image_size;
    let mut samples = Vec::with_capacity(set.captions.len() * 3 * s * s);
    let request = |guidance_scale: f64, seed: u64| GenerateRequest {
        guidance_scale,
        steps: sampling.steps,
        sampler: sampling.sampler,
        seed,
        ..Default::default()
    };
    // One caption at a time, seeded by its index: every point starts from the same x_T per
    // caption, so the methods and scales differ only in their guidance.
    for (i, caption) in set.captions.iter().enumerate() {
        let seed = sampling.seed + i as u64;
        let x = match guidance {
            Guidance::ClassifierFree(scale) => {
                let mut req = request(scale, seed);
                req.prompt = caption.clone();
                pipe.generate(&req)?.run()
            }
            Guidance::Clip(scale) => {
                let guide = guide.ok_or(TrainError::NoGuideClip)?;
                let mut req = request(1.0, seed);
                req.prompt = caption.clone();
                pipe.generate_clip_guided(&req, guide, scale)?.run()
            }
        };
        samples.extend(x.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
    }
    let fake = image_embeddings(eval_clip, &samples, set.captions.len(), pipe.device())?;
    Ok(EvalPoint {
        guidance,
        clip_score: clip_score(&fake, &set.text),
        r_precision: r_precision(&fake, &set.text, R_PRECISION_CANDIDATES, 0),
        frechet: frechet_distance(&set.real, &fake),
        n: set.captions.len(),
    })
}

impl Guidance {
    pub fn method(&self) -> &'static str {
        match self {
            Self::ClassifierFree(_) => "classifier-free",
            Self::Clip(_) => "CLIP",
        }
    }

    pub fn scale(&self) -> f64 {
        match *self {
            Self::ClassifierFree(s) | Self::Clip(s) => s,
        }
    }
}

/// The points as a Markdown table.
pub fn table(points: &[EvalPoint]) -> String {
    let mut t = String::from(
        "| guidance | scale | CLIP score | CLIP R-precision | Fréchet distance | n |\n\
         |---|---|---|---|---|---|\n",
    );
    for p in points {
        t.push_str(&format!(
            "| {} | {} | {:.2} | {:.1}% | {:.4} | {} |\n",
            p.guidance.method(),
            p.guidance.scale(),
            p.clip_score,
            p.r_precision * 100.0,
            p.frechet,
            p.n
        ));
    }
    t
}

/// The points of a table [`table`] printed (other lines are skipped), so that a sweep can go on
/// from points already measured with the same model, CLIPs, samples and sampler.
pub fn points_from_table(text: &str) -> Result<Vec<EvalPoint>, String> {
    let mut points = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let guidance = match cells.first() {
            Some(&"classifier-free") => Guidance::ClassifierFree,
            Some(&"CLIP") => Guidance::Clip,
            _ => continue,
        };
        let bad = || {
            format!(
                "cannot read the table row \"{line}\": expected `| method | scale | CLIP score | R-precision % | Fréchet distance | n |`"
            )
        };
        let [_, scale, score, precision, frechet, n] = cells[..] else {
            return Err(bad());
        };
        let num = |c: &str| c.parse::<f64>().map_err(|_| bad());
        points.push(EvalPoint {
            guidance: guidance(num(scale)?),
            clip_score: num(score)?,
            r_precision: num(precision.trim_end_matches('%'))? / 100.0,
            frechet: num(frechet)?,
            n: n.parse().map_err(|_| bad())?,
        });
    }
    Ok(points)
}

/// The paper's trade-off figure: Fréchet distance (lower is closer to the real images) against
/// CLIP score (higher follows the captions more), one curve per guidance method, each point
/// labelled with its scale.
pub fn plot_tradeoff(points: &[EvalPoint], path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    let text = crate::log::register_font();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let span = |f: fn(&EvalPoint) -> f64| {
        let (lo, hi) = points
            .iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let pad = ((hi - lo) * 0.1).max(1e-3);
        (lo - pad)..(hi + pad)
    };
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption("guidance trade-off", ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(span(|p| p.clip_score), span(|p| p.frechet))
        .map_err(|x| e(&x))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("CLIP score (evaluation CLIP)")
            .y_desc("Fréchet distance of CLIP embeddings")
            .draw()
            .map_err(|x| e(&x))?;
    }
    for (method, colour) in [("classifier-free", BLUE), ("CLIP", RED)] {
        let curve: Vec<&EvalPoint> = points
            .iter()
            .filter(|p| p.guidance.method() == method)
            .collect();
        if curve.is_empty() {
            continue;
        }
        let xy: Vec<(f64, f64)> = curve.iter().map(|p| (p.clip_score, p.frechet)).collect();
        let s = chart
            .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))
            .map_err(|x| e(&x))?;
        if text {
            s.label(format!("{method} guidance"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .draw_series(xy.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|x| e(&x))?;
        if text {
            chart
                .draw_series(curve.iter().map(|p| {
                    Text::new(
                        format!("{}", p.guidance.scale()),
                        (p.clip_score, p.frechet),
                        ("sans-serif", 14),
                    )
                }))
                .map_err(|x| e(&x))?;
        }
    }
    if text {
        crate::log::draw_legend(&mut chart)?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_table_reads_back_as_its_points() {
        let points = vec![
            EvalPoint {
                guidance: Guidance::ClassifierFree(3.0),
                clip_score: 49.16,
                r_precision: 0.215,
                frechet: 0.0437,
                n: 256,
            },
            EvalPoint {
                guidance: Guidance::Clip(16.0),
                clip_score: 52.5,
                r_precision: 0.25,
                frechet: 0.1,
                n: 32,
            },
        ];
        let text = format!("256 samples per point\n{}", table(&points));
        let back = points_from_table(&text).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in points.iter().zip(&back) {
            assert_eq!((a.guidance, a.n), (b.guidance, b.n));
            for (x, y) in [
                (a.clip_score, b.clip_score),
                (a.r_precision, b.r_precision),
                (a.frechet, b.frechet),
            ] {
                assert!((x - y).abs() < 1e-9, "{x} vs {y}");
            }
        }
        let err = points_from_table("| CLIP | 4 | 53.46 | 25.4% |").unwrap_err();
        assert!(err.contains("cannot read the table row"), "{err}");
    }

    fn gaussian_rows(n: usize, d: usize, mean: f64, scale: f64, seed: u64) -> Vec<Vec<f64>> {
        use rand_distr::{Distribution, Normal};
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(mean, scale).unwrap();
        (0..n)
            .map(|_| (0..d).map(|_| normal.sample(&mut rng)).collect())
            .collect()
    }

    #[test]
    fn frechet_distance_matches_the_closed_form() {
        // Identical sets: 0.
        let a = gaussian_rows(200, 4, 0.0, 1.0, 0);
        assert!(frechet_distance(&a, &a) < 1e-9);
        // 1-D: (μ₁ − μ₂)² + σ₁² + σ₂² − 2σ₁σ₂, with the sets' own moments.
        let b = gaussian_rows(300, 1, 2.0, 3.0, 1);
        let m = |r: &[Vec<f64>]| {
            let n = r.len() as f64;
            let mu = r.iter().map(|v| v[0]).sum::<f64>() / n;
            let var = r.iter().map(|v| (v[0] - mu).powi(2)).sum::<f64>() / (n - 1.0);
            (mu, var)
        };
        let a1: Vec<Vec<f64>> = a.iter().map(|v| vec![v[0]]).collect();
        let ((ma, va), (mb, vb)) = (m(&a1), m(&b));
        let expected = (ma - mb).powi(2) + va + vb - 2.0 * (va * vb).sqrt();
        assert!((frechet_distance(&a1, &b) - expected).abs() < 1e-9 * expected.max(1.0));
        // A shift by c in every one of d dimensions adds about d·c².
        let shifted: Vec<Vec<f64>> = a
            .iter()
            .map(|v| v.iter().map(|x| x + 0.5).collect())
            .collect();
        assert!((frechet_distance(&a, &shifted) - 4.0 * 0.25).abs() < 1e-9);
        // Symmetric in its arguments.
        let c = gaussian_rows(200, 4, 0.3, 2.0, 2);
        assert!((frechet_distance(&a, &c) - frechet_distance(&c, &a)).abs() < 1e-6);
    }

    #[test]
    fn clip_score_and_r_precision_of_matching_and_random_embeddings() {
        let texts = gaussian_rows(150, 16, 0.0, 1.0, 3);
        // Images that equal their captions: score 100, every question answered.
        assert!((clip_score(&texts, &texts) - 100.0).abs() < 1e-9);
        assert_eq!(r_precision(&texts, &texts, 100, 0), 1.0);
        // A caption that occurs twice (two styles of one emoji) is not its own distractor.
        let twice: Vec<Vec<f64>> = texts.iter().chain(&texts).cloned().collect();
        assert_eq!(r_precision(&twice, &twice, 100, 0), 1.0);
        // Images unrelated to their captions: near chance (1 in 100).
        let images = gaussian_rows(150, 16, 0.0, 1.0, 4);
        let r = r_precision(&images, &texts, 100, 0);
        assert!(r < 0.06, "R-precision of random embeddings {r}");
        assert!(clip_score(&images, &texts).abs() < 10.0);
        // With 2 candidates, about half.
        let r2 = r_precision(&images, &texts, 2, 0);
        assert!((0.35..0.65).contains(&r2), "{r2}");
    }

    #[test]
    fn real_scores_pair_each_caption_with_its_own_image() {
        // Three images, five captions cycling over them; each caption embeds as its image.
        let real = gaussian_rows(3, 8, 0.0, 1.0, 5);
        let text: Vec<Vec<f64>> = (0..5).map(|i| real[i % 3].clone()).collect();
        let set = EvalSet {
            captions: (0..5).map(|i| format!("c{}", i % 3)).collect(),
            text,
            real,
        };
        let (score, precision) = set.real_scores();
        assert!((score - 100.0).abs() < 1e-9, "{score}");
        assert_eq!(precision, 1.0);
        // Paired with the wrong images, the score falls.
        let shifted = EvalSet {
            real: set.real.iter().cycle().skip(1).take(3).cloned().collect(),
            ..set
        };
        assert!(shifted.real_scores().0 < 60.0);
    }
}
