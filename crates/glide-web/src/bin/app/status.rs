// The page's status line and progress bar, the form's request, the URL/LocalStorage copy of the
// settings, and what the page does with each message from the worker. Included into `imp` in
// app.rs.

impl App {
    /// The line under the progress bar.
    fn status_text(&self) -> String {
        match &self.status {
            Status::Loading { loaded, total } if *total > 0 => format!(
                "Loading weights: {:.1} / {:.1} MB",
                *loaded as f64 / 1e6,
                *total as f64 / 1e6
            ),
            Status::Loading { loaded, .. } => {
                format!("Loading weights: {:.1} MB", *loaded as f64 / 1e6)
            }
            Status::Ready => "Ready.".into(),
            Status::Generating {
                step, total, stage, ..
            } => {
                let what = if *stage == 1 {
                    "Upsampler: step"
                } else {
                    "Step"
                };
                format!("{what} {step} / {total}")
            }
            Status::Done {
                ms_per_step,
                evaluations,
            } => format!(
                "Done: {ms_per_step:.0} ms per step, {evaluations} UNet evaluations per image."
            ),
            Status::Cancelled { step } => format!("Cancelled after step {step}."),
        }
    }

    /// The progress bar's (value, max).
    fn progress(&self) -> (f64, f64) {
        match &self.status {
            Status::Loading { loaded, total } => (*loaded as f64, (*total).max(1) as f64),
            Status::Generating { step, total, .. } => (*step as f64, *total as f64),
            _ => (1.0, 1.0),
        }
    }

    /// The form's request; a student's guidance is clamped to the range it was trained for.
    fn request(&self) -> GenerateRequest {
        let mut r = self.settings.request();
        let respacing = self.respacing.trim();
        if !respacing.is_empty() {
            r.respacing = Some(respacing.to_string());
        }
        if self.student_steps.is_some() {
            r.guidance_scale = r.guidance_scale.clamp(
                glide_pipeline::STUDENT_GUIDANCE.0,
                glide_pipeline::STUDENT_GUIDANCE.1,
            );
        }
        r
    }

    fn persist(&self) {
        if let Ok(Some(storage)) = window().local_storage() {
            if let Ok(text) = serde_json::to_string(&self.settings) {
                let _ = storage.set_item(STORAGE_KEY, &text);
            }
        }
        let q = query();
        self.settings.write_query(&q);
        if !self.fixed_weights {
            q.set("model", &self.model_id);
        }
        let url = format!("?{}", String::from(q.to_string()));
        if let Ok(h) = window().history() {
            let _ = h.replace_state_with_url(&JsValue::NULL, "", Some(&url));
        }
    }

    fn on_worker(&mut self, m: FromWorker) {
        let Some(m) = self.on_edit_message(m) else {
            return;
        };
        match m {
            FromWorker::Started => {
                self.worker_started = true;
                if self.may_load() {
                    self.send_load();
                }
            }
            needs @ FromWorker::Needs { .. } => self.on_needs(needs),
            FromWorker::Progress { loaded, total, .. } => {
                self.status = Status::Loading { loaded, total };
            }
            ready @ FromWorker::Ready { .. } => self.on_ready(ready),
            FromWorker::Step {
                id,
                step,
                total,
                previews,
                stage,
                size,
            } => {
                if matches!(self.status, Status::Generating { id: cur, .. } if cur == id) {
                    self.status = Status::Generating {
                        id,
                        step,
                        total,
                        stage,
                    };
                    if size > 0 {
                        self.preview_size = size;
                    }
                    if self.canvases.len() != previews.len() {
                        self.canvases = previews.iter().map(|_| NodeRef::default()).collect();
                    }
                    self.previews = previews;
                }
            }
            FromWorker::Done {
                pngs,
                raw,
                ms_per_step,
                evaluations,
                ..
            } => {
                self.downloads = pngs.iter().filter_map(|p| png_url(p)).collect();
                let s = self.preview_size;
                self.results = batch_to_rgb8(&raw, pngs.len(), s, s);
                publish("raw", &js_sys::Float32Array::from(raw.as_slice()).into());
                publish("msPerStep", &JsValue::from_f64(ms_per_step));
                publish("evaluations", &JsValue::from_f64(evaluations as f64));
                self.status = Status::Done {
                    ms_per_step,
                    evaluations,
                };
            }
            FromWorker::Cancelled { step, .. } => {
                self.status = Status::Cancelled { step };
            }
            FromWorker::DeviceLost { message } => {
                web_sys::console::error_1(&JsValue::from_str(&message));
                self.on_crash(message);
            }
            FromWorker::Error { message } if self.restartable => {
                // The worker is already known to be broken (its GPU was lost): keep that
                // explanation and the Retry buttons.
                web_sys::console::error_1(&JsValue::from_str(&message));
            }
            FromWorker::Error { message } => {
                web_sys::console::error_1(&JsValue::from_str(&message));
                self.error = Some(message);
                // The model did not load: offer to try again.
                self.restartable = self.backend.is_none();
                self.status = if self.backend.is_some() {
                    Status::Ready
                } else {
                    Status::Loading {
                        loaded: 0,
                        total: 0,
                    }
                };
                if let Some(body) = window().document().and_then(|d| d.body()) {
                    let _ = body.set_attribute("data-error", "1");
                }
            }
        }
    }

    /// The model is loaded: publish what the tests read and size the previews.
    fn on_ready(&mut self, ready: FromWorker) {
        let FromWorker::Ready {
            backend,
            note,
            image_size,
            student_steps,
            output_size,
            model,
            weights_dtype,
            ..
        } = ready
        else {
            return;
        };
        publish("backend", &JsValue::from_str(&backend));
        publish("model", &JsValue::from_str(&model));
        publish("weightsDtype", &JsValue::from_str(&weights_dtype));
        self.ran_on_gpu = backend == "webgpu";
        publish(
            "studentSteps",
            &student_steps.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64)),
        );
        self.student_steps = student_steps;
        self.backend = Some(backend);
        self.note = note;
        self.image_size = image_size;
        self.preview_size = if output_size > 0 {
            output_size
        } else {
            image_size
        };
        // An inpainting cascade edits at the upsampler's size.
        self.editor.set_size(if self.cascade_edit() {
            self.preview_size
        } else {
            image_size
        });
        self.status = Status::Ready;
    }
}
