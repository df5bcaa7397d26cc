//! Golden tests of the noised CLIP against the original code's outputs
//! (`../shared/fixtures/glide-reference/noised_clip_tiny.safetensors` and
//! `clip_guidance_tiny.safetensors`; see that folder's README).

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use glide_model::check::relative_l2;
use glide_model::clip::{ClipConfig, NoisedClip, clip_cond_grad};
use glide_model::weights::StateDict;

type B = Flex;

fn fixture(name: &str) -> StateDict {
    StateDict::from_safetensors(&glide_model::check::reference_fixture(name)).unwrap()
}

fn floats(state: &StateDict, key: &str) -> Vec<f32> {
    state.tensors[key]
        .clone()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

fn ints(state: &StateDict, key: &str) -> Vec<i64> {
    state.tensors[key]
        .clone()
        .convert::<i64>()
        .to_vec()
        .unwrap()
}

fn tensor<const D: usize>(state: &StateDict, key: &str) -> Tensor<B, D> {
    Tensor::from_data(
        state.tensors[key].clone().convert::<f32>(),
        &Default::default(),
    )
}

fn int_tensor<const D: usize>(state: &StateDict, key: &str) -> Tensor<B, D, Int> {
    let data = &state.tensors[key];
    Tensor::from_data(
        TensorData::new(ints(state, key), data.shape.clone()),
        &Default::default(),
    )
}

fn clip() -> (NoisedClip<B>, StateDict) {
    let state = fixture("noised_clip_tiny.safetensors");
    let config: ClipConfig = serde_json::from_str(&state.metadata["config"]).unwrap();
    let clip = NoisedClip::from_state(config, &state, &Default::default()).unwrap();
    (clip, state)
}

fn assert_close(name: &str, actual: Vec<f32>, expected: &[f32], tolerance: f64) {
    let err = relative_l2(&actual, expected);
    eprintln!("{name}: relative L2 {err:.3e}");
    assert!(
        err < tolerance,
        "{name}: relative L2 error {err:e} ≥ {tolerance:e}"
    );
}

#[test]
fn the_towers_reproduce_the_reference_embeddings() {
    let (clip, state) = clip();
    let text = clip.text.forward(
        int_tensor(&state, "in.text_tokens"),
        int_tensor(&state, "in.text_lens"),
    );
    assert_close(
        "text_emb",
        text.into_data().to_vec().unwrap(),
        &floats(&state, "out.text_emb"),
        1e-4,
    );
    let image = clip.image.forward(
        tensor(&state, "in.image"),
        int_tensor(&state, "in.timesteps"),
    );
    assert_close(
        "image_emb",
        image.into_data().to_vec().unwrap(),
        &floats(&state, "out.image_emb"),
        1e-4,
    );
}

#[test]
fn the_guidance_gradient_equals_the_reference_cond_fn() {
    let weights = fixture("noised_clip_tiny.safetensors");
    let config: ClipConfig = serde_json::from_str(&weights.metadata["config"]).unwrap();
    let device = Default::default();
    let clip = NoisedClip::<Autodiff<B>>::from_state(config.clone(), &weights, &device).unwrap();
    let g = fixture("clip_guidance_tiny.safetensors");
    let grad_scale: f64 = g.metadata["grad_scale"].parse().unwrap();

    let tokens = Tensor::<Autodiff<B>, 2, Int>::from_inner(int_tensor(&g, "in.text_tokens"));
    let lens = Tensor::<Autodiff<B>, 1, Int>::from_inner(int_tensor(&g, "in.text_lens"));
    let z_t = clip.text_embeddings(tokens, lens).inner();
    assert_close(
        "text_emb_normalized",
        z_t.clone().into_data().to_vec().unwrap(),
        &floats(&g, "out.text_emb_normalized"),
        1e-4,
    );
    let t: Vec<usize> = ints(&g, "in.timesteps")
        .iter()
        .map(|&v| v as usize)
        .collect();
    let x: Tensor<B, 4> = tensor(&g, "in.x");
    let z_i = clip
        .image_embeddings(Tensor::from_inner(x.clone()), &t)
        .inner();
    assert_close(
        "image_emb_normalized",
        z_i.into_data().to_vec().unwrap(),
        &floats(&g, "out.image_emb_normalized"),
        1e-4,
    );
    let (grad, similarity) =
        clip_cond_grad(&clip.image, config.logit_scale, z_t, x, &t, grad_scale);
    assert_close(
        "similarity",
        similarity.into_data().convert::<f32>().to_vec().unwrap(),
        &floats(&g, "out.similarity"),
        1e-4,
    );
    assert_close(
        "grad",
        grad.into_data().to_vec().unwrap(),
        &floats(&g, "out.grad"),
        1e-3,
    );
}

/// What a trained CLIP saves is what the loader reads: every parameter of the fixture comes back
/// under its original name with its values, and the config rides along.
#[test]
fn state_dict_round_trips_the_original_names() {
    let (clip, state) = clip();
    let saved = clip.state_dict();
    let params: Vec<&String> = state
        .tensors
        .keys()
        .filter(|k| k.starts_with("text.") || k.starts_with("image."))
        .collect();
    assert!(params.len() > 10);
    assert_eq!(
        saved.tensors.len(),
        params.len(),
        "{:?}",
        saved.tensors.keys()
    );
    for k in params {
        let got = saved
            .tensors
            .get(k)
            .unwrap_or_else(|| panic!("{k} not saved"));
        assert_eq!(got.shape, state.tensors[k].shape, "{k}");
        assert_eq!(floats(&saved, k), floats(&state, k), "{k}");
    }
    let again = NoisedClip::<B>::from_states(&[saved], &Default::default()).unwrap();
    assert_eq!(again.config, clip.config);
}
