//! Golden tests: the model computes what OpenAI's GLIDE code computes, on the reference fixtures
//! in `../shared/fixtures/glide-reference/` (made from glide-text2im at commit 69b5307 with seeded
//! random weights; see that folder's README).

use burn::backend::Flex;
use glide_model::weights::{StateDict, apply_state_dict, load_weights, save_weights};
use glide_model::{GlideConfig, Text2ImUNet, check_fixture};

type B = Flex;

fn fixture(name: &str) -> Vec<u8> {
    glide_model::check::reference_fixture(name)
}

fn check(name: &str) {
    let report = check_fixture::<B>(&fixture(name), &Default::default()).unwrap();
    for (key, err) in &report.errors {
        eprintln!("{name} {key}: relative L2 {err:.3e}");
    }
    let compared: Vec<&str> = report.errors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        compared,
        ["out.eps_var", "out.xf_proj", "out.xf_out"],
        "{name}"
    );
    assert!(
        report.unused_keys.is_empty(),
        "{name}: fixture keys not compared: {:?}",
        report.unused_keys
    );
    for (key, err) in &report.errors {
        assert!(
            *err < 1e-4,
            "{name} {key}: relative L2 error {err:e} ≥ 1e-4"
        );
    }
    assert_eq!(
        Some(report.num_params),
        report.expected_num_params,
        "{name}: parameter count of the instantiated module"
    );
    assert_eq!(
        report.model_keys, report.file_param_keys,
        "{name}: key sets"
    );
}

#[test]
fn text2im_matches_reference() {
    check("text2im_tiny.safetensors");
}

#[test]
fn inpaint_matches_reference() {
    check("inpaint_tiny.safetensors");
}

#[test]
fn upsample_matches_reference() {
    check("upsample_tiny.safetensors");
}

#[test]
fn saved_keys_equal_the_reference_state_dict() {
    let device = Default::default();
    let bytes = fixture("text2im_tiny.safetensors");
    let state = StateDict::from_safetensors(&bytes).unwrap();
    let config = glide_model::weights::config_from_metadata(&state).unwrap();
    let params = state.strip_prefix("param.");
    let model: Text2ImUNet<B> = config.init(&device);
    let (model, report) = apply_state_dict(model, &params);
    assert!(report.is_clean(), "{report}");

    let saved = save_weights(&model, &config, &[], false);
    let back = StateDict::from_safetensors(&saved).unwrap();
    let keys: Vec<_> = back.tensors.keys().collect();
    let expected: Vec<_> = params.tensors.keys().collect();
    assert_eq!(keys, expected);
    for (k, v) in &params.tensors {
        assert_eq!(&back.tensors[k], v, "{k} changed in a save/load round trip");
    }
    // and the saved file loads into a fresh model with its options
    let fresh: Text2ImUNet<B> = glide_model::weights::config_from_metadata(&back)
        .unwrap()
        .init(&device);
    load_weights(fresh, &saved).unwrap();
}

#[test]
fn loading_names_missing_unexpected_and_misshapen_keys() {
    let device = Default::default();
    let state = StateDict::from_safetensors(&fixture("text2im_tiny.safetensors"))
        .unwrap()
        .strip_prefix("param.");
    let config = glide_model::weights::config_from_metadata(&state).unwrap();
    let mut bad = state.clone();
    bad.tensors.remove("out.2.bias");
    bad.tensors.insert(
        "extra.weight".into(),
        burn::tensor::TensorData::new(vec![0f32; 4], [4]),
    );
    bad.tensors.insert(
        "time_embed.0.bias".into(),
        burn::tensor::TensorData::new(vec![0f32; 3], [3]),
    );
    let (_, report) = apply_state_dict(config.init::<B>(&device), &bad);
    assert_eq!(report.missing, ["out.2.bias"]);
    assert_eq!(report.unexpected, ["extra.weight"]);
    assert_eq!(report.mismatched.len(), 1);
    assert!(
        report.mismatched[0].starts_with("time_embed.0.bias"),
        "{:?}",
        report.mismatched
    );
}

/// The released presets have the original's parameter counts (instantiated modules).
#[test]
fn preset_parameter_counts() {
    let device = Default::default();
    for (name, expected) in [
        ("base", 385_030_726usize),
        ("upsample", 398_361_286),
        ("base-inpaint", 385_037_638),
        ("upsample-inpaint", 398_368_198),
    ] {
        let model: Text2ImUNet<B> = GlideConfig::preset(name).unwrap().init(&device);
        assert_eq!(glide_model::weights::num_params(&model), expected, "{name}");
    }
}
