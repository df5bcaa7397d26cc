//! The mask-and-prompt editor: a picture (an uploaded or dropped file, or a generated image), a
//! mask painted over it with brush and eraser (mouse, pen or touch), and an edit run by the worker.
//! The mask logic is `glide_web::mask_canvas`; this file only draws it and turns events into
//! messages.

use glide_pipeline::image::encode_png;
use glide_pipeline::{EditMethod, UserMask};
use glide_web::mask_canvas::MaskCanvas;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    CanvasRenderingContext2d, DragEvent, File, HtmlCanvasElement, HtmlInputElement,
    HtmlSelectElement, ImageBitmap, ImageData, PointerEvent,
};
use yew::html::Scope;
use yew::prelude::*;

use crate::imp::{App, Msg};

/// Mask cells per side: 8 per model pixel, at most 256.
pub fn mask_res(image_size: usize) -> usize {
    (image_size * 8).min(256).max(image_size)
}

pub enum EditorMsg {
    /// Edit this RGB picture at the model's size.
    Open(Vec<u8>),
    /// A file was chosen or dropped: decode it.
    File(File),
    /// A mask file was chosen.
    MaskFile(File),
    Decoded(Result<Vec<u8>, String>),
    MaskDecoded(Result<(Vec<u8>, String), String>),
    Down(PointerEvent),
    Move(PointerEvent),
    Up,
    Eraser(bool),
    Brush(f64),
    Undo,
    Redo,
    Clear,
    Invert,
    Prompt(String),
    Guidance(f64),
    Strength(f64),
    Method(EditMethod),
    ToggleBefore,
    Apply,
}

pub struct Editor {
    pub size: usize,
    pub mask: MaskCanvas,
    /// RGB at the model's size.
    pub image: Option<Vec<u8>>,
    pub eraser: bool,
    /// Brush radius in mask cells.
    pub brush: f64,
    pub prompt: String,
    pub guidance: f64,
    pub strength: f64,
    pub method: EditMethod,
    /// Id of the running edit.
    pub running: Option<u64>,
    pub step: (usize, usize),
    pub preview: Option<Vec<u8>>,
    pub result: Option<Vec<u8>>,
    pub result_url: Option<String>,
    /// Show the result (else the picture with its mask).
    pub show_result: bool,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub canvas: NodeRef,
}

impl Editor {
    pub fn new() -> Self {
        Self {
            size: 0,
            mask: MaskCanvas::new(1),
            image: None,
            eraser: false,
            brush: 12.0,
            prompt: "a red heart".into(),
            guidance: 5.0,
            strength: 1.0,
            method: EditMethod::Auto,
            running: None,
            step: (0, 0),
            preview: None,
            result: None,
            result_url: None,
            show_result: false,
            notice: None,
            error: None,
            canvas: NodeRef::default(),
        }
    }

    /// The model's size is known (the worker is ready).
    pub fn set_size(&mut self, size: usize) {
        if self.size != size {
            self.size = size;
            self.mask = MaskCanvas::new(mask_res(size));
            self.image = None;
        }
    }

    fn cell(&self, e: &PointerEvent) -> Option<(f64, f64)> {
        let canvas = self.canvas.cast::<HtmlCanvasElement>()?;
        let w = f64::from(canvas.client_width().max(1));
        let h = f64::from(canvas.client_height().max(1));
        let res = self.mask.res as f64;
        Some((
            f64::from(e.offset_x()) * res / w,
            f64::from(e.offset_y()) * res / h,
        ))
    }

