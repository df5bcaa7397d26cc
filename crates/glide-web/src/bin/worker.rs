//! The web worker: owns the model, runs sampling off the UI thread, posts every step.
//! Built by trunk as `worker.js` + `worker_bg.wasm` (with a loader shim).

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use burn::tensor::Tensor;
    use burn::tensor::backend::{AutodiffBackend, Backend};
    use glide_diffusion::SampleStep;
    use glide_model::clip::NoisedClip;
    use glide_model::weights::ParamStorage;
    use glide_model::{GpuLimits, GpuNeeds, check_gpu_fit};
    use glide_pipeline::cascade_edit::cascade_inputs;
    use glide_pipeline::image::{batch_to_rgb8, encode_png};
    use glide_pipeline::mask::rgb8_to_chw;
    use glide_pipeline::{
        Cascade, EditInput, EditRequest, GenerateRequest, Text2Im, UpsampleOptions, UserMask,
    };
    use glide_web::{BackendChoice, FromWorker, LOAD_FILES, ToWorker};
    use js_sys::{Promise, Reflect};
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::{JsFuture, spawn_local};
    use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

    #[derive(Default)]
    struct State {
        loaded: Option<Rc<Loaded>>,
        model_name: String,
        /// The inpainting model, loaded on the first edit that asks for it: (url, model).
        edit_model: Option<(String, Rc<Loaded>)>,
        /// The noised CLIP, loaded on the first generation with CLIP guidance: (url, model).
        clip: Option<(String, Rc<LoadedClip>)>,
        /// The loaded model's `vocab` metadata (a CLIP must read the same).
        vocab: Option<String>,
        /// The base model runs on WebGPU (the inpainting model then does too).
        gpu: bool,
        /// WebGPU has been set up (once per worker; a second model reuses it), with these limits.
        gpu_limits: Option<GpuLimits>,
        /// That GPU has `shader-f16` (weights are then held in f16).
        gpu_f16: bool,
        /// `?weights_dtype=`: how to hold weights (`None`: the worker decides).
        weights_dtype: Option<ParamStorage>,
        /// `?cpu_memory=`: the CPU path's memory is treated as at most this.
        cpu_memory: Option<u64>,
        /// `?gpu_max_buffer=`: the limits are treated as at most this.
        max_buffer: Option<u64>,
        /// Destroys the WebGPU device (the `LoseDevice` test hook).
        destroy_gpu: Option<Rc<dyn Fn()>>,
        /// Id of the generation the page cancelled last.
        cancelled: Rc<Cell<u64>>,
        /// Id and finished steps of the running generation.
        running: Rc<Cell<(u64, usize)>>,
        /// A generation or load is running.
        busy: Rc<Cell<bool>>,
    }

    fn scope() -> DedicatedWorkerGlobalScope {
        js_sys::global().unchecked_into()
    }

    fn post(msg: &FromWorker) {
        let text = serde_json::to_string(msg).expect("messages serialise");
        let _ = scope().post_message(&JsValue::from_str(&text));
    }

    fn js_err(e: JsValue) -> String {
        e.as_string()
            .or_else(|| {
                e.dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
            })
            .unwrap_or_else(|| format!("{e:?}"))
    }

    async fn sleep_ms(ms: i32) {
        let p = Promise::new(&mut |resolve, _| {
            let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        });
        let _ = JsFuture::from(p).await;
    }

    /// Lets queued messages (Cancel) run between steps.
    async fn yield_now() {
        sleep_ms(0).await;
    }

    /// Weights through Cache Storage, revalidated; only whole downloads are kept.
    mod weights_cache {
        include!("worker/weights_cache.rs");
    }

    mod loading {
        include!("worker/loading.rs");
    }
    use loading::{Loaded, LoadedClip, Model, Source};

    /// Whether `navigator.gpu` exists and yields an adapter.
    async fn webgpu_adapter() -> Result<(), String> {
        let nav = scope().navigator();
        let gpu = Reflect::get(&nav, &"gpu".into()).unwrap_or(JsValue::UNDEFINED);
        if gpu.is_undefined() || gpu.is_null() {
            return Err("this browser has no WebGPU (navigator.gpu is missing)".into());
        }
        let request: js_sys::Function = Reflect::get(&gpu, &"requestAdapter".into())
            .map_err(js_err)?
            .dyn_into()
            .map_err(|_| "navigator.gpu.requestAdapter is not a function".to_string())?;
        let promise: Promise = request.call0(&gpu).map_err(js_err)?.unchecked_into();
        let adapter = JsFuture::from(promise).await.map_err(js_err)?;
        if adapter.is_null() || adapter.is_undefined() {
            return Err("WebGPU found no adapter (GPU)".into());
        }
        Ok(())
    }

    /// The GPU's limits (setting WebGPU up on first use), lowered to `?gpu_max_buffer=`, and
    /// whether it has `shader-f16`.
    async fn gpu_limits(state: &Rc<RefCell<State>>) -> (GpuLimits, bool) {
        let known = state.borrow().gpu_limits;
        let limits = match known {
            Some(l) => l,
            None => {
                let setup = loading::setup_gpu().await;
                let mut s = state.borrow_mut();
                s.gpu_limits = Some(setup.limits);
                s.gpu_f16 = setup.f16;
                s.destroy_gpu = Some(Rc::from(setup.destroy));
                setup.limits
            }
        };
        let s = state.borrow();
        (limits.capped(s.max_buffer), s.gpu_f16)
    }

    /// Reads, checks and builds one model on the chosen backend.
    async fn load_one(
        state: &Rc<RefCell<State>>,
        source: &Source,
        gpu: bool,
        earlier: &Cell<Option<GpuNeeds>>,
    ) -> Result<(Loaded, Option<String>), String> {
        let (limits, gpu_f16) = if gpu {
            let (limits, f16) = gpu_limits(state).await;
            (Some(limits), f16)
        } else {
            (None, false)
        };
        let holding = loading::Holding {
            limits,
            gpu_f16,
            choice: state.borrow().weights_dtype,
            cpu_memory: loading::cpu_memory(state.borrow().cpu_memory),
        };
        let approve = |cfg: &glide_model::GlideConfig| loading::approve(cfg, &holding, earlier);
        let weights = loading::read_source(source, &approve).await?;
        let vocab = weights.metadata.get("vocab").cloned();
        Ok((loading::build_one(weights, gpu, &source.name())?, vocab))
    }

    async fn load(
        state: Rc<RefCell<State>>,
        source: Source,
        upsampler: Option<Source>,
        choice: BackendChoice,
    ) -> Result<(), String> {
        let mut note = None;
        let use_gpu = match choice {
            BackendChoice::Cpu => false,
            _ => match webgpu_adapter().await {
                Ok(()) => true,
                Err(why) => {
                    note = Some(format!(
                        "Running on the CPU because {why}; this is much slower."
                    ));
                    false
                }
            },
        };
        // Free the previous model before the next one is read.
        state.borrow_mut().loaded = None;
        let needs = Cell::new(None);
        let (mut loaded, vocab) = load_one(&state, &source, use_gpu, &needs).await?;
        let mut model = source.name();
        if let Some(up) = &upsampler {
            let (up_model, _) = load_one(&state, up, use_gpu, &needs).await?;
            loaded = loading::build_cascade(loaded, up_model, false)?;
            model = format!("{model} + {}", up.name());
        }
        let (image_size, params, student_steps, output_size, weights_dtype) = loaded.summary();
        {
            let mut s = state.borrow_mut();
            s.loaded = Some(Rc::new(loaded));
            s.model_name = model.clone();
            s.gpu = use_gpu;
            // Another base model: an inpainting model loaded for the old one stays valid, but
            // drop it so its memory is freed until the next edit asks for it. A CLIP belongs to
            // its model's vocabulary and backend: load it again when asked.
            s.edit_model = None;
            s.clip = None;
            s.vocab = vocab;
        }
        post(&FromWorker::Ready {
            backend: if use_gpu { "webgpu" } else { "cpu" }.into(),
            note,
            image_size,
            params,
            model,
            student_steps,
            output_size,
            weights_dtype,
        });
        Ok(())
    }

    /// What one run needs besides its steps.
    struct Job<'a> {
        id: u64,
        batch: usize,
        size: usize,
        /// UNet evaluations per image per step.
        evals_per_step: usize,
        png_text: Vec<(String, String)>,
        cancelled: &'a Cell<u64>,
        running: &'a Cell<(u64, usize)>,
    }

    include!("worker/runs.rs");
    include!("worker/edits.rs");

    /// What a generation or an edit takes from the worker's state once it may run.
    struct Slot {
        loaded: Rc<Loaded>,
        name: String,
        cancelled: Rc<Cell<u64>>,
        busy: Rc<Cell<bool>>,
        running: Rc<Cell<(u64, usize)>>,
        gpu: bool,
        limits: Option<GpuLimits>,
    }

    impl Slot {
        /// The loaded model and the run's flags; `None` (and the page told why) when no model is
        /// loaded yet or another run is going and was not cancelled.
        fn claim(state: &Rc<RefCell<State>>) -> Option<Self> {
            let s = state.borrow();
            let Some(loaded) = s.loaded.clone() else {
                post(&FromWorker::Error {
                    message: "The model is not loaded yet; wait for it, or reload the page.".into(),
                });
                return None;
            };
            if s.busy.get() && s.cancelled.get() != s.running.get().0 {
                post(&FromWorker::Error {
                    message: "A generation is already running; cancel it first.".into(),
                });
                return None;
            }
            Some(Self {
                loaded,
                name: s.model_name.clone(),
                cancelled: s.cancelled.clone(),
                busy: s.busy.clone(),
                running: s.running.clone(),
                gpu: s.gpu,
                limits: s
                    .gpu_limits
                    .filter(|_| s.gpu)
                    .map(|l| l.capped(s.max_buffer)),
            })
        }

        fn context(&self) -> RunContext<'_> {
            RunContext {
                model_name: &self.name,
                cancelled: &self.cancelled,
                running: &self.running,
                limits: self.limits,
            }
        }

        /// Waits for a cancelled run to finish its last step, then marks run `id` as going.
        async fn start(&self, id: u64) {
            while self.busy.get() {
                sleep_ms(20).await;
            }
            self.busy.set(true);
            self.running.set((id, 0));
        }
    }

    fn handle(state: Rc<RefCell<State>>, msg: ToWorker) {
        match msg {
            ToWorker::Cancel { id } => {
                // Answer at once: a GPU step can take seconds on a software adapter, and the
                // page must not wait for it. The sampling loop stops after the current step,
                // and a new request waits for it (see Generate below).
                let s = state.borrow();
                s.cancelled.set(id);
                let (running, step) = s.running.get();
                if running == id && s.busy.get() {
                    post(&FromWorker::Cancelled { id, step });
                }
            }
            ToWorker::Crash => panic!("the page asked the worker to crash (a test hook)"),
            ToWorker::LoseDevice => match state.borrow().destroy_gpu.clone() {
                Some(destroy) => destroy(),
                None => post(&FromWorker::Error {
                    message: "There is no GPU device to lose: the model runs on the CPU.".into(),
                }),
            },
            ToWorker::Load {
                url,
                backend,
                upsampler,
                max_buffer,
                weights_dtype,
                cpu_memory,
            } => {
                let dtype = match weights_dtype.as_deref() {
                    None => None,
                    Some("f16") => Some(ParamStorage::F16),
                    Some("f32") => Some(ParamStorage::F32),
                    Some(other) => {
                        post(&FromWorker::Error {
                            message: format!(
                                "weights_dtype={other} is neither f16 nor f32: remove it from \
                                 the address, or use one of those."
                            ),
                        });
                        return;
                    }
                };
                let mut s = state.borrow_mut();
                s.max_buffer = max_buffer;
                s.cpu_memory = cpu_memory;
                s.weights_dtype = dtype;
                drop(s);
                let up = upsampler.map(Source::Url);
                start_load(state, Source::Url(url), up, backend);
            }
            ToWorker::Edit {
                id,
                request,
                image,
                mask,
                weights,
                upsampler,
                upsample_respacing,
            } => {
                let Some(slot) = Slot::claim(&state) else {
                    return;
                };
                spawn_local(async move {
                    slot.start(id).await;
                    let models = EditModels {
                        weights,
                        upsampler,
                        upsample_respacing,
                    };
                    let r = edit(&state, &slot, id, request, image, mask, models).await;
                    slot.busy.set(false);
                    if let Err(message) = r {
                        post(&FromWorker::Error { message });
                    }
                });
            }
            ToWorker::Generate {
                id,
                request,
                upsample_respacing,
                clip,
            } => {
                let Some(slot) = Slot::claim(&state) else {
                    return;
                };
                spawn_local(async move {
                    slot.start(id).await;
                    let ctx = slot.context();
                    let up = upsample_respacing;
                    let r = match (&*slot.loaded, clip) {
                        (_, Some(g)) => generate_clip_guided(&state, &slot, id, request, g).await,
                        (Loaded::Gpu(Model::One(p)), None) => run(p, id, request, &ctx).await,
                        (Loaded::Cpu(Model::One(p)), None) => run(p, id, request, &ctx).await,
                        (Loaded::Gpu(Model::Cascade(c)), None) => {
                            run_cascade(c, id, request, up, &ctx).await
                        }
                        (Loaded::Cpu(Model::Cascade(c)), None) => {
                            run_cascade(c, id, request, up, &ctx).await
                        }
                    };
                    slot.busy.set(false);
                    if let Err(message) = r {
                        post(&FromWorker::Error { message });
                    }
                });
            }
        }
    }

    /// Loads a model in the background (the worker is busy meanwhile).
    fn start_load(
        state: Rc<RefCell<State>>,
        source: Source,
        upsampler: Option<Source>,
        backend: BackendChoice,
    ) {
        let busy = state.borrow().busy.clone();
        busy.set(true);
        spawn_local(async move {
            if let Err(message) = load(state, source, upsampler, backend).await {
                post(&FromWorker::Error { message });
            }
            busy.set(false);
        });
    }

    /// One generation with CLIP guidance: the CLIP at `g.url` (loaded on first use and kept
    /// until another model loads) guides the loaded model's chain.
    async fn generate_clip_guided(
        state: &Rc<RefCell<State>>,
        slot: &Slot,
        id: u64,
        request: GenerateRequest,
        g: glide_web::ClipGuidance,
    ) -> Result<(), String> {
        let cached = state.borrow().clip.clone().filter(|(u, _)| *u == g.url);
        let clip = match cached {
            Some((_, c)) => c,
            None => {
                let vocab = state.borrow().vocab.clone();
                let c = Rc::new(loading::load_clip(&g.url, slot.gpu, vocab.as_deref()).await?);
                state.borrow_mut().clip = Some((g.url.clone(), c.clone()));
                c
            }
        };
        let ctx = slot.context();
        match (&*slot.loaded, &*clip) {
            (Loaded::Gpu(Model::One(p)), LoadedClip::Gpu(c)) => {
                run_clip_guided(p, c, g.scale, id, request, &ctx).await
            }
            (Loaded::Cpu(Model::One(p)), LoadedClip::Cpu(c)) => {
                run_clip_guided(p, c, g.scale, id, request, &ctx).await
            }
            (Loaded::Gpu(Model::Cascade(_)) | Loaded::Cpu(Model::Cascade(_)), _) => Err(
                "CLIP guidance works with a single model, not a cascade; set CLIP guidance to 0."
                    .into(),
            ),
            _ => Err("The CLIP and the model run on different backends; reload the page.".into()),
        }
    }

    /// A message that is not JSON: weights the visitor picked (see [`LOAD_FILES`]).
    fn handle_object(state: Rc<RefCell<State>>, data: &JsValue) {
        let kind = Reflect::get(data, &"type".into())
            .ok()
            .and_then(|t| t.as_string());
        if kind.as_deref() != Some(LOAD_FILES) {
            post(&FromWorker::Error {
                message: "The worker got a message it does not understand; reload the page.".into(),
            });
            return;
        }
        let backend = Reflect::get(data, &"backend".into())
            .ok()
            .and_then(|b| b.as_string())
            .map_or(BackendChoice::Auto, |b| BackendChoice::parse(&b));
        let files = loading::files_of(data);
        if files.is_empty() {
            post(&FromWorker::Error {
                message: "No files arrived; pick the weights again.".into(),
            });
            return;
        }
        start_load(state, Source::Files(files), None, backend);
    }

    pub fn start() {
        console_error_panic_hook::set_once();
        let state = Rc::new(RefCell::new(State::default()));
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let Some(text) = e.data().as_string() else {
                handle_object(state.clone(), &e.data());
                return;
            };
            match serde_json::from_str::<ToWorker>(&text) {
                Ok(msg) => handle(state.clone(), msg),
                Err(e) => post(&FromWorker::Error {
                    message: format!("The worker got a message it does not understand: {e}"),
                }),
            }
        });
        scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();
        post(&FromWorker::Started);
    }
}

fn main() {
    #[cfg(target_arch = "wasm32")]
    imp::start();
}
