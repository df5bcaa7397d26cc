// Loading models into the worker: weights from a URL (one safetensors file, or a shard index whose
// shards are downloaded one by one through the cache) or from files the visitor picked (read here,
// never uploaded); the GPU's needs reported and checked against the adapter's limits before a byte
// of weights is downloaded; the pipelines built on WebGPU or the CPU.

use std::cell::Cell;

use burn::backend::{Autodiff, Flex};
use burn::backend::wgpu::{RuntimeOptions, WebGpu, WgpuDevice, graphics, init_setup_async};
use burn::tensor::{DType, backend::Backend};
use glide_model::shards::INDEX_SUFFIX;
use glide_model::weights::{ParamStorage, StateDict, config_from_metadata};
use glide_model::{GlideConfig, GpuLimits, GpuNeeds, ShardIndex, check_gpu_fit};
use glide_model::clip::NoisedClip;
use glide_pipeline::clip_guided::load_noised_clip;
use glide_pipeline::{Cascade, Text2Im};
use glide_web::FromWorker;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::File;

use super::weights_cache::{Check, Report, fetch_checked, fetch_shard, fetch_weights};
use super::{js_err, post};

/// Where a model's weights come from.
pub enum Source {
    Url(String),
    /// Picked on the visitor's disk: one safetensors file, or a shard index with its shards.
    Files(Vec<File>),
}

impl Source {
    /// The name the page shows (and PNGs record).
    pub fn name(&self) -> String {
        match self {
            Source::Url(url) => url.rsplit('/').next().unwrap_or(url).to_string(),
            Source::Files(files) => files
                .iter()
                .map(|f| f.name())
                .find(|n| n.ends_with(INDEX_SUFFIX))
                .or_else(|| files.first().map(|f| f.name()))
                .unwrap_or_default(),
        }
    }
}

/// A text-to-image model, or a base model with its upsampler.
pub enum Model<B: Backend> {
    One(Text2Im<B>),
    Cascade(Cascade<B>),
}

impl<B: Backend> Model<B> {
    pub fn base(&self) -> &Text2Im<B> {
        match self {
            Model::One(p) => p,
            Model::Cascade(c) => &c.base,
        }
    }

    /// Side of the finished images.
    pub fn output_size(&self) -> usize {
        match self {
            Model::One(p) => p.config.image_size,
            Model::Cascade(c) => c.upsampler.config.image_size,
        }
    }
}

pub enum Loaded {
    Gpu(Model<WebGpu>),
    Cpu(Model<Flex>),
}

impl Loaded {
    /// (base image size, parameters of all stages, student steps, output size, the dtypes the
    /// parameters are held in).
    pub fn summary(&self) -> (usize, usize, Option<usize>, usize, String) {
        fn of<B: Backend>(m: &Model<B>) -> (usize, usize, Option<usize>, usize, String) {
            use burn::module::Module;
            use glide_model::half::param_dtypes;
            let (params, dtypes) = match m {
                Model::One(p) => (p.model.num_params(), param_dtypes(&p.model)),
                Model::Cascade(c) => (
                    c.base.model.num_params() + c.upsampler.model.num_params(),
                    [param_dtypes(&c.base.model), param_dtypes(&c.upsampler.model)].concat(),
                ),
            };
            let b = m.base();
            (
                b.config.image_size,
                params,
                b.config.student_steps,
                m.output_size(),
                glide_model::half::dtype_names(&dtypes),
            )
        }
        match self {
            Loaded::Gpu(m) => of(m),
            Loaded::Cpu(m) => of(m),
        }
    }
}

/// WebGPU as set up for this worker.
pub struct GpuSetup {
    pub limits: GpuLimits,
    /// The adapter has `shader-f16`: weights can be held in f16.
    pub f16: bool,
    /// Destroys the device (the `LoseDevice` test hook).
    pub destroy: Box<dyn Fn()>,
}