    /// Applies a message; `link` starts decoding for files.
    pub fn update(&mut self, msg: EditorMsg, link: &Scope<App>) {
        match msg {
            EditorMsg::Open(rgb) => {
                self.image = Some(rgb);
                self.show_result = false;
                self.error = None;
                self.notice = None;
            }
            EditorMsg::File(file) => {
                let (link, size) = (link.clone(), self.size);
                wasm_bindgen_futures::spawn_local(async move {
                    let r = decode(&file, size, size).await.map(|(rgba, _)| rgb(&rgba));
                    link.send_message(Msg::Editor(EditorMsg::Decoded(r)));
                });
            }
            EditorMsg::MaskFile(file) => {
                let (link, res) = (link.clone(), self.mask.res);
                wasm_bindgen_futures::spawn_local(async move {
                    let r = decode(&file, res, res).await.map(|(rgba, (w, h))| {
                        let note = if (w, h) == (res, res) {
                            String::new()
                        } else {
                            format!("The mask was {w}×{h}; it was resized to {res}×{res}.")
                        };
                        (rgba, note)
                    });
                    link.send_message(Msg::Editor(EditorMsg::MaskDecoded(r)));
                });
            }
            // A file that is not an image leaves the current picture and mask as they are.
            EditorMsg::Decoded(Err(e)) | EditorMsg::MaskDecoded(Err(e)) => self.error = Some(e),
            EditorMsg::Decoded(Ok(rgb)) => {
                self.update(EditorMsg::Open(rgb), link);
            }
            EditorMsg::MaskDecoded(Ok((rgba, note))) => {
                let res = self.mask.res;
                match UserMask::from_rgba(&rgba, res, res) {
                    Ok(m) => {
                        self.mask.set(&m);
                        self.show_result = false;
                        self.error = None;
                        self.notice = (!note.is_empty()).then_some(note);
                    }
                    Err(e) => self.error = Some(format!("That mask cannot be used: {e}.")),
                }
            }
            EditorMsg::Down(e) => {
                if self.running.is_some() {
                    return;
                }
                if let Some((x, y)) = self.cell(&e) {
                    if let Some(t) = e
                        .target()
                        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                    {
                        let _ = t.set_pointer_capture(e.pointer_id());
                    }
                    self.show_result = false;
                    self.mask.begin(x, y, self.brush, self.eraser);
                }
            }
            EditorMsg::Move(e) => {
                if self.mask.is_drawing()
                    && let Some((x, y)) = self.cell(&e)
                {
                    self.mask.extend(x, y, self.brush, self.eraser);
                }
            }
            EditorMsg::Up => self.mask.end(),
            EditorMsg::Eraser(on) => self.eraser = on,
            EditorMsg::Brush(r) => self.brush = r.clamp(1.0, 64.0),
            EditorMsg::Undo => {
                self.mask.undo();
                self.show_result = false;
            }
            EditorMsg::Redo => {
                self.mask.redo();
                self.show_result = false;
            }
            EditorMsg::Clear => {
                self.mask.clear();
                self.show_result = false;
            }
            EditorMsg::Invert => {
                self.mask.invert();
                self.show_result = false;
            }
            EditorMsg::Prompt(p) => self.prompt = p,
            EditorMsg::Guidance(g) => self.guidance = g.clamp(0.0, 30.0),
            EditorMsg::Strength(s) => self.strength = s.clamp(0.05, 1.0),
            EditorMsg::Method(m) => self.method = m,
            EditorMsg::ToggleBefore => self.show_result = !self.show_result,
            EditorMsg::Apply => {
                if let Some(r) = self.result.clone() {
                    self.image = Some(r);
                    self.show_result = false;
                }
            }
        }
    }

    /// The mask the next edit uses (`None` = change the whole picture), or a message.
    pub fn mask_for_run(&self) -> Result<Option<UserMask>, String> {
        if self.image.is_none() {
            return Err(
                "Open a picture first: upload or drop one, or press Edit under a \
                        generated image."
                    .into(),
            );
        }
        if self.mask.is_empty() {
            if self.strength >= 1.0 {
                return Err(
                    "Paint over the part to change first (or lower the strength below 1 \
                            to redraw the whole picture)."
                        .into(),
                );
            }
            return Ok(None);
        }
        Ok(Some(self.mask.to_user_mask()))
    }

