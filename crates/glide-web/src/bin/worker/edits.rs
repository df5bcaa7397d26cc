// Edits in the worker: one inpainting model or the base model (replacement trick), or GLIDE's
// inpainting cascade; the models loaded on first use. Included into `imp` in worker.rs.

/// One edit: the picture at the model's size, the painted mask converted to the model's keep
/// mask (the library's one conversion), then the library's `edit`.
async fn run_edit<B: Backend>(
    p: &Text2Im<B>,
    id: u64,
    req: EditRequest,
    image: &[u8],
    mask: Option<UserMask>,
    ctx: &RunContext<'_>,
) -> Result<(), String> {
    check_batch(p, &req.generate, ctx.limits)?;
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
    let mut png_text = req.generate.png_text(ctx.model_name);
    png_text.push(("strength".into(), req.strength.to_string()));
    let job = Job {
        id,
        batch: req.generate.batch_size,
        size: s,
        evals_per_step: p.evaluations_per_step(&req.generate),
        png_text,
        cancelled: ctx.cancelled,
        running: ctx.running,
    };
    drive(steps, job).await
}

/// Which models an edit runs on (see [`ToWorker::Edit`]).
struct EditModels {
    weights: Option<String>,
    upsampler: Option<String>,
    upsample_respacing: Option<String>,
}

/// The inpainting model at `url` (with `upsampler`: the inpainting cascade), loaded on first
/// use and kept until another base model loads.
async fn edit_model(
    state: &Rc<RefCell<State>>,
    gpu: bool,
    url: &str,
    upsampler: Option<&str>,
) -> Result<(Rc<Loaded>, String), String> {
    let source = Source::Url(url.to_string());
    let mut name = source.name();
    let key = match upsampler {
        Some(up) => {
            let up_name = Source::Url(up.to_string()).name();
            name = format!("{name} + {up_name}");
            format!("{url} + {up}")
        }
        None => url.to_string(),
    };
    let cached = state.borrow().edit_model.clone().filter(|(k, _)| *k == key);
    if let Some((_, m)) = cached {
        return Ok((m, name));
    }
    let (mut m, _) = load_one(state, &source, gpu, &Cell::new(None)).await?;
    if let Some(up) = upsampler {
        let (u, _) = load_one(state, &Source::Url(up.into()), gpu, &Cell::new(None)).await?;
        m = loading::build_cascade(m, u, true)?;
    }
    let m = Rc::new(m);
    state.borrow_mut().edit_model = Some((key, m.clone()));
    Ok((m, name))
}

/// One edit with the inpainting model at `models.weights` (or GLIDE's inpainting cascade with
/// `models.upsampler`), or the base model with the replacement trick.
async fn edit(
    state: &Rc<RefCell<State>>,
    slot: &Slot,
    id: u64,
    request: EditRequest,
    image: Vec<u8>,
    mask: Option<glide_web::EditMask>,
    models: EditModels,
) -> Result<(), String> {
    let (model, name) = match &models.weights {
        None => (slot.loaded.clone(), slot.name.clone()),
        Some(url) => edit_model(state, slot.gpu, url, models.upsampler.as_deref()).await?,
    };
    let mask = match mask {
        Some(m) => Some(
            m.to_user_mask()
                .ok_or_else(|| "The mask arrived damaged; paint it again.".to_string())?,
        ),
        None => None,
    };
    let ctx = RunContext {
        model_name: &name,
        ..slot.context()
    };
    let up = models.upsample_respacing;
    match &*model {
        Loaded::Gpu(Model::Cascade(c)) if c.edits() => {
            run_cascade_edit(c, id, request, &image, mask, up, &ctx).await
        }
        Loaded::Cpu(Model::Cascade(c)) if c.edits() => {
            run_cascade_edit(c, id, request, &image, mask, up, &ctx).await
        }
        Loaded::Gpu(m) => run_edit(m.base(), id, request, &image, mask, &ctx).await,
        Loaded::Cpu(m) => run_edit(m.base(), id, request, &image, mask, &ctx).await,
    }
}