/// Sets WebGPU up (once per worker).
pub async fn setup_gpu() -> GpuSetup {
    let device = WgpuDevice::default();
    let setup = init_setup_async::<graphics::WebGpu>(&device, RuntimeOptions::default()).await;
    // A lost device (driver reset, GPU process crash) cannot be recovered in place.
    setup.device.set_device_lost_callback(|reason, message| {
        post(&FromWorker::DeviceLost {
            message: format!("the GPU device was lost: {reason:?}, {message:?}"),
        });
    });
    let limits = setup.device.limits();
    let wgpu_device = setup.device.clone();
    GpuSetup {
        limits: GpuLimits {
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        },
        // burn's WebGPU runtime requests every feature the adapter has; this is true when
        // `shader-f16` was among them.
        f16: <WebGpu as Backend>::supports_dtype(&device, DType::F16),
        destroy: Box::new(move || wgpu_device.destroy()),
    }
}

/// On the CPU, models whose weights take more than this in f32 are held in f16: half the memory
/// of a tab whose wasm memory is 4 GB at most (the released base and upsampler take 3.1 GB in
/// f32), for a small cost in speed (the released base: 15.3 s per guided step in f16, 15.7 s in
/// f32, measured once each).
const CPU_F16_ABOVE: u64 = 1 << 30;

/// What the CPU path may use of the tab's 4 GB of wasm memory (the page and the allocator's slack
/// take the rest).
const CPU_MEMORY: u64 = 3_500_000_000;

/// The CPU path's memory, lowered to `?cpu_memory=` when given.
pub fn cpu_memory(cap: Option<u64>) -> u64 {
    cap.map_or(CPU_MEMORY, |c| c.min(CPU_MEMORY))
}

/// How the worker holds a model's weights.
#[derive(Debug, Clone, Copy)]
pub struct Holding {
    /// On WebGPU, the adapter's limits (`None` on the CPU).
    pub limits: Option<GpuLimits>,
    /// The GPU has `shader-f16`.
    pub gpu_f16: bool,
    /// `?weights_dtype=f16|f32`: the visitor's choice (`None`: f16 on a `shader-f16` GPU, and
    /// on the CPU for models over 1 GB in f32). A GPU without `shader-f16` holds f32 regardless.
    pub choice: Option<ParamStorage>,
    /// Bytes the CPU path may use ([`cpu_memory`]).
    pub cpu_memory: u64,
}

impl Holding {
    fn storage(&self, cfg: &GlideConfig) -> ParamStorage {
        let f16 = match (self.limits.is_some(), self.choice) {
            (_, Some(ParamStorage::F32)) => false,
            (true, _) => self.gpu_f16,
            (false, Some(ParamStorage::F16)) => true,
            (false, None) => cfg.gpu_needs(1).weights > CPU_F16_ABOVE,
        };
        if f16 {
            ParamStorage::F16
        } else {
            ParamStorage::F32
        }
    }
}

/// Reports what `cfg` asks of the GPU (with `earlier`, the stages loaded before it: a cascade
/// holds both) and, on WebGPU, refuses a model that cannot fit; returns how to hold its weights.
pub fn approve(
    cfg: &GlideConfig,
    holding: &Holding,
    earlier: &Cell<Option<GpuNeeds>>,
) -> Result<ParamStorage, String> {
    let limits = holding.limits.as_ref();
    let storage = holding.storage(cfg);
    let f16 = storage == ParamStorage::F16;
    let stage = match f16 {
        true => cfg.gpu_needs(2).held_in_f16(),
        false => cfg.gpu_needs(2),
    };
    let stages_before = earlier.get().is_some();
    let needs = earlier.get().map_or(stage, |e| e.then(stage));
    post(&FromWorker::Needs {
        weights_mb: needs.weights as f64 / 1e6,
        total_mb: needs.total as f64 / 1e6,
        largest_buffer_mb: needs.largest_weight.max(needs.largest_activation) as f64 / 1e6,
        limit_mb: limits.map(|l| l.largest_buffer().0 as f64 / 1e6),
        stages: if stages_before { 2 } else { 1 },
        f16,
    });
    earlier.set(Some(needs));
    if limits.is_none() && needs.total > holding.cpu_memory {
        let what = if stages_before { "These models need" } else { "This model needs" };
        return Err(format!(
            "{what} about {:.0} MB of memory on the CPU, more than the {:.0} MB a browser tab \
             can give: {}",
            needs.total as f64 / 1e6,
            holding.cpu_memory as f64 / 1e6,
            if f16 {
                "run on a GPU with WebGPU (remove backend=cpu from the address if it is there)."
            } else {
                "remove weights_dtype=f32 from the address to hold the weights in f16 (half the \
                 memory)."
            }
        ));
    }
    match limits {
        Some(l) => check_gpu_fit(cfg, 1, true, l)
            .map(|_| storage)
            .map_err(|e| e.to_string()),
        None => Ok(storage),
    }
}