    /// PNGs of the current input and mask (white = regenerate), for scripts and tests.
    pub fn input_pngs(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let img = self.image.as_ref()?;
        let res = self.mask.res;
        Some((
            encode_png(img, self.size, self.size, &[]),
            encode_png(&self.mask.to_user_mask().to_rgb8(), res, res, &[]),
        ))
    }

    /// Draws the picture (the live fill while running, the result, or the input with a red
    /// mask overlay) at mask resolution.
    pub fn draw(&self) {
        let Some(canvas) = self.canvas.cast::<HtmlCanvasElement>() else {
            return;
        };
        let Ok(Some(ctx)) = canvas.get_context("2d") else {
            return;
        };
        let ctx: CanvasRenderingContext2d = ctx.unchecked_into();
        let (s, res) = (self.size, self.mask.res);
        let (src, overlay) = match (&self.preview, &self.result, &self.image) {
            (Some(p), _, _) if self.running.is_some() => (p, false),
            (_, Some(r), _) if self.show_result => (r, false),
            (_, _, Some(i)) => (i, true),
            _ => return,
        };
        let cells = self.mask.cells();
        let mut rgba = Vec::with_capacity(res * res * 4);
        for y in 0..res {
            for x in 0..res {
                let p = ((y * s / res) * s + x * s / res) * 3;
                let (mut r, mut g, mut b) = (src[p] as f32, src[p + 1] as f32, src[p + 2] as f32);
                if overlay && cells[y * res + x] {
                    r = 0.45 * r + 0.55 * 255.0;
                    g *= 0.45;
                    b = 0.45 * b + 0.55 * 90.0;
                }
                rgba.extend_from_slice(&[r as u8, g as u8, b as u8, 255]);
            }
        }
        if let Ok(data) = ImageData::new_with_u8_clamped_array_and_sh(
            wasm_bindgen::Clamped(&rgba),
            res as u32,
            res as u32,
        ) {
            let _ = ctx.put_image_data(&data, 0.0, 0.0);
        }
    }

