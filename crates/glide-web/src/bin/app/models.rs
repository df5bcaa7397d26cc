// The model picker: entries from `www/generated/models.json` (the bundled emoji model, and
// OpenAI's released GLIDE when `make serve` found its converted weights), or weights the visitor picks on
// their own disk (read by the worker; nothing is uploaded). Included into `imp` in app.rs.

/// Written by `scripts/web-models.mjs` at build time: the committed `www/models/models.json`, plus
/// OpenAI's released models when their converted weights are there.
const MODELS_URL: &str = "www/generated/models.json";

/// Fetches the picker's entries; the bundled model alone when the list cannot be read.
fn fetch_models(link: &html::Scope<App>) {
    let link = link.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let list = async {
            let resp: web_sys::Response =
                wasm_bindgen_futures::JsFuture::from(window().fetch_with_str(MODELS_URL))
                    .await
                    .ok()?
                    .dyn_into()
                    .ok()?;
            if !resp.ok() {
                return None;
            }
            let text = wasm_bindgen_futures::JsFuture::from(resp.text().ok()?)
                .await
                .ok()?
                .as_string()?;
            serde_json::from_str::<ModelList>(&text).ok()
        }
        .await;
        link.send_message(Msg::Models(list.unwrap_or_else(ModelList::bundled)));
    });
}

impl App {
    fn entry(&self) -> Option<&ModelEntry> {
        self.models.find(&self.model_id)
    }

    /// The editor runs GLIDE's inpainting cascade: the loaded model is a cascade whose entry has
    /// both inpainting models.
    fn cascade_edit(&self) -> bool {
        !self.inpaint_url.is_empty()
            && !self.upsample_inpaint_url.is_empty()
            && self.preview_size > self.image_size
            && self.local_files.is_none()
    }

    /// The model has a noised CLIP, and the full model (not a distilled student) is loaded.
    fn clip_available(&self) -> bool {
        !self.clip_url.is_empty() && self.student_steps.is_none() && self.local_files.is_none()
    }

    /// The CLIP guidance of the next generation, if it is on.
    fn clip_guidance(&self) -> Option<ClipGuidance> {
        (self.clip_available() && self.settings.clip_guidance > 0.0).then(|| ClipGuidance {
            url: self.clip_url.clone(),
            scale: self.settings.clip_guidance,
        })
    }

    /// The Load message for entry `e` (its distilled student when Quality is off).
    fn load_for(&self, e: &ModelEntry) -> ToWorker {
        let url = match (&e.student, self.settings.quality) {
            (Some(student), false) => student.clone(),
            _ => e.weights.clone(),
        };
        ToWorker::Load {
            url,
            backend: self.backend_choice,
            upsampler: e.upsampler.clone(),
            max_buffer: self.max_buffer,
            weights_dtype: self.weights_dtype.clone(),
            cpu_memory: self.cpu_memory,
        }
    }

    /// Switches to the picker's entry `id` and loads it.
    fn pick_model(&mut self, id: &str) {
        let Some(e) = self.models.find(id).cloned() else {
            self.error = Some(format!(
                "This server has no model {id:?}; pick one from the list."
            ));
            return;
        };
        self.model_id = e.id.clone();
        self.respacing = e.respacing.clone().unwrap_or_default();
        self.up_respacing = match (&e.upsample_respacing, &e.upsampler) {
            (Some(r), _) => r.clone(),
            (None, Some(_)) => "fast27".into(),
            (None, None) => String::new(),
        };
        self.inpaint_url = e.inpaint.clone().unwrap_or_default();
        self.upsample_inpaint_url = e.upsample_inpaint.clone().unwrap_or_default();
        self.clip_url = e.clip.clone().unwrap_or_default();
        self.local_files = None;
        self.load = self.load_for(&e);
        self.begin_load();
    }

    /// Shows the loading state and sends the load once the worker listens.
    fn begin_load(&mut self) {
        self.status = Status::Loading {
            loaded: 0,
            total: 0,
        };
        self.backend = None;
        self.needs = None;
        self.error = None;
        self.send_load();
        self.persist();
    }