fn unusable(what: &str, e: impl std::fmt::Display) -> String {
    format!("The weights {what} cannot be used: {e}")
}

async fn read_file(file: &File) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(file.array_buffer()).await.map_err(|e| {
        format!(
            "Could not read {} from your disk ({}); pick it again.",
            file.name(),
            js_err(e)
        )
    })?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// A sharded model: the index approved first, then each shard (`shard(file, report)`) checked
/// and merged as it arrives.
async fn read_sharded<F, Fut>(
    what: &str,
    index_bytes: &[u8],
    approve: &dyn Fn(&GlideConfig) -> Result<ParamStorage, String>,
    mut shard: F,
) -> Result<StateDict, String>
where
    F: FnMut(ShardIndex, String, Report) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, String>>,
{
    let index = ShardIndex::parse(index_bytes).map_err(|e| unusable(what, e))?;
    let cfg = config_from_metadata(&index.metadata_only()).map_err(|e| unusable(what, e))?;
    let storage = approve(&cfg)?;
    let total = index.download_bytes();
    let mut offset = 0;
    let mut state = index.metadata_only();
    for file in index.files() {
        let report = Report::Part { offset, total };
        let bytes = shard(index.clone(), file.to_string(), report).await?;
        offset += bytes.len() as u64;
        let part = index
            .read_shard_as(file, &bytes, storage)
            .map_err(|e| unusable(what, e))?;
        state.merge(part).map_err(|e| unusable(what, e))?;
    }
    Ok(state)
}

/// The weights of `source`, once `approve` has accepted the model they describe, with their floats
/// held as it says (f16 files are then never widened in the tab's memory).
pub async fn read_source(
    source: &Source,
    approve: &dyn Fn(&GlideConfig) -> Result<ParamStorage, String>,
) -> Result<StateDict, String> {
    let whole = |what: &str, bytes: &[u8]| -> Result<StateDict, String> {
        let meta = StateDict::metadata_of_safetensors(bytes).map_err(|e| unusable(what, e))?;
        let storage = approve(&config_from_metadata(&meta).map_err(|e| unusable(what, e))?)?;
        StateDict::from_safetensors_as(bytes, storage).map_err(|e| unusable(what, e))
    };
    match source {
        Source::Url(url) if url.ends_with(INDEX_SUFFIX) => {
            let index = fetch_checked(url, Check::Index, Report::Silent).await?;
            let dir = url
                .rsplit_once('/')
                .map_or(String::new(), |(d, _)| format!("{d}/"));
            read_sharded(url, &index, approve, |index, file, report| {
                let url = format!("{dir}{file}");
                async move { fetch_shard(&url, &index, &file, report).await }
            })
            .await
        }
        Source::Url(url) => whole(url, &fetch_weights(url).await?),
        Source::Files(files) => {
            let by_name = |name: &str| files.iter().find(|f| f.name() == name).cloned();
            if let Some(index_file) = files.iter().find(|f| f.name().ends_with(INDEX_SUFFIX)) {
                let what = index_file.name();
                let bytes = read_file(index_file).await?;
                let n = ShardIndex::parse(&bytes).map_or(0, |i| i.shards.len());
                read_sharded(&what, &bytes, approve, |_, file, report| {
                    let picked = by_name(&file);
                    async move {
                        let f = picked.ok_or_else(|| {
                            format!(
                                "{file} is not among the picked files: pick the index and all \
                                 {n} of its shards together."
                            )
                        })?;
                        let bytes = read_file(&f).await?;
                        if let Report::Part { offset, total } = report {
                            let loaded = offset + bytes.len() as u64;
                            post(&FromWorker::Progress {
                                loaded,
                                total,
                                cached: false,
                            });
                        }
                        Ok(bytes)
                    }
                })
                .await
            } else {
                match files.as_slice() {
                    [one] if one.name().ends_with(".safetensors") => {
                        whole(&one.name(), &read_file(one).await?)
                    }
                    _ => Err(
                        "Pick one .safetensors file, or a .safetensors.index.json with all \
                              of its shards."
                            .into(),
                    ),
                }
            }
        }
    }
}

