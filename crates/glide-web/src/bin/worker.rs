//! The web worker: owns the model, runs sampling off the UI thread, posts every step.
//! Built by trunk as `worker.js` + `worker_bg.wasm` (with a loader shim).

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use burn::backend::Flex;
    use burn::backend::wgpu::{RuntimeOptions, WebGpu, WgpuDevice, graphics, init_setup_async};
    use burn::tensor::backend::Backend;
    use glide_diffusion::SampleStep;
    use glide_pipeline::image::{batch_to_rgb8, encode_png};
    use glide_pipeline::mask::rgb8_to_chw;
    use glide_pipeline::{EditInput, EditRequest, GenerateRequest, Text2Im, UserMask};
    use glide_web::{BackendChoice, FromWorker, ToWorker};
    use js_sys::{Promise, Reflect};
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::{JsFuture, spawn_local};
    use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

    enum Loaded {
        Gpu(Text2Im<WebGpu>),
        Cpu(Text2Im<Flex>),
    }

    #[derive(Default)]
    struct State {
        loaded: Option<Rc<Loaded>>,
        model_name: String,
        /// The inpainting model, loaded on the first edit that asks for it: (url, model).
        edit_model: Option<(String, Rc<Loaded>)>,
        /// The base model runs on WebGPU (the inpainting model then does too).
        gpu: bool,
        /// WebGPU has been set up (once per worker; a second model reuses it).
        gpu_initialised: bool,
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
    use weights_cache::fetch_weights;

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

    /// Sets up a model from safetensors bytes on WebGPU or the CPU.
    /// `first` sets the GPU up (once per worker).
    async fn build(bytes: &[u8], use_gpu: bool, url: &str, first: bool) -> Result<Loaded, String> {
        let bad =
            |e: glide_pipeline::PipelineError| format!("The weights at {url} cannot be used: {e}");
        Ok(if use_gpu && !first {
            Loaded::Gpu(
                Text2Im::<WebGpu>::from_safetensors(bytes, &WgpuDevice::default()).map_err(bad)?,
            )
        } else if use_gpu {
            let device = WgpuDevice::default();
            let setup =
                init_setup_async::<graphics::WebGpu>(&device, RuntimeOptions::default()).await;
            // A lost device (driver reset, GPU process crash) cannot be recovered in place.
            setup.device.set_device_lost_callback(|reason, message| {
                post(&FromWorker::Error {
                    message: format!(
                        "The GPU device was lost ({reason:?}: {message}). Reload the page, or \
                         add ?backend=cpu to the address to run on the CPU."
                    ),
                });
            });
            Loaded::Gpu(Text2Im::<WebGpu>::from_safetensors(bytes, &device).map_err(bad)?)
        } else {
            Loaded::Cpu(Text2Im::<Flex>::from_safetensors(bytes, &Default::default()).map_err(bad)?)
        })
    }

    async fn load(
        state: Rc<RefCell<State>>,
        url: String,
        choice: BackendChoice,
    ) -> Result<(), String> {
        let bytes = fetch_weights(&url).await?;
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
        let first = !state.borrow().gpu_initialised;
        let loaded = build(&bytes, use_gpu, &url, first).await?;
        let (image_size, params, student_steps) = match &loaded {
            Loaded::Gpu(p) => (
                p.config.image_size,
                p.model.num_params(),
                p.config.student_steps,
            ),
            Loaded::Cpu(p) => (
                p.config.image_size,
                p.model.num_params(),
                p.config.student_steps,
            ),
        };
        let model = url.rsplit('/').next().unwrap_or(&url).to_string();
        {
            let mut s = state.borrow_mut();
            s.loaded = Some(Rc::new(loaded));
            s.model_name = model.clone();
            s.gpu = use_gpu;
            s.gpu_initialised |= use_gpu;
            // Another base model: an inpainting model loaded for the old one stays valid, but
            // drop it so its memory is freed until the next edit asks for it.
            s.edit_model = None;
        }
        post(&FromWorker::Ready {
            backend: if use_gpu { "webgpu" } else { "cpu" }.into(),
            note,
            image_size,
            params,
            model,
            student_steps,
        });
        Ok(())
    }

    use burn::module::Module;

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

    /// Drives a sampler: posts every step's preview, then the result (unless cancelled).
    async fn drive<B: Backend>(
        steps: impl Iterator<Item = SampleStep<B>>,
        job: Job<'_>,
    ) -> Result<(), String> {
        let (b, s, id) = (job.batch, job.size, job.id);
        let evals_per_step = job.evals_per_step;
        let start = js_sys::Date::now();
        let mut evaluations = 0;
        let mut done = 0;
        let mut last = None;
        for step in steps {
            evaluations += evals_per_step;
            done += 1;
            let x0 =
                step.pred_xstart.into_data_async().await.map_err(|e| {
                    format!("The GPU failed while sampling ({e:?}); reload the page.")
                })?;
            let x0 = x0.to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
            post(&FromWorker::Step {
                id,
                step: step.step,
                total: step.total,
                previews: batch_to_rgb8(&x0, b, s, s),
            });
            job.running.set((id, done));
            last = Some(step.sample);
            yield_now().await;
            if job.cancelled.get() == id {
                // The message handler already told the page (see `handle`).
                return Ok(());
            }
        }
        let elapsed = js_sys::Date::now() - start;
        let raw = last
            .ok_or("the chain has no steps")?
            .into_data_async()
            .await
            .map_err(|e| {
                format!("The GPU failed while reading the result ({e:?}); reload the page.")
            })?
            .to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        if job.cancelled.get() == id {
            return Ok(());
        }
        let pngs = batch_to_rgb8(&raw, b, s, s)
            .iter()
            .map(|rgb| encode_png(rgb, s, s, &job.png_text))
            .collect();
        post(&FromWorker::Done {
            id,
            pngs,
            raw,
            ms_per_step: elapsed / done.max(1) as f64,
            evaluations,
        });
        Ok(())
    }

    async fn run<B: Backend>(
        p: &Text2Im<B>,
        id: u64,
        req: GenerateRequest,
        model_name: &str,
        cancelled: &Cell<u64>,
        running: &Cell<(u64, usize)>,
    ) -> Result<(), String> {
        let steps = p.generate(&req).map_err(|e| e.to_string())?;
        let job = Job {
            id,
            batch: req.batch_size,
            size: p.config.image_size,
            evals_per_step: p.evaluations_per_step(&req),
            png_text: req.png_text(model_name),
            cancelled,
            running,
        };
        drive(steps, job).await
    }

    /// One edit: the picture at the model's size, the painted mask converted to the model's keep
    /// mask (the library's one conversion), then the library's `edit`.
    #[allow(clippy::too_many_arguments)]
    async fn run_edit<B: Backend>(
        p: &Text2Im<B>,
        id: u64,
        req: EditRequest,
        image: &[u8],
        mask: Option<UserMask>,
        model_name: &str,
        cancelled: &Cell<u64>,
        running: &Cell<(u64, usize)>,
    ) -> Result<(), String> {
        let s = p.config.image_size;
        if image.len() != s * s * 3 {
            return Err(format!(
                "The picture to edit must be {s}×{s} RGB; load it again."
            ));
        }
        let input = EditInput {
            image: rgb8_to_chw(image, s, s),
            keep: mask.as_ref().map(|m| m.keep_at(s)),
        };
        let steps = p.edit(&req, &input).map_err(|e| e.to_string())?;
        let mut png_text = req.generate.png_text(model_name);
        png_text.push(("strength".into(), req.strength.to_string()));
        let job = Job {
            id,
            batch: req.generate.batch_size,
            size: s,
            evals_per_step: p.evaluations_per_step(&req.generate),
            png_text,
            cancelled,
            running,
        };
        drive(steps, job).await
    }

    /// What a generation or an edit takes from the worker's state once it may run.
    struct Slot {
        loaded: Rc<Loaded>,
        name: String,
        cancelled: Rc<Cell<u64>>,
        busy: Rc<Cell<bool>>,
        running: Rc<Cell<(u64, usize)>>,
        gpu: bool,
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
            })
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
            ToWorker::Load { url, backend } => {
                let busy = state.borrow().busy.clone();
                busy.set(true);
                spawn_local(async move {
                    if let Err(message) = load(state, url, backend).await {
                        post(&FromWorker::Error { message });
                    }
                    busy.set(false);
                });
            }
            ToWorker::Edit {
                id,
                request,
                image,
                mask,
                weights,
            } => {
                let Some(slot) = Slot::claim(&state) else {
                    return;
                };
                spawn_local(async move {
                    slot.start(id).await;
                    let Slot {
                        loaded: base,
                        name,
                        cancelled,
                        busy,
                        running,
                        gpu,
                    } = slot;
                    let r = async {
                        let (model, name) = match weights {
                            None => (base, name),
                            Some(url) => {
                                let file = url.rsplit('/').next().unwrap_or(&url).to_string();
                                let cached =
                                    state.borrow().edit_model.clone().filter(|(u, _)| *u == url);
                                match cached {
                                    Some((_, m)) => (m, file),
                                    None => {
                                        let bytes = fetch_weights(&url).await?;
                                        let first = !state.borrow().gpu_initialised;
                                        let m = Rc::new(build(&bytes, gpu, &url, first).await?);
                                        state.borrow_mut().gpu_initialised |= gpu;
                                        state.borrow_mut().edit_model = Some((url, m.clone()));
                                        (m, file)
                                    }
                                }
                            }
                        };
                        let mask = match mask {
                            Some(m) => Some(m.to_user_mask().ok_or_else(|| {
                                "The mask arrived damaged; paint it again.".to_string()
                            })?),
                            None => None,
                        };
                        match &*model {
                            Loaded::Gpu(p) => {
                                run_edit(p, id, request, &image, mask, &name, &cancelled, &running)
                                    .await
                            }
                            Loaded::Cpu(p) => {
                                run_edit(p, id, request, &image, mask, &name, &cancelled, &running)
                                    .await
                            }
                        }
                    }
                    .await;
                    busy.set(false);
                    if let Err(message) = r {
                        post(&FromWorker::Error { message });
                    }
                });
            }
            ToWorker::Generate { id, request } => {
                let Some(slot) = Slot::claim(&state) else {
                    return;
                };
                spawn_local(async move {
                    slot.start(id).await;
                    let Slot {
                        loaded,
                        name,
                        cancelled,
                        busy,
                        running,
                        ..
                    } = slot;
                    let r = match &*loaded {
                        Loaded::Gpu(p) => run(p, id, request, &name, &cancelled, &running).await,
                        Loaded::Cpu(p) => run(p, id, request, &name, &cancelled, &running).await,
                    };
                    busy.set(false);
                    if let Err(message) = r {
                        post(&FromWorker::Error { message });
                    }
                });
            }
        }
    }

    pub fn start() {
        console_error_panic_hook::set_once();
        let state = Rc::new(RefCell::new(State::default()));
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let Some(text) = e.data().as_string() else {
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
