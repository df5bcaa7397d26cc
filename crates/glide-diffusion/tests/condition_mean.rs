//! `condition_mean` against the original (`clip_guidance_tiny.safetensors`: `out.new_mean` =
//! `in.mean + in.variance · out.grad`, as GLIDE's CLIP-guided sampler computes it).

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use glide_diffusion::{GaussianDiffusion, MeanVariance, NoiseSchedule};
use safetensors::SafeTensors;

type B = Flex;

#[test]
fn condition_mean_moves_the_mean_by_variance_times_gradient() {
    let dir = std::env::var_os("GLIDE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/fixtures/glide-reference")
        });
    let path = dir.join("clip_guidance_tiny.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "GLIDE reference fixture {} is missing ({e}); expected in ../shared/fixtures/glide-reference",
            path.display()
        )
    });
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |k: &str| -> Tensor<B, 4> {
        let v = st.tensor(k).unwrap();
        let f: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Tensor::from_data(TensorData::new(f, v.shape().to_vec()), &Default::default())
    };
    let mut out = MeanVariance {
        mean: get("in.mean"),
        variance: get("in.variance"),
        log_variance: get("in.variance").log(),
        pred_xstart: get("in.x"),
        eps: get("in.x"),
    };
    let diffusion = GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000);
    diffusion.condition_mean(&mut out, get("out.grad"));
    let (a, e): (Vec<f32>, Vec<f32>) = (
        out.mean.into_data().to_vec().unwrap(),
        get("out.new_mean").into_data().to_vec().unwrap(),
    );
    assert_eq!(a.len(), e.len());
    let worst = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "largest relative difference {worst:e}");
}