    pub fn view(&self, link: &Scope<App>, busy: bool) -> Html {
        let e = |f: fn(f64) -> EditorMsg| {
            link.callback(move |ev: Event| {
                let v = ev
                    .target_unchecked_into::<HtmlInputElement>()
                    .value_as_number();
                if v.is_finite() {
                    Msg::Editor(f(v))
                } else {
                    Msg::Noop
                }
            })
        };
        let file_cb = |mask: bool| {
            link.callback(move |ev: Event| {
                let input = ev.target_unchecked_into::<HtmlInputElement>();
                match input.files().and_then(|f| f.get(0)) {
                    Some(file) => {
                        input.set_value("");
                        Msg::Editor(if mask {
                            EditorMsg::MaskFile(file)
                        } else {
                            EditorMsg::File(file)
                        })
                    }
                    None => Msg::Noop,
                }
            })
        };
        let ondrop = link.callback(|ev: DragEvent| {
            ev.prevent_default();
            match ev
                .data_transfer()
                .and_then(|d| d.files())
                .and_then(|f| f.get(0))
            {
                Some(file) => Msg::Editor(EditorMsg::File(file)),
                None => Msg::Noop,
            }
        });
        let ondragover = Callback::from(|ev: DragEvent| ev.prevent_default());
        let on_method = link.callback(|ev: Event| {
            let v = ev.target_unchecked_into::<HtmlSelectElement>().value();
            Msg::Editor(EditorMsg::Method(v.parse().unwrap_or_default()))
        });
        let on_prompt = link.callback(|ev: InputEvent| {
            Msg::Editor(EditorMsg::Prompt(
                ev.target_unchecked_into::<HtmlInputElement>().value(),
            ))
        });
        let running = self.running.is_some();
        let res = self.mask.res.to_string();
        let status = match (&self.running, &self.notice) {
            (Some(_), _) => format!("Editing: step {} / {}", self.step.0, self.step.1),
            (None, Some(n)) => n.clone(),
            (None, None) if self.image.is_none() => {
                "Upload or drop a picture, or press Edit under a generated image.".into()
            }
            _ => "Paint over what should change, describe it, and press Run edit.".into(),
        };
        html! {
            <section id="editor" class="editor" {ondrop} {ondragover}>
                <h2>{ "Edit a picture" }</h2>
                <div class="row">
                    <label class="file">{ "Picture" }<input id="edit-upload" type="file" accept="image/*" onchange={file_cb(false)} /></label>
                    <label class="file">{ "Mask file" }<input id="edit-mask-upload" type="file" accept="image/*" onchange={file_cb(true)} /></label>
                </div>
                <div class="editor-body">
                    <canvas id="edit-canvas" ref={self.canvas.clone()} width={res.clone()} height={res}
                        class="edit-canvas"
                        onpointerdown={link.callback(|e: PointerEvent| Msg::Editor(EditorMsg::Down(e)))}
                        onpointermove={link.callback(|e: PointerEvent| Msg::Editor(EditorMsg::Move(e)))}
                        onpointerup={link.callback(|_| Msg::Editor(EditorMsg::Up))}
                        onpointercancel={link.callback(|_| Msg::Editor(EditorMsg::Up))}
                    ></canvas>
                    <div class="tools">
                        <div class="row">
                            <button id="edit-brush" class={classes!((!self.eraser).then_some("on"))} onclick={link.callback(|_| Msg::Editor(EditorMsg::Eraser(false)))}>{ "Brush" }</button>
                            <button id="edit-eraser" class={classes!(self.eraser.then_some("on"))} onclick={link.callback(|_| Msg::Editor(EditorMsg::Eraser(true)))}>{ "Eraser" }</button>
                            <label>{ "Size" }<input id="edit-size" type="range" min="1" max="64" step="1" value={self.brush.to_string()} onchange={e(EditorMsg::Brush)} /></label>
                        </div>
                        <div class="row">
                            <button id="edit-undo" disabled={!self.mask.can_undo()} onclick={link.callback(|_| Msg::Editor(EditorMsg::Undo))}>{ "Undo" }</button>
                            <button id="edit-redo" disabled={!self.mask.can_redo()} onclick={link.callback(|_| Msg::Editor(EditorMsg::Redo))}>{ "Redo" }</button>
                            <button id="edit-clear" onclick={link.callback(|_| Msg::Editor(EditorMsg::Clear))}>{ "Clear" }</button>
                            <button id="edit-invert" onclick={link.callback(|_| Msg::Editor(EditorMsg::Invert))}>{ "Invert" }</button>
                        </div>
                        <label>{ "Edit prompt" }<input id="edit-prompt" type="text" value={self.prompt.clone()} oninput={on_prompt} /></label>
                        <div class="row">
                            <label>{ "Guidance" }<input id="edit-guidance" type="number" min="0" max="30" step="0.5" value={self.guidance.to_string()} onchange={e(EditorMsg::Guidance)} /></label>
                            <label>{ format!("Strength {:.2}", self.strength) }<input id="edit-strength" type="range" min="0.05" max="1" step="0.05" value={self.strength.to_string()} onchange={e(EditorMsg::Strength)} /></label>
                            <label>{ "Method" }
                                <select id="edit-method" onchange={on_method}>
                                    <option value="auto" selected={self.method == EditMethod::Auto}>{ "Inpainting model" }</option>
                                    <option value="replace" selected={self.method == EditMethod::Replace}>{ "Replacement trick (base model)" }</option>
                                </select></label>
                        </div>
                        <div class="row">
                            <button id="edit-run" disabled={busy || running} onclick={link.callback(|_| Msg::EditRun)}>{ "Run edit" }</button>
                            <button id="edit-cancel" disabled={!running} onclick={link.callback(|_| Msg::Cancel)}>{ "Cancel" }</button>
                            <button id="edit-compare" disabled={self.result.is_none() || running} onclick={link.callback(|_| Msg::Editor(EditorMsg::ToggleBefore))}>
                                { if self.show_result { "Show before" } else { "Show after" } }</button>
                            <button id="edit-apply" disabled={self.result.is_none() || running} title="Keep editing from the result" onclick={link.callback(|_| Msg::Editor(EditorMsg::Apply))}>{ "Use result" }</button>
                            if let Some(url) = &self.result_url {
                                <a id="edit-download" class="download" href={url.clone()} download="glide-edit.png">{ "Download PNG" }</a>
                            }
                        </div>
                        <div id="edit-status">{ status }</div>
                        if let Some(err) = &self.error { <div id="edit-error" class="error">{ err }</div> }
                    </div>
                </div>
            </section>
        }
    }
}

