//! Weights as safetensors under the original `state_dict` names.
//!
//! Our field names differ from the original only where PyTorch used `nn.Sequential` indices
//! (`in_layers.0` → `in_norm`, …); [`torch_to_burn`] and [`burn_to_torch`] translate, and burn-store's
//! PyTorch adapters transpose `Linear` weights and rename norm `gamma`/`beta` ↔ `weight`/`bias`.
//! Loading reports missing, unexpected and wrongly shaped keys by their original names.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use burn::module::{Module, ParamId};
use burn::tensor::{DType, TensorData, backend::Backend};
use burn_store::{
    ApplyError, BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot,
    TensorSnapshotError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use safetensors::{Dtype, SafeTensors};

use crate::Text2ImUNet;

/// Sequential indices of the original inside a module path.
const INNER: [(&str, &str); 5] = [
    (".in_layers.0.", ".in_norm."),
    (".in_layers.2.", ".in_conv."),
    (".emb_layers.1.", ".emb_layers."),
    (".out_layers.0.", ".out_norm."),
    (".out_layers.3.", ".out_conv."),
];
/// Sequential indices of the original at the top level.
const TOP: [(&str, &str); 6] = [
    ("time_embed.0.", "time_embed.linear_1."),
    ("time_embed.2.", "time_embed.linear_2."),
    ("guidance_embed.0.", "guidance_embed.linear_1."),
    ("guidance_embed.2.", "guidance_embed.linear_2."),
    ("out.0.", "out_norm."),
    ("out.2.", "out_conv."),
];

/// Original key → our module path (norm parameters keep PyTorch's `weight`/`bias`).
pub fn torch_to_burn(key: &str) -> String {
    for (t, b) in TOP {
        if let Some(rest) = key.strip_prefix(t) {
            return format!("{b}{rest}");
        }
    }
    let mut k = key.to_string();
    for (t, b) in INNER {
        k = k.replace(t, b);
    }
    k
}

/// Our module path → original key.
pub fn burn_to_torch(path: &str) -> String {
    for (t, b) in TOP {
        if let Some(rest) = path.strip_prefix(b) {
            return format!("{t}{rest}");
        }
    }
    let mut k = path.to_string();
    for (t, b) in INNER {
        k = k.replace(b, t);
    }
    k
}

/// Errors from reading or applying weights; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(
        "the weights file is not valid safetensors ({0}); re-export it with safetensors (pickle checkpoints are not read)"
    )]
    Parse(String),
    #[error(
        "tensor {name:?} has dtype {dtype}; only F32, F16 and BF16 weights are supported, convert it to one of them"
    )]
    Dtype { name: String, dtype: String },
    #[error("the weights do not fit this model configuration:\n{0}")]
    Incompatible(LoadReport),
    #[error(
        "the weights file has no `options` metadata; pass the model preset explicitly (e.g. --preset base)"
    )]
    NoOptions,
    #[error(
        "the CLIP weights file has no `config` metadata; convert the checkpoint with `glide convert`, which writes it"
    )]
    NoClipConfig,
    #[error("{0}")]
    Options(#[from] crate::config::OptionsError),
    #[error(
        "the `options` metadata is not JSON ({0}); re-save the file with glide-rs or fix the metadata"
    )]
    OptionsJson(String),
    #[error("the sharded weights cannot be used: {0}")]
    Shards(String),
}

/// What happened when weights were applied.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub applied: usize,
    /// Model parameters the file lacks (original names).
    pub missing: Vec<String>,
    /// File tensors the model has no parameter for.
    pub unexpected: Vec<String>,
    /// `name: expected [..], found [..]`.
    pub mismatched: Vec<String>,
}

impl LoadReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |f: &mut std::fmt::Formatter<'_>, what: &str, v: &[String]| {
            if v.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {} {what}:", v.len())?;
            for k in v.iter().take(20) {
                writeln!(f, "    {k}")?;
            }
            if v.len() > 20 {
                writeln!(f, "    … and {} more", v.len() - 20)?;
            }
            Ok(())
        };
        list(f, "missing from the file", &self.missing)?;
        list(f, "unexpected in the file", &self.unexpected)?;
        list(f, "with the wrong shape", &self.mismatched)?;
        write!(
            f,
            "  ({} applied). Check that the file was made for this preset/options.",
            self.applied
        )
    }
}

