//! A model held in f16 (`ParamStorage::F16`, the web page's choice on a GPU with `shader-f16`)
//! computes bit for bit what the same f16 weights widened to f32 at load time compute, on the
//! reference fixtures' three UNets (text-to-image, inpainting, upsampler), and stays close to the
//! original code's f32 outputs.

use burn::backend::Flex;
use burn::tensor::{Bool, DType, Distribution, Int, Tensor, TensorData};
use glide_model::half::param_dtypes;
use glide_model::weights::{
    ParamStorage, StateDict, apply_state_dict, config_from_metadata, save_weights,
};
use glide_model::{ImageCond, Text2ImUNet, check_fixture_with};

type B = Flex;

/// The fixture's model with its parameters held as `storage` (from the same f16 rounding).
fn model(fixture: &StateDict, storage: ParamStorage) -> Text2ImUNet<B> {
    let params = fixture
        .strip_prefix("param.")
        .held_as(ParamStorage::F16)
        .held_as(storage);
    let config = config_from_metadata(fixture).unwrap();
    let (model, report) = apply_state_dict(config.init::<B>(&Default::default()), &params);
    assert!(report.is_clean(), "{report}");
    model
}

/// Random inputs for the fixture's config: noisy images, timesteps, tokens, mask, image condition.
struct Inputs {
    x: Tensor<B, 4>,
    t: Tensor<B, 1>,
    tokens: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
    cond: ImageCond<B>,
}

fn inputs(fixture: &StateDict) -> Inputs {
    let config = config_from_metadata(fixture).unwrap();
    let device = Default::default();
    let (n, s, ctx) = (2, config.image_size, config.text_ctx);
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<B, 4>::random([n, 3, s, s], normal, &device);
    let t = Tensor::<B, 1>::from_floats([10.0, 900.0], &device);
    let tokens = Tensor::<B, 2, Int>::random([n, ctx], Distribution::Uniform(0.0, 500.0), &device);
    // the first three tokens real, the rest padding
    let keep: Vec<bool> = (0..n * ctx).map(|i| i % ctx < 3).collect();
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(keep, [n, ctx]), &device);
    let inpaint = config.inpaint.then(|| {
        let keep = Tensor::<B, 4>::random([n, 1, s, s], Distribution::Bernoulli(0.5), &device);
        (Tensor::<B, 4>::random([n, 3, s, s], normal, &device), keep)
    });
    let low_res = config
        .super_res
        .then(|| Tensor::<B, 4>::random([n, 3, s / 2, s / 2], normal, &device));
    let cond = ImageCond::new(inpaint, low_res, s);
    Inputs {
        x,
        t,
        tokens,
        mask,
        cond,
    }
}

/// ε/variance, xf_proj and xf_out of `model` on `inputs`.
fn outputs(model: &Text2ImUNet<B>, inputs: &Inputs) -> Vec<TensorData> {
    let text = model.encode_text(inputs.tokens.clone(), inputs.mask.clone());
    let out = model.forward_with_text(inputs.x.clone(), inputs.t.clone(), &text, &inputs.cond);
    vec![
        out.into_data(),
        text.xf_proj.into_data(),
        text.xf_out.into_data(),
    ]
}

#[test]
fn unets_held_in_f16_compute_what_their_f32_widening_computes() {
    for name in [
        "text2im_tiny.safetensors",
        "inpaint_tiny.safetensors",
        "upsample_tiny.safetensors",
    ] {
        let fixture =
            StateDict::from_safetensors(&glide_model::check::reference_fixture(name)).unwrap();
        let half = model(&fixture, ParamStorage::F16);
        let wide = model(&fixture, ParamStorage::F32);
        assert_eq!(param_dtypes::<B, _>(&half), vec![DType::F16], "{name}");
        assert_eq!(param_dtypes::<B, _>(&wide), vec![DType::F32], "{name}");
        let inputs = inputs(&fixture);
        for (got, want) in outputs(&half, &inputs).iter().zip(outputs(&wide, &inputs)) {
            assert_eq!(got.dtype, DType::F32, "{name}");
            assert_eq!(got.shape, want.shape, "{name}");
            assert_eq!(got.as_bytes(), want.as_bytes(), "{name}: outputs differ");
        }
        // Saving an f16-held model writes the values it holds.
        let config = config_from_metadata(&fixture).unwrap();
        let saved = StateDict::from_safetensors(&save_weights(&half, &config, &[], true)).unwrap();
        let expected = StateDict::from_module(&wide);
        assert_eq!(saved.tensors, expected.tensors, "{name}");
    }
}

#[test]
fn f16_weights_stay_close_to_the_original_codes_outputs() {
    for name in [
        "text2im_tiny.safetensors",
        "inpaint_tiny.safetensors",
        "upsample_tiny.safetensors",
    ] {
        let bytes = glide_model::check::reference_fixture(name);
        let device = Default::default();
        let full = check_fixture_with::<B>(&bytes, None, ParamStorage::F32, &device).unwrap();
        let half = check_fixture_with::<B>(&bytes, None, ParamStorage::F16, &device).unwrap();
        assert_eq!(half.num_params, full.num_params);
        for ((key, e16), (_, e32)) in half.errors.iter().zip(&full.errors) {
            eprintln!("{name} {key}: relative L2 {e16:.3e} held in f16, {e32:.3e} in f32");
            // f16 keeps 11 significant bits (2^-11 ≈ 4.9e-4 relative per weight)
            assert!(*e16 < 5e-3, "{name} {key}: {e16:e}");
            assert!(
                e16 > e32,
                "{name} {key}: the f16 run must round, {e16:e} vs {e32:e}"
            );
        }
    }
}
