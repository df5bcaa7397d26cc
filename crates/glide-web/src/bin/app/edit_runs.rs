// The editor's runs: what the page sends the worker for an edit, and the worker's answers that
// belong to it. Included into the page module (`app.rs`), whose state it works on.

impl App {
    /// Sends the editor's picture, mask and settings to the worker (or says what is missing).
    fn run_edit(&mut self) {
        self.editor.error = None;
        self.editor.notice = None;
        let mask = match self.editor.mask_for_run() {
            Ok(m) => m,
            Err(e) => {
                // Nothing runs; the picture and mask stay as they are.
                self.editor.error = Some(e);
                set_edit_state("error");
                return;
            }
        };
        let Some(image) = self.editor.image.clone() else {
            return;
        };
        if let Some((input, mask_png)) = self.editor.input_pngs() {
            publish(
                "editInputPng",
                &js_sys::Uint8Array::from(input.as_slice()).into(),
            );
            publish(
                "editMaskPng",
                &js_sys::Uint8Array::from(mask_png.as_slice()).into(),
            );
        }
        let id = self.next_id;
        self.next_id += 1;
        let e = &self.editor;
        let request = EditRequest {
            generate: GenerateRequest {
                prompt: e.prompt.clone(),
                negative: self.settings.negative.clone(),
                guidance_scale: e.guidance,
                steps: self.settings.steps,
                sampler: self.settings.sampler,
                seed: self.settings.seed,
                batch_size: 1,
                ..Default::default()
            },
            strength: e.strength,
            method: e.method,
        };
        // A masked edit uses the inpainting model unless told otherwise; a whole-picture
        // img2img runs on the base model (as `glide img2img` without --mask does).
        // An inpainting cascade edits every picture (masked or not) with its two models.
        let cascade = self.cascade_edit();
        let weights = (cascade
            || e.method != EditMethod::Replace && mask.is_some() && !self.inpaint_url.is_empty())
        .then(|| self.inpaint_url.clone());
        let upsampler = cascade.then(|| self.upsample_inpaint_url.clone());
        let up = self.up_respacing.trim();
        let upsample_respacing = (cascade && !up.is_empty()).then(|| up.to_string());
        let s = self.editor.size;
        let keep = mask
            .as_ref()
            .map_or_else(|| vec![0.0; s * s], |m| m.keep_at(s));
        publish(
            "editKeep",
            &js_sys::Float32Array::from(keep.as_slice()).into(),
        );
        let chw = glide_pipeline::mask::rgb8_to_chw(&image, s, s);
        publish(
            "editInput",
            &js_sys::Float32Array::from(chw.as_slice()).into(),
        );
        send(
            &self.worker,
            &ToWorker::Edit {
                id,
                request,
                image,
                mask: mask.as_ref().map(EditMask::from),
                weights,
                upsampler,
                upsample_respacing,
            },
        );
        self.editor.running = Some(id);
        self.editor.step = (0, 0);
        self.editor.preview = None;
        set_edit_state("running");
    }

    /// Worker messages that belong to the running edit; the rest come back.
    fn on_edit_message(&mut self, m: FromWorker) -> Option<FromWorker> {
        let Some(eid) = self.editor.running else {
            return Some(m);
        };
        match m {
            FromWorker::Progress { loaded, .. } => {
                self.editor.notice = Some(format!(
                    "Loading the inpainting model: {:.1} MB",
                    loaded as f64 / 1e6
                ));
            }
            FromWorker::Step {
                id,
                step,
                total,
                previews,
                size,
                ..
            } if id == eid => {
                self.editor.step = (step, total);
                self.editor.notice = None;
                // A cascade's base stage previews at its own (smaller) size.
                let s = self.editor.size;
                self.editor.preview = previews
                    .into_iter()
                    .next()
                    .map(|p| if size == 0 || size == s { p } else { nearest(&p, size, s) });
            }
            FromWorker::Done {
                id,
                pngs,
                raw,
                ms_per_step,
                evaluations,
            } if id == eid => {
                let s = self.editor.size;
                self.editor.result = batch_to_rgb8(&raw, 1, s, s).into_iter().next();
                if let Some(old) = self.editor.result_url.take() {
                    let _ = Url::revoke_object_url(&old);
                }
                self.editor.result_url = pngs.first().and_then(|p| png_url(p));
                self.editor.show_result = true;
                self.editor.running = None;
                self.editor.notice = Some(format!(
                    "Done: {ms_per_step:.0} ms per step, {evaluations} UNet evaluations."
                ));
                publish(
                    "editRaw",
                    &js_sys::Float32Array::from(raw.as_slice()).into(),
                );
                publish("editEvaluations", &JsValue::from_f64(evaluations as f64));
                set_edit_state("done");
            }
            FromWorker::Cancelled { id, step } if id == eid => {
                self.editor.running = None;
                self.editor.notice = Some(format!("Cancelled after step {step}."));
                set_edit_state("cancelled");
            }
            FromWorker::Error { message } => {
                web_sys::console::error_1(&JsValue::from_str(&message));
                self.editor.running = None;
                self.editor.error = Some(message);
                set_edit_state("error");
            }
            other => return Some(other),
        }
        None
    }
}

/// RGB at side `from` → side `to`, nearest neighbour (a preview only).
fn nearest(rgb: &[u8], from: usize, to: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(to * to * 3);
    for y in 0..to {
        for x in 0..to {
            let p = ((y * from / to) * from + x * from / to) * 3;
            out.extend_from_slice(&rgb[p..p + 3]);
        }
    }
    out
}