/// A pipeline from weights on WebGPU (`gpu`, after [`setup_gpu`]) or the CPU; parameters are held
/// in the dtype `state` holds them in (f16 only on a GPU with `shader-f16`).
pub fn build_one(state: StateDict, gpu: bool, what: &str) -> Result<Loaded, String> {
    let bad = |e: glide_pipeline::PipelineError| unusable(what, e);
    Ok(if gpu {
        Loaded::Gpu(Model::One(
            Text2Im::<WebGpu>::from_state_dict(state, &WgpuDevice::default()).map_err(bad)?,
        ))
    } else {
        Loaded::Cpu(Model::One(
            Text2Im::<Flex>::from_state_dict(state, &Default::default()).map_err(bad)?,
        ))
    })
}

/// The base model and its upsampler as a cascade; with `inpaint`, a base inpainting model and its
/// upsampling inpainting model as GLIDE's inpainting cascade.
pub fn build_cascade(base: Loaded, up: Loaded, inpaint: bool) -> Result<Loaded, String> {
    let bad = |e: glide_pipeline::PipelineError| format!("These two models are not a cascade: {e}");
    fn pair<B: Backend>(
        b: Text2Im<B>,
        u: Text2Im<B>,
        inpaint: bool,
    ) -> Result<Cascade<B>, glide_pipeline::PipelineError> {
        if inpaint {
            Cascade::new_inpaint(b, u)
        } else {
            Cascade::new(b, u)
        }
    }
    Ok(match (base, up) {
        (Loaded::Gpu(Model::One(b)), Loaded::Gpu(Model::One(u))) => {
            Loaded::Gpu(Model::Cascade(pair(b, u, inpaint).map_err(bad)?))
        }
        (Loaded::Cpu(Model::One(b)), Loaded::Cpu(Model::One(u))) => {
            Loaded::Cpu(Model::Cascade(pair(b, u, inpaint).map_err(bad)?))
        }
        _ => return Err("The base model and the upsampler must run on the same backend.".into()),
    })
}

/// A noised CLIP for CLIP guidance, on the autodiff backend over the model's (its image tower's
/// gradient guides sampling; the UNet stays in inference).
pub enum LoadedClip {
    Gpu(NoisedClip<Autodiff<WebGpu>>),
    Cpu(NoisedClip<Autodiff<Flex>>),
}

/// The noised CLIP at `url` (through the cache, without progress messages: it is small and
/// loads while a generation is starting) for a model whose `vocab` metadata is `model_vocab`.
pub async fn load_clip(
    url: &str,
    gpu: bool,
    model_vocab: Option<&str>,
) -> Result<LoadedClip, String> {
    let bytes = fetch_checked(url, Check::Safetensors, Report::Silent).await?;
    let state = StateDict::from_safetensors(&bytes).map_err(|e| unusable(url, e))?;
    let bad = |e: glide_pipeline::PipelineError| unusable(url, e);
    Ok(if gpu {
        LoadedClip::Gpu(load_noised_clip(&[state], model_vocab, &WgpuDevice::default()).map_err(bad)?)
    } else {
        LoadedClip::Cpu(load_noised_clip(&[state], model_vocab, &Default::default()).map_err(bad)?)
    })
}

/// The picked files of a `LoadFiles` message (see [`glide_web::LOAD_FILES`]).
pub fn files_of(message: &wasm_bindgen::JsValue) -> Vec<File> {
    let files = js_sys::Reflect::get(message, &"files".into()).unwrap_or_default();
    js_sys::Array::from(&files)
        .iter()
        .filter_map(|f| f.dyn_into::<File>().ok())
        .collect()
}
