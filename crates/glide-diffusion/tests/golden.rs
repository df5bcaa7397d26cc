//! Golden tests of the diffusion math against `diffusion.safetensors` (guided-diffusion /
//! glide-text2im outputs). Every key of the file is compared; a key left over fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use glide_diffusion::{GaussianDiffusion, NoiseSchedule, get_named_beta_schedule, space_timesteps};
use safetensors::{Dtype, SafeTensors};

type B = Flex;

enum Value {
    F64(Vec<f64>),
    F32(Vec<f32>, Vec<usize>),
    I64(Vec<i64>),
}

struct Fixture {
    values: BTreeMap<String, Value>,
    spacing: BTreeMap<String, Vec<usize>>,
}

impl Fixture {
    fn load() -> Self {
        let dir = std::env::var_os("GLIDE_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../shared/fixtures/glide-reference")
            });
        let path = dir.join("diffusion.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "GLIDE reference fixture {} is missing ({e}). The fixtures are expected in \
                 ../shared/fixtures/glide-reference beside the repository (or set GLIDE_FIXTURES).",
                path.display()
            )
        });
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let spacing: BTreeMap<String, Vec<usize>> =
            serde_json::from_str(&meta.metadata().as_ref().unwrap()["spacing"]).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut values = BTreeMap::new();
        for (name, view) in st.tensors() {
            let d = view.data();
            let v = match view.dtype() {
                Dtype::F64 => Value::F64(
                    d.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                Dtype::F32 => Value::F32(
                    d.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    view.shape().to_vec(),
                ),
                Dtype::I64 => Value::I64(
                    d.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                other => panic!("unexpected dtype {other:?} for {name}"),
            };
            values.insert(name, v);
        }
        Self { values, spacing }
    }

    fn take(&mut self, key: &str) -> Value {
        self.values
            .remove(key)
            .unwrap_or_else(|| panic!("fixture key {key} missing"))
    }

    fn f64s(&mut self, key: &str) -> Vec<f64> {
        match self.take(key) {
            Value::F64(v) => v,
            _ => panic!("{key} is not f64"),
        }
    }

    fn ints(&mut self, key: &str) -> Vec<usize> {
        match self.take(key) {
            Value::I64(v) => v.into_iter().map(|x| x as usize).collect(),
            _ => panic!("{key} is not i64"),
        }
    }

    fn tensor(&mut self, key: &str) -> Tensor<B, 4> {
        match self.take(key) {
            Value::F32(v, s) => {
                let shape: [usize; 4] = s.try_into().unwrap();
                Tensor::from_data(TensorData::new(v, shape), &Default::default())
            }
            _ => panic!("{key} is not f32"),
        }
    }

    fn expect<const D: usize>(&mut self, key: &str, actual: Tensor<B, D>) {
        let (expected, shape) = match self.take(key) {
            Value::F32(v, s) => (v, s),
            _ => panic!("{key} is not f32"),
        };
        assert_eq!(actual.dims().to_vec(), shape, "{key}: shape");
        let actual = actual.into_data().to_vec::<f32>().unwrap();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (a, e) in actual.iter().zip(&expected) {
            num += (*a as f64 - *e as f64).powi(2);
            den += (*e as f64).powi(2);
        }
        let rel = (num / den).sqrt();
        eprintln!("{key}: relative L2 {rel:.3e}");
        assert!(rel < 1e-4, "{key}: relative L2 error {rel:e} ≥ 1e-4");
    }

    fn finish(self) {
        let left: Vec<_> = self.values.keys().collect();
        assert!(left.is_empty(), "fixture keys not compared: {left:?}");
    }
}

fn close_f64(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-12, "{what}[{i}]: {a} vs {e}");
    }
}

#[test]
fn diffusion_matches_reference() {
    let mut fx = Fixture::load();

    // Schedules (f64, 1e-12).
    let cosine = get_named_beta_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
    close_f64(
        &cosine,
        &fx.f64s("betas.squaredcos_cap_v2"),
        "betas.squaredcos_cap_v2",
    );
    let linear = get_named_beta_schedule(NoiseSchedule::Linear, 1000);
    close_f64(&linear, &fx.f64s("betas.linear"), "betas.linear");

    // Respacing (exact integers).
    let expected_sets: BTreeMap<String, Vec<usize>> = fx.spacing.clone();
    assert_eq!(expected_sets.len(), 5);
    for (s, expected) in &expected_sets {
        let got: Vec<usize> = space_timesteps(1000, s).unwrap().into_iter().collect();
        assert_eq!(&got, expected, "space_timesteps(1000, {s:?})");
    }
    let spaced = GaussianDiffusion::spaced(&cosine, &space_timesteps(1000, "100").unwrap());
    assert_eq!(spaced.timestep_map, fx.ints("spaced100.timestep_map"));
    close_f64(
        &spaced.betas,
        &fx.f64s("spaced100.betas"),
        "spaced100.betas",
    );

    // p_mean_variance on the 100-step chain.
    let t = fx.ints("pmv.t");
    assert_eq!(spaced.model_timesteps(&t), fx.ints("pmv.model_saw_t"));
    let model_out = fx.tensor("pmv.model_out");
    let x = fx.tensor("pmv.x");
    let out = spaced.p_mean_variance(model_out, x.clone(), &t, true, None);
    fx.expect("pmv.mean", out.mean.clone());
    fx.expect("pmv.variance", out.variance.clone());
    fx.expect("pmv.log_variance", out.log_variance.clone());
    fx.expect("pmv.pred_xstart", out.pred_xstart.clone());

    // One step of each sampler from pmv.x with the given noise.
    let noise = fx.tensor("p_sample.noise");
    fx.expect("p_sample.sample", spaced.p_sample(&out, &t, noise.clone()));
    fx.expect(
        "ddim_eta0.sample",
        spaced.ddim_sample(&out, x.clone(), &t, 0.0, noise.clone()),
    );
    fx.expect(
        "ddim_eta0.5.sample",
        spaced.ddim_sample(&out, x, &t, 0.5, noise),
    );

    // q_sample on the full chain.
    let full = GaussianDiffusion::new(cosine.clone());
    let qt = fx.ints("q_sample.t");
    let x_start = fx.tensor("q_sample.x_start");
    let qn = fx.tensor("q_sample.noise");
    fx.expect("q_sample.out", full.q_sample(x_start, &qt, qn));

    // Hybrid loss on the full chain.
    let lt = fx.ints("loss.t");
    let x_start = fx.tensor("loss.x_start");
    let noise = fx.tensor("loss.noise");
    let model_out = fx.tensor("loss.model_out");
    let x_t = full.q_sample(x_start.clone(), &lt, noise.clone());
    let terms = full.training_losses(model_out, x_start, x_t, &lt, noise, None);
    fx.expect("loss.mse", terms.mse);
    fx.expect("loss.vb", terms.vb);
    fx.expect("loss.loss", terms.loss);

    fx.finish();
}

#[test]
fn respacing_sets_are_the_originals() {
    // Independent of the fixture: the 27-step set starts at 0 and ends at 999.
    let s: BTreeSet<usize> = space_timesteps(1000, "27").unwrap();
    assert_eq!(s.len(), 27);
    assert_eq!(s.iter().next_back(), Some(&999));
}