    /// Sends the current load (the picked files, or the Load message) if the worker listens.
    fn send_load(&self) {
        if !self.worker_started {
            return;
        }
        match &self.local_files {
            Some(files) => {
                let msg = js_sys::Object::new();
                let set = |k: &str, v: &JsValue| {
                    let _ = js_sys::Reflect::set(&msg, &k.into(), v);
                };
                set("type", &glide_web::LOAD_FILES.into());
                set("files", files);
                let backend = match self.backend_choice {
                    BackendChoice::Auto => "auto",
                    BackendChoice::Webgpu => "webgpu",
                    BackendChoice::Cpu => "cpu",
                };
                set("backend", &backend.into());
                let _ = self.worker.post_message(&msg);
            }
            None => send(&self.worker, &self.load),
        }
    }

    /// Weights picked on the visitor's disk: one .safetensors, or an index with its shards.
    fn load_files(&mut self, files: js_sys::Array) {
        if files.length() == 0 {
            return;
        }
        self.local_files = Some(files);
        self.respacing.clear();
        self.up_respacing.clear();
        self.inpaint_url.clear();
        self.begin_load();
    }

    /// Whether the worker may load now: the picked entry is known (the list has arrived, or it
    /// is the bundled model every page has).
    fn may_load(&self) -> bool {
        self.models_loaded || self.model_id == "emoji" || self.fixed_weights
    }

    fn model_picker(&self, link: &html::Scope<App>, busy: bool) -> Html {
        let on_pick = link.callback(|e: Event| {
            Msg::PickModel(e.target_unchecked_into::<HtmlSelectElement>().value())
        });
        let on_files = link.callback(|e: Event| {
            let input = e.target_unchecked_into::<HtmlInputElement>();
            let files = js_sys::Array::new();
            if let Some(list) = input.files() {
                for i in 0..list.length() {
                    if let Some(f) = list.get(i) {
                        files.push(&f);
                    }
                }
            }
            Msg::Files(files)
        });
        let local = self.local_files.is_some();
        html! {
            <>
                <div class="row">
                    if !self.fixed_weights {
                        <label>{ "Model" }
                            <select id="model" disabled={busy} onchange={on_pick}>
                                { for self.models.models.iter().map(|m| html! {
                                    <option value={m.id.clone()} selected={!local && m.id == self.model_id}>{ &m.label }</option>
                                }) }
                                if local { <option value="" selected=true disabled=true>{ "weights from this computer" }</option> }
                            </select></label>
                    }
                    <label>{ "Or weights from this computer (.safetensors, or an index with its shards)" }
                        <input id="weights-file" type="file" multiple=true accept=".safetensors,.json" disabled={busy} onchange={on_files} /></label>
                </div>
                if !local && self.entry().is_some_and(|e| e.respacing.is_some()) {
                    <label>{ "Respacing (overrides Steps: \"fast27\", \"100\", \"ddim50\")" }
                        <input id="respacing" type="text" value={self.respacing.clone()}
                            oninput={link.callback(|e: InputEvent| Msg::Respacing(e.target_unchecked_into::<HtmlInputElement>().value(), false))} /></label>
                }
                if !local && self.entry().is_some_and(|e| e.upsampler.is_some()) {
                    <label>{ "Upsampler respacing" }
                        <input id="up-respacing" type="text" value={self.up_respacing.clone()}
                            oninput={link.callback(|e: InputEvent| Msg::Respacing(e.target_unchecked_into::<HtmlInputElement>().value(), true))} /></label>
                }
                if let Some(n) = &self.needs { <div id="needs" class="note">{ n }</div> }
            </>
        }
    }

    /// The worker's estimate of what the model asks for, as a line for the page: GPU memory
    /// and buffers on WebGPU (`limit_mb`), memory on the CPU.
    fn on_needs(&mut self, needs: FromWorker) {
        let FromWorker::Needs {
            weights_mb,
            total_mb,
            largest_buffer_mb: largest_mb,
            limit_mb,
            stages,
            f16,
        } = needs
        else {
            return;
        };
        let dtype = if f16 { "f16" } else { "f32" };
        let what = if stages > 1 {
            format!("Both stages need about {total_mb:.0} MB")
        } else {
            format!("This model needs about {total_mb:.0} MB")
        };
        self.needs = Some(match limit_mb {
            Some(l) => format!(
                "{what} of GPU memory ({weights_mb:.0} MB of weights in {dtype}), and buffers of \
                 up to {largest_mb:.0} MB (this GPU allows buffers of up to {l:.0} MB)."
            ),
            None => format!(
                "{what} of memory on the CPU ({weights_mb:.0} MB of weights in {dtype}); expect a \
                 much slower run than on a GPU."
            ),
        });
    }
}