fn rgb(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// The largest image file the editor decodes.
const MAX_FILE_BYTES: f64 = 64e6;
/// The most pixels the editor draws from (as `glide_data::imaging::MAX_IMAGE_PIXELS` natively).
const MAX_PIXELS: usize = 50_000_000;

/// Decodes an image file with the browser and draws it at `w × h`; returns RGBA and the file's
/// own size. A file the browser cannot read as an image is a readable error.
async fn decode(file: &File, w: usize, h: usize) -> Result<(Vec<u8>, (usize, usize)), String> {
    let name = file.name();
    let bad = || {
        format!(
            "{name:?} is not an image this browser can read (use PNG, JPEG or WebP); the current \
             picture and mask are unchanged."
        )
    };
    // The browser decodes the whole file before drawing it at 64 px: refuse what would take
    // hundreds of megabytes first (a 20,000 × 20,000 photo is 1.6 GB decoded).
    if file.size() > MAX_FILE_BYTES {
        return Err(format!(
            "{name:?} is {:.0} MB; the editor reads images up to {} MB (the model sees {w} px): \
             scale it down first. The current picture and mask are unchanged.",
            file.size() / 1e6,
            MAX_FILE_BYTES / 1e6
        ));
    }
    let window = web_sys::window().ok_or("no window")?;
    let promise = window
        .create_image_bitmap_with_blob(file)
        .map_err(|_| bad())?;
    let bitmap: ImageBitmap = JsFuture::from(promise)
        .await
        .map_err(|_| bad())?
        .unchecked_into();
    let own = (bitmap.width() as usize, bitmap.height() as usize);
    if own.0 as u64 * own.1 as u64 > MAX_PIXELS as u64 {
        bitmap.close();
        return Err(format!(
            "{name:?} is {}×{} pixels; the editor reads up to {} megapixels: scale it down first. \
             The current picture and mask are unchanged.",
            own.0,
            own.1,
            MAX_PIXELS / 1_000_000
        ));
    }
    let document = window.document().ok_or("no document")?;
    let canvas: HtmlCanvasElement = document
        .create_element("canvas")
        .map_err(|_| "cannot create a canvas")?
        .unchecked_into();
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    let ctx: CanvasRenderingContext2d = canvas
        .get_context("2d")
        .ok()
        .flatten()
        .ok_or("no 2d canvas")?
        .unchecked_into();
    ctx.set_image_smoothing_enabled(own != (w, h));
    ctx.draw_image_with_image_bitmap_and_dw_and_dh(&bitmap, 0.0, 0.0, w as f64, h as f64)
        .map_err(|_| bad())?;
    bitmap.close();
    let data = ctx
        .get_image_data(0.0, 0.0, w as f64, h as f64)
        .map_err(|e| format!("cannot read the picture back ({e:?})"))?;
    Ok((data.data().0, own))
}