/// The dtype a model's float parameters are held in once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParamStorage {
    /// f32, the dtype every layer computes in (f16 files are widened when read).
    #[default]
    F32,
    /// f16: half the memory; f32 files are rounded when read, and each layer widens its
    /// parameters to f32 where it runs ([`crate::half`]). For a GPU with `shader-f16`.
    F16,
}

impl ParamStorage {
    /// A float tensor's data in this dtype.
    fn hold(self, data: TensorData) -> TensorData {
        match (self, data.dtype) {
            (ParamStorage::F32, DType::F32) | (ParamStorage::F16, DType::F16) => data,
            (ParamStorage::F32, _) => data.convert::<f32>(),
            (ParamStorage::F16, _) => data.convert::<burn::tensor::f16>(),
        }
    }
}

/// A set of named tensors in the original layout and naming, plus file metadata. Floats are f32,
/// or f16 when read with [`ParamStorage::F16`].
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub tensors: BTreeMap<String, TensorData>,
    pub metadata: HashMap<String, String>,
}

/// A state dict given by value is consumed by the loaders ([`apply_named`]); by reference, copied.
impl From<StateDict> for Cow<'_, StateDict> {
    fn from(state: StateDict) -> Self {
        Cow::Owned(state)
    }
}

impl<'a> From<&'a StateDict> for Cow<'a, StateDict> {
    fn from(state: &'a StateDict) -> Self {
        Cow::Borrowed(state)
    }
}

