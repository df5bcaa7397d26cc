//! OpenAI's PyTorch checkpoints (`base.pt`, `upsample.pt`, …) converted to safetensors without
//! running their pickles.
//!
//! A `.pt` file is a zip archive of `data.pkl` (a pickle of the state_dict) and one raw storage
//! file per tensor. Unpickling in Python may call any importable function, which is how a hostile
//! checkpoint runs code. We read the pickle with burn-store's PyTorch reader (tracel-ai, the
//! library our weights already go through; candle's pickle module would do the same but brings a
//! second tensor library): it interprets the opcodes in Rust, builds tensors only through
//! `torch._utils._rebuild_tensor(_v2)`, `_rebuild_parameter`, `torch._tensor._rebuild_from_type_v2`
//! and `collections.OrderedDict`, and turns a call of any other global into an error naming it.
//! Nothing in the file is ever executed; [`read_pytorch`] reports such a global as
//! [`ConvertError::RefusedGlobal`].

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn_store::pytorch::pickle_reader::PickleError;
use burn_store::pytorch::{PytorchError, PytorchReader};
use serde_json::Value;

use crate::recognize::{RecognizeError, Recognized, Shapes, recognize};
use crate::weights::{LoadReport, StateDict, apply_state_dict};
use crate::{GlideConfig, Text2ImUNet};

/// Why a checkpoint could not be converted; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "refusing {path}: its pickle calls the global `{global}`, which a state_dict never needs \
         (a checkpoint that does this may be trying to run code; nothing was executed). Convert \
         only files from a source you trust, saved with torch.save(model.state_dict())"
    )]
    RefusedGlobal { path: String, global: String },
    #[error(
        "cannot read {path} as a PyTorch checkpoint ({why}); the file may be truncated or not a \
         .pt file: download it again"
    )]
    Unreadable { path: String, why: String },
    #[error("{path} holds no tensors; pass the state_dict of a GLIDE model")]
    Empty { path: String },
    #[error("tensor {name:?} in {path} has dtype {dtype}; only float tensors are converted")]
    Dtype {
        path: String,
        name: String,
        dtype: String,
    },
    #[error(transparent)]
    Recognize(#[from] RecognizeError),
    #[error(
        "the weights do not fit the options read from them:\n{0}\nPass the model's options with \
         --options (original option names, e.g. '{{\"image_size\": 64, \"num_head_channels\": 64}}')"
    )]
    Incompatible(LoadReport),
}

/// Reads a checkpoint's tensors under their state_dict names (floats widened to f32) and the set
/// of stored dtypes.
pub fn read_pytorch(path: &Path) -> Result<(StateDict, BTreeSet<String>), ConvertError> {
    let shown = path.display().to_string();
    let unreadable = |why: String| ConvertError::Unreadable {
        path: shown.clone(),
        why,
    };
    // The reader is not ours: a malformed archive must become a sentence even if it panics.
    let reader = catch_unwind(AssertUnwindSafe(|| PytorchReader::new(path)))
        .map_err(|_| unreadable("the reader failed on malformed data".into()))?
        .map_err(|e| match e {
            PytorchError::Pickle(PickleError::UnsupportedType(global)) => {
                ConvertError::RefusedGlobal {
                    path: shown.clone(),
                    global,
                }
            }
            other => unreadable(other.to_string()),
        })?;
    if reader.is_empty() {
        return Err(ConvertError::Empty { path: shown });
    }
    let mut state = StateDict::default();
    let mut dtypes = BTreeSet::new();
    for (name, snapshot) in reader.into_tensors() {
        let data = catch_unwind(AssertUnwindSafe(|| snapshot.to_data()))
            .map_err(|_| unreadable(format!("tensor {name:?} could not be read")))?
            .map_err(|e| unreadable(format!("tensor {name:?}: {e:?}")))?;
        if !data.dtype.is_float() {
            return Err(ConvertError::Dtype {
                path: shown,
                name,
                dtype: format!("{:?}", data.dtype),
            });
        }
        dtypes.insert(format!("{:?}", data.dtype).to_lowercase());
        state.tensors.insert(name, data.convert::<f32>());
    }
    Ok((state, dtypes))
}

/// A converted checkpoint, ready to be written with [`StateDict::to_safetensors`].
#[derive(Debug)]
pub struct Conversion {
    pub recognized: Recognized,
    /// Tensors under their original names, with `options` (UNets) or `config` (CLIP towers),
    /// `preset` and `source` metadata.
    pub state: StateDict,
    pub num_params: usize,
    /// Float dtypes stored in the checkpoint (`f32`, `f16`, …).
    pub source_dtypes: BTreeSet<String>,
}

/// Reads `path`, recognises the model (with `overrides` for what the shapes cannot show), and,
/// for a UNet, checks that a model built from the options takes every tensor.
pub fn convert_pytorch<B: Backend>(
    path: &Path,
    overrides: &Value,
    device: &B::Device,
) -> Result<Conversion, ConvertError> {
    let (mut state, source_dtypes) = read_pytorch(path)?;
    let shapes: Shapes = state
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.shape.to_vec()))
        .collect();
    let recognized = recognize(&shapes, overrides)?;
    let (key, value) = match &recognized {
        Recognized::Unet { config, .. } => {
            verify::<B>(config, &state, device)?;
            ("options", config.to_glide_options().to_string())
        }
        Recognized::ClipImage { config } | Recognized::ClipText { config } => {
            ("config", config.to_string())
        }
    };
    let meta = &mut state.metadata;
    meta.insert(key.into(), value);
    meta.insert("preset".into(), recognized.preset_name().into());
    if let Some(name) = path.file_name() {
        meta.insert("source".into(), name.to_string_lossy().into_owned());
    }
    let num_params: usize = state.tensors.values().map(|t| t.num_elements()).sum();
    state
        .metadata
        .insert("n_params".into(), num_params.to_string());
    Ok(Conversion {
        recognized,
        state,
        num_params,
        source_dtypes,
    })
}

/// Builds the model the options describe and applies the tensors: every key and shape must fit.
fn verify<B: Backend>(
    config: &GlideConfig,
    state: &StateDict,
    device: &B::Device,
) -> Result<(), ConvertError> {
    let model: Text2ImUNet<B> = config.init(device);
    let (_, report) = apply_state_dict(model, state);
    if report.is_clean() {
        Ok(())
    } else {
        Err(ConvertError::Incompatible(report))
    }
}
