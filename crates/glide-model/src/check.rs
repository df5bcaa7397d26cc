//! Checks a model against reference outputs stored beside its weights (the format of
//! `shared/fixtures/glide-reference/*_tiny.safetensors`): `param.*` weights, `in.*` inputs,
//! `out.*` outputs, and the GLIDE `options` in the metadata. Used by the golden tests and by
//! `glide check`, so a user can verify a converted checkpoint the same way.

use std::collections::BTreeSet;

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::weights::{
    ParamStorage, StateDict, WeightsError, apply_state_dict, config_from_metadata,
};
use crate::{GlideConfig, ImageCond, Text2ImUNet};

/// The reference fixtures' folder: `$GLIDE_FIXTURES`, else `../shared/fixtures/glide-reference`
/// beside the repository. Tests read it; a missing folder fails them with this sentence.
pub fn reference_fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("GLIDE_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/fixtures/glide-reference")
        });
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "GLIDE reference fixture {} is missing ({e}). The fixtures are expected in \
             ../shared/fixtures/glide-reference beside the repository (or set GLIDE_FIXTURES).",
            path.display()
        )
    })
}

/// Result of a fixture check.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub config: GlideConfig,
    /// Parameters of the instantiated module.
    pub num_params: usize,
    /// `n_params` from the file's metadata, when present.
    pub expected_num_params: Option<usize>,
    /// `(output key, relative L2 error)`.
    pub errors: Vec<(String, f64)>,
    /// Keys of the file that nothing compared or consumed.
    pub unused_keys: Vec<String>,
    /// Original keys the model has, as a set (to compare with the file's `param.*` set).
    pub model_keys: BTreeSet<String>,
    /// `param.*` keys of the file.
    pub file_param_keys: BTreeSet<String>,
    /// The dtypes the model held its parameters in, read back from it.
    pub param_dtypes: Vec<burn::tensor::DType>,
}

impl CheckReport {
    /// Largest relative L2 error over the outputs.
    pub fn max_error(&self) -> f64 {
        self.errors.iter().map(|(_, e)| *e).fold(0.0, f64::max)
    }
}

/// ‖a − b‖₂ / ‖b‖₂ (f64 accumulation).
pub fn relative_l2(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(
        actual.len(),
        expected.len(),
        "compared tensors differ in size"
    );
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in actual.iter().zip(expected) {
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    (num / den.max(1e-300)).sqrt()
}

/// Errors of a fixture check, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(
        "the fixture lacks input {0:?}; a reference file needs in.x, in.timesteps, in.tokens and in.mask"
    )]
    MissingInput(String),
    #[error("the fixture's weights do not fit the model built from its options:\n{0}")]
    Incompatible(crate::LoadReport),
}

fn take<B: Backend, const D: usize>(
    state: &mut StateDict,
    key: &str,
    device: &B::Device,
) -> Result<Tensor<B, D>, CheckError> {
    let data = state
        .tensors
        .remove(key)
        .ok_or_else(|| CheckError::MissingInput(key.into()))?;
    Ok(Tensor::from_data(data.convert::<f32>(), device))
}

fn int_vec(data: TensorData) -> Vec<i64> {
    data.convert::<i64>()
        .to_vec::<i64>()
        .expect("integer tensor")
}

/// Builds the model from the file's options, loads `param.*`, runs every reference input and
/// compares `out.eps_var`, `out.xf_proj` and `out.xf_out`.
pub fn check_fixture<B: Backend>(
    bytes: &[u8],
    device: &B::Device,
) -> Result<CheckReport, CheckError> {
    check_fixture_with::<B>(bytes, None, ParamStorage::F32, device)
}

/// As [`check_fixture`], but with the parameters (and, when it has them, the options) of another
/// weights file, e.g. a converted checkpoint: the fixture's inputs run through `weights`. The
/// model holds its parameters as `storage` says (f16: rounded, each layer widened where it runs).
pub fn check_fixture_with<B: Backend>(
    bytes: &[u8],
    weights: Option<&[u8]>,
    storage: ParamStorage,
    device: &B::Device,
) -> Result<CheckReport, CheckError> {
    let mut state = StateDict::from_safetensors(bytes)?;
    let (config, params) = match weights {
        None => (config_from_metadata(&state)?, state.strip_prefix("param.")),
        Some(w) => {
            let w = StateDict::from_safetensors(w)?;
            let config = match w.metadata.contains_key("options") {
                true => config_from_metadata(&w)?,
                false => config_from_metadata(&state)?,
            };
            (config, w)
        }
    };
    state.tensors.retain(|k, _| !k.starts_with("param."));
    let params = params.held_as(storage);

    let model: Text2ImUNet<B> = config.init(device);
    let num_params = crate::weights::num_params(&model);
    let model_keys: BTreeSet<String> = StateDict::from_module(&model).tensors.into_keys().collect();
    let (model, report) = apply_state_dict(model, &params);
    if !report.is_clean() {
        return Err(CheckError::Incompatible(report));
    }

    let x: Tensor<B, 4> = take(&mut state, "in.x", device)?;
    let timesteps: Tensor<B, 1> = take(&mut state, "in.timesteps", device)?;
    let tokens_data = state
        .tensors
        .remove("in.tokens")
        .ok_or_else(|| CheckError::MissingInput("in.tokens".into()))?;
    let mask_data = state
        .tensors
        .remove("in.mask")
        .ok_or_else(|| CheckError::MissingInput("in.mask".into()))?;
    let shape = tokens_data.shape.to_vec();
    let tokens = Tensor::<B, 2, Int>::from_data(
        TensorData::new(int_vec(tokens_data), shape.clone()),
        device,
    );
    let mask_vals: Vec<bool> = int_vec(mask_data).into_iter().map(|m| m != 0).collect();
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(mask_vals, shape), device);

    let inpaint = if config.inpaint {
        Some((
            take::<B, 4>(&mut state, "in.inpaint_image", device)?,
            take::<B, 4>(&mut state, "in.inpaint_mask", device)?,
        ))
    } else {
        None
    };
    let low_res = if config.super_res {
        Some(take::<B, 4>(&mut state, "in.low_res", device)?)
    } else {
        None
    };
    let cond = ImageCond::new(inpaint, low_res, config.image_size);

    let text = model.encode_text(tokens, mask);
    let eps_var = model.forward_with_text(x, timesteps, &text, &cond);

    let mut errors = Vec::new();
    let mut compare = |key: &str, actual: TensorData| {
        if let Some(expected) = state.tensors.remove(key) {
            assert_eq!(actual.shape, expected.shape, "{key}: shape differs");
            let a = actual.convert::<f32>().to_vec::<f32>().expect("f32");
            let e = expected.convert::<f32>().to_vec::<f32>().expect("f32");
            errors.push((key.to_string(), relative_l2(&a, &e)));
        }
    };
    compare("out.eps_var", eps_var.into_data());
    compare("out.xf_proj", text.xf_proj.into_data());
    compare("out.xf_out", text.xf_out.into_data());

    Ok(CheckReport {
        num_params,
        expected_num_params: params
            .metadata
            .get("n_params")
            .and_then(|s| s.trim().parse().ok()),
        errors,
        unused_keys: state.tensors.keys().cloned().collect(),
        model_keys,
        file_param_keys: params.tensors.keys().cloned().collect(),
        param_dtypes: crate::half::param_dtypes(&model),
        config,
    })
}