impl StateDict {
    /// Reads a safetensors file; F16/BF16 tensors are widened to f32, integer tensors kept.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, WeightsError> {
        Self::from_safetensors_as(bytes, ParamStorage::F32)
    }

    /// A safetensors file's metadata alone (no tensor is read): enough to decide how to hold a
    /// model before its weights are read.
    pub fn metadata_of_safetensors(bytes: &[u8]) -> Result<Self, WeightsError> {
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Parse(e.to_string()))?;
        Ok(Self {
            tensors: BTreeMap::new(),
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// Reads a safetensors file with its floats held as `storage` says (an f16 file read as f16
    /// is never widened, so it takes half the memory of [`Self::from_safetensors`]); integer
    /// tensors kept.
    pub fn from_safetensors_as(bytes: &[u8], storage: ParamStorage) -> Result<Self, WeightsError> {
        let float = |data: TensorData| storage.hold(data);
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Parse(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Parse(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let raw = view.data().to_vec();
            let data = match view.dtype() {
                Dtype::F32 => float(TensorData::from_bytes_vec(raw, shape, DType::F32)),
                Dtype::F64 => match storage {
                    // kept in f64 (trajectories and schedules); parameters are narrowed on apply
                    ParamStorage::F32 => TensorData::from_bytes_vec(raw, shape, DType::F64),
                    ParamStorage::F16 => float(TensorData::from_bytes_vec(raw, shape, DType::F64)),
                },
                Dtype::F16 => float(TensorData::from_bytes_vec(raw, shape, DType::F16)),
                Dtype::BF16 => float(TensorData::from_bytes_vec(raw, shape, DType::BF16)),
                Dtype::I64 => TensorData::from_bytes_vec(raw, shape, DType::I64),
                Dtype::I32 => TensorData::from_bytes_vec(raw, shape, DType::I32),
                Dtype::U8 => TensorData::from_bytes_vec(raw, shape, DType::U8),
                Dtype::BOOL => TensorData::from_bytes_vec(
                    raw,
                    shape,
                    DType::Bool(burn::tensor::BoolStore::Native),
                ),
                other => {
                    return Err(WeightsError::Dtype {
                        name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            tensors.insert(name, data);
        }
        Ok(Self {
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// The same tensors with every float held as `storage` says (integers kept).
    pub fn held_as(mut self, storage: ParamStorage) -> Self {
        self.tensors = std::mem::take(&mut self.tensors)
            .into_iter()
            .map(|(name, data)| match data.dtype {
                DType::F32 | DType::F64 | DType::F16 | DType::BF16 => (name, storage.hold(data)),
                _ => (name, data),
            })
            .collect();
        self
    }

    /// The parameters of `model` under their original names and layout.
    pub fn from_module<B: Backend>(model: &Text2ImUNet<B>) -> Self {
        Self::from_named(model, &burn_to_torch)
    }

    /// The parameters of any module in PyTorch's layout, named `to_torch(module path)`.
    pub fn from_named<B: Backend, M: Module<B>>(
        model: &M,
        to_torch: &dyn Fn(&str) -> String,
    ) -> Self {
        let snapshots = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true);
        let tensors = snapshots
            .into_iter()
            .map(|s| {
                let data = s.to_data().expect("module tensors are readable");
                (to_torch(&s.full_path()), data.convert::<f32>())
            })
            .collect();
        Self {
            tensors,
            metadata: HashMap::new(),
        }
    }

    /// Keeps the tensors whose names start with `prefix`, with the prefix removed (the reference
    /// fixtures store parameters as `param.<key>`).
    pub fn strip_prefix(&self, prefix: &str) -> Self {
        Self {
            tensors: self
                .tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect(),
            metadata: self.metadata.clone(),
        }
    }

    /// Serialises to safetensors, storing floats as f32 (or f16 when `half`).
    pub fn to_safetensors(&self, half: bool) -> Vec<u8> {
        struct View(Dtype, Vec<usize>, Vec<u8>);
        impl safetensors::View for &View {
            fn dtype(&self) -> Dtype {
                self.0
            }
            fn shape(&self) -> &[usize] {
                &self.1
            }
            fn data(&self) -> std::borrow::Cow<'_, [u8]> {
                std::borrow::Cow::Borrowed(&self.2)
            }
            fn data_len(&self) -> usize {
                self.2.len()
            }
        }
        let views: Vec<(String, View)> = self
            .tensors
            .iter()
            .map(|(k, d)| {
                let shape = d.shape.to_vec();
                let view = match d.dtype {
                    DType::F32 | DType::F16 | DType::BF16 | DType::F64 if half => View(
                        Dtype::F16,
                        shape,
                        d.clone().convert::<burn::tensor::f16>().as_bytes().to_vec(),
                    ),
                    DType::F32 | DType::F16 | DType::BF16 | DType::F64 => View(
                        Dtype::F32,
                        shape,
                        d.clone().convert::<f32>().as_bytes().to_vec(),
                    ),
                    DType::I64 => View(Dtype::I64, shape, d.as_bytes().to_vec()),
                    _ => View(
                        Dtype::I32,
                        shape,
                        d.clone().convert::<i32>().as_bytes().to_vec(),
                    ),
                };
                (k.clone(), view)
            })
            .collect();
        let meta = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::serialize(views.iter().map(|(k, v)| (k.as_str(), v)), meta)
            .expect("in-memory safetensors serialisation cannot fail")
    }
}

/// Applies `state` (original names) to `model`. Returns the model and a report; tensors that did
/// not fit are left at their previous values. f16 tensors are applied as f16 (the model then holds
/// them in f16, see [`crate::half`]), every other float as f32. An owned `state` is consumed
/// tensor by tensor (each freed once applied); a borrowed one is copied first.
pub fn apply_state_dict<'a, B: Backend>(
    model: Text2ImUNet<B>,
    state: impl Into<Cow<'a, StateDict>>,
) -> (Text2ImUNet<B>, LoadReport) {
    apply_named(model, state, &torch_to_burn, &burn_to_torch)
}

/// Applies `state` to any module whose parameter paths are `to_burn(original key)`
/// (`to_torch` is the inverse, for the report), through burn-store's PyTorch adapter (`Linear`
/// weights transposed, norm `weight`/`bias` → `gamma`/`beta`).
pub fn apply_named<'a, B: Backend, M: Module<B>>(
    mut model: M,
    state: impl Into<Cow<'a, StateDict>>,
    to_burn: &dyn Fn(&str) -> String,
    to_torch: &dyn Fn(&str) -> String,
) -> (M, LoadReport) {
    let state = state.into().into_owned();
    // Parameters are floats: an integer or boolean tensor under a parameter's name is a wrong
    // file, not something to convert silently.
    let is_float =
        |d: &TensorData| matches!(d.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16);
    let foreign: Vec<String> = state
        .tensors
        .iter()
        .filter(|(_, d)| !is_float(d))
        .map(|(k, d)| format!("{k}: dtype {:?}; weights must be F32, F16 or BF16", d.dtype))
        .collect();
    // Each tensor moves into its snapshot and out of it when applied (burn-store reads a snapshot
    // once), so at no point do the weights exist twice beside the model: what lets the released
    // base load in a browser tab's 4 GB.
    let snapshots: Vec<TensorSnapshot> = state
        .tensors
        .into_iter()
        .filter(|(_, d)| is_float(d))
        .map(|(k, data)| {
            let path = to_burn(&k).split('.').map(String::from).collect();
            let data = if data.dtype == DType::F16 {
                data
            } else {
                data.convert::<f32>()
            };
            let (dtype, shape) = (data.dtype, data.shape.clone());
            let cell = RefCell::new(Some(data));
            let take = move || {
                cell.borrow_mut()
                    .take()
                    .ok_or_else(|| TensorSnapshotError::DataError(format!("{k} was read twice")))
            };
            TensorSnapshot::from_closure(
                Rc::new(take),
                dtype,
                shape,
                path,
                Vec::new(),
                ParamId::new(),
            )
        })
        .collect();
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    let torch_name = |p: &str| {
        // The adapter reports norm parameters under burn's names.
        let p = to_torch(p);
        if let Some(base) = p.strip_suffix(".gamma") {
            format!("{base}.weight")
        } else if let Some(base) = p.strip_suffix(".beta") {
            format!("{base}.bias")
        } else {
            p
        }
    };
    // A norm parameter applied under its alternative burn name (weight → gamma) is still
    // listed as unused under the original name; it was not.
    let applied: std::collections::HashSet<&str> =
        result.applied.iter().map(String::as_str).collect();
    let applied_as_alias = |p: &str| {
        let alias = if let Some(base) = p.strip_suffix(".weight") {
            format!("{base}.gamma")
        } else if let Some(base) = p.strip_suffix(".bias") {
            format!("{base}.beta")
        } else {
            return false;
        };
        applied.contains(alias.as_str())
    };
    let mut report = LoadReport {
        applied: result.applied.len(),
        missing: result.missing.iter().map(|(p, _)| torch_name(p)).collect(),
        unexpected: result
            .unused
            .iter()
            .filter(|p| !applied_as_alias(p))
            .map(|p| torch_name(p))
            .collect(),
        mismatched: foreign,
    };
    for e in &result.errors {
        report.mismatched.push(match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "{}: expected {:?}, found {:?}",
                torch_name(path),
                expected.as_slice(),
                found.as_slice()
            ),
            other => other.to_string(),
        });
    }
    report.missing.sort();
    report.unexpected.sort();
    (model, report)
}

/// Reads safetensors bytes and applies them strictly: any missing, unexpected or mis-shaped key is
/// an error naming the keys. A `param.` prefix (reference fixtures) is recognised and stripped.
pub fn load_weights<B: Backend>(
    model: Text2ImUNet<B>,
    bytes: &[u8],
) -> Result<Text2ImUNet<B>, WeightsError> {
    load_state_dict(model, StateDict::from_safetensors(bytes)?)
}

/// [`apply_state_dict`], strictly: any missing, unexpected or mis-shaped key is an error. A
/// `param.` prefix (reference fixtures) is recognised and stripped.
pub fn load_state_dict<'a, B: Backend>(
    model: Text2ImUNet<B>,
    state: impl Into<Cow<'a, StateDict>>,
) -> Result<Text2ImUNet<B>, WeightsError> {
    let state = state.into();
    let (model, report) = if state.tensors.keys().any(|k| k.starts_with("param.")) {
        apply_state_dict(model, state.strip_prefix("param."))
    } else {
        apply_state_dict(model, state)
    };
    if report.is_clean() {
        Ok(model)
    } else {
        Err(WeightsError::Incompatible(report))
    }
}

/// The GLIDE options stored in a file's `options` metadata.
pub fn config_from_metadata(state: &StateDict) -> Result<crate::GlideConfig, WeightsError> {
    let text = state
        .metadata
        .get("options")
        .ok_or(WeightsError::NoOptions)?;
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| WeightsError::OptionsJson(e.to_string()))?;
    Ok(crate::GlideConfig::from_glide_options(&v)?)
}

/// Name of the UNet's first convolution, whose input channels grow for inpainting.
pub const INPUT_CONV: &str = "input_blocks.0.0.weight";

/// Base-model weights as the start of an inpainting model: GLIDE fine-tunes its base model "with
/// four additional input channels" (the masked image and the mask), here zero-initialised so the
/// new model computes exactly what the base model did until training moves them.
pub fn inpaint_from_base(state: &StateDict) -> Result<StateDict, WeightsError> {
    let config = config_from_metadata(state)?;
    if config.inpaint {
        return Ok(state.clone());
    }
    let conv = state
        .tensors
        .get(INPUT_CONV)
        .ok_or_else(|| WeightsError::Parse(format!("{INPUT_CONV} is missing")))?;
    let [out_ch, in_ch, kh, kw] = conv.shape[..] else {
        return Err(WeightsError::Parse(format!(
            "{INPUT_CONV} has shape {:?}; expected [out, 3, k, k]",
            conv.shape
        )));
    };
    let extra = config.clone().with_inpaint(true).in_channels() - in_ch;
    let old = conv.clone().convert::<f32>().to_vec::<f32>().expect("f32");
    let (k, new_in) = (kh * kw, in_ch + extra);
    let mut new = vec![0.0f32; out_ch * new_in * k];
    for o in 0..out_ch {
        let src = &old[o * in_ch * k..(o + 1) * in_ch * k];
        new[o * new_in * k..o * new_in * k + in_ch * k].copy_from_slice(src);
    }
    let mut out = state.clone();
    out.tensors.insert(
        INPUT_CONV.into(),
        TensorData::new(new, [out_ch, new_in, kh, kw]),
    );
    out.metadata.insert(
        "options".into(),
        config.with_inpaint(true).to_glide_options().to_string(),
    );
    Ok(out)
}

/// Serialises a model with its options in the metadata (f16 storage when `half`).
pub fn save_weights<B: Backend>(
    model: &Text2ImUNet<B>,
    config: &crate::GlideConfig,
    extra_metadata: &[(&str, String)],
    half: bool,
) -> Vec<u8> {
    let mut state = StateDict::from_module(model);
    state
        .metadata
        .insert("options".into(), config.to_glide_options().to_string());
    state.metadata.insert("format".into(), "glide-rs".into());
    for (k, v) in extra_metadata {
        state.metadata.insert((*k).into(), v.clone());
    }
    state.to_safetensors(half)
}

/// Seeded non-zero random weights, as the reference fixtures were made: weights ~ N(0, 1/fan_in),
/// biases ~ N(0, 0.05²), norm gains ~ 1 + N(0, 0.1²), embeddings ~ N(0, 1). A freshly initialised
/// GLIDE predicts eps ≡ 0 (its output layers start at zero); this makes every layer matter.
/// With `zero`, every parameter is 0 instead (a model whose eps is exactly 0).
pub fn fixture_style_init<B: Backend>(
    model: Text2ImUNet<B>,
    seed: u64,
    zero: bool,
) -> Text2ImUNet<B> {
    let mut state = StateDict::from_module(&model);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let is_norm = |k: &str| {
        k.contains("norm.")
            || k.contains("ln_")
            || k.starts_with("final_ln.")
            || k.contains(".in_layers.0.")
            || k.contains(".out_layers.0.")
            || k.starts_with("out.0.")
    };
    for (k, data) in state.tensors.iter_mut() {
        let shape = data.shape.to_vec();
        let n: usize = shape.iter().product();
        let (mean, std) = if zero {
            (0.0, 0.0)
        } else if k.ends_with(".bias") {
            (0.0, 0.05)
        } else if is_norm(k) {
            (1.0, 0.1)
        } else if shape.len() >= 2 && !k.contains("embedding") {
            let fan_in: usize = shape[1..].iter().product();
            (0.0, 1.0 / (fan_in as f64).sqrt())
        } else {
            (0.0, 1.0)
        };
        let dist = Normal::new(mean, std.max(0.0)).expect("valid normal");
        let v: Vec<f32> = (0..n).map(|_| dist.sample(&mut rng) as f32).collect();
        *data = TensorData::new(v, shape);
    }
    let (model, report) = apply_state_dict(model, &state);
    debug_assert!(report.is_clean(), "{report}");
    model
}

/// Number of scalar parameters (the original `sum(p.numel())`).
pub fn num_params<B: Backend>(model: &Text2ImUNet<B>) -> usize {
    model.num_params()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_maps_are_inverse() {
        for k in [
            "input_blocks.1.0.in_layers.0.weight",
            "input_blocks.1.0.in_layers.2.bias",
            "output_blocks.3.0.emb_layers.1.weight",
            "middle_block.0.out_layers.3.weight",
            "middle_block.0.out_layers.0.bias",
            "time_embed.0.weight",
            "time_embed.2.bias",
            "out.0.weight",
            "out.2.weight",
            "transformer.resblocks.0.attn.c_qkv.weight",
            "padding_embedding",
        ] {
            assert_eq!(burn_to_torch(&torch_to_burn(k)), k);
        }
        assert_eq!(torch_to_burn("out.2.weight"), "out_conv.weight");
        assert_eq!(
            torch_to_burn("input_blocks.1.0.out_layers.3.weight"),
            "input_blocks.1.0.out_conv.weight"
        );
    }

    #[test]
    fn an_inpainting_model_from_base_weights_starts_as_the_base_model() {
        use crate::{GlideConfig, ImageCond};
        use burn::backend::Flex;
        use burn::tensor::{Bool, Int, Tensor};
        let d = Default::default();
        let cfg = GlideConfig::tiny()
            .with_image_size(16)
            .with_channel_mult(vec![1, 2]);
        let base = fixture_style_init(cfg.init::<Flex>(&d), 4, false);
        let bytes = save_weights(&base, &cfg, &[], false);
        let state = StateDict::from_safetensors(&bytes).unwrap();
        let inpaint_state = inpaint_from_base(&state).unwrap();
        let icfg = config_from_metadata(&inpaint_state).unwrap();
        assert!(icfg.inpaint);
        assert_eq!(inpaint_state.tensors[INPUT_CONV].shape[1], 7);
        let inpaint = load_state_dict(icfg.init::<Flex>(&d), &inpaint_state).unwrap();
        let x = Tensor::<Flex, 4>::random(
            [1, 3, 16, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &d,
        );
        let t = Tensor::<Flex, 1>::from_floats([500.0], &d);
        let tokens = Tensor::<Flex, 2, Int>::zeros([1, 16], &d);
        let mask = Tensor::<Flex, 2, Bool>::from_data([[true; 16]], &d);
        let a = base.forward(
            x.clone(),
            t.clone(),
            tokens.clone(),
            mask.clone(),
            &ImageCond::none(),
        );
        let image = Tensor::<Flex, 4>::ones([1, 3, 16, 16], &d);
        let keep = Tensor::<Flex, 4>::ones([1, 1, 16, 16], &d);
        let cond = ImageCond::new(Some((image, keep)), None, 16);
        let b = inpaint.forward(x, t, tokens, mask, &cond);
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
        // Converting an inpainting model again is a no-op.
        assert_eq!(
            inpaint_from_base(&inpaint_state).unwrap().tensors[INPUT_CONV].shape,
            inpaint_state.tensors[INPUT_CONV].shape
        );
    }
}
