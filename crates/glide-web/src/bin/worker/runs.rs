// Sampling runs in the worker: a chain (or a cascade's two) driven step by step with previews
// posted to the page, cancellable between steps, and the finished PNGs; batches the GPU's
// buffers cannot hold are refused first. Included into `imp` in worker.rs.

/// Runs one stage's chain, posting every step's preview; its last sample, or `None` when
/// the page cancelled. `done` counts the steps of all stages.
async fn drive_stage<B: Backend>(
    steps: impl Iterator<Item = SampleStep<B>>,
    job: &Job<'_>,
    stage: usize,
    size: usize,
    done: &mut usize,
) -> Result<Option<Tensor<B, 4>>, String> {
    let mut last = None;
    for step in steps {
        *done += 1;
        let x0 = step
            .pred_xstart
            .into_data_async()
            .await
            .map_err(|e| format!("The GPU failed while sampling ({e:?}); reload the page."))?;
        let x0 = x0.to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        post(&FromWorker::Step {
            id: job.id,
            step: step.step,
            total: step.total,
            previews: batch_to_rgb8(&x0, job.batch, size, size),
            stage,
            size,
        });
        job.running.set((job.id, *done));
        last = Some(step.sample);
        yield_now().await;
        if job.cancelled.get() == job.id {
            // The message handler already told the page (see `handle`).
            return Ok(None);
        }
    }
    last.map(Some)
        .ok_or_else(|| "the chain has no steps".to_string())
}

/// Posts the finished samples (`size`² each) unless the page cancelled meanwhile.
async fn finish<B: Backend>(
    sample: Tensor<B, 4>,
    job: &Job<'_>,
    size: usize,
    (start, done, evaluations): (f64, usize, usize),
) -> Result<(), String> {
    let elapsed = js_sys::Date::now() - start;
    let raw = sample
        .into_data_async()
        .await
        .map_err(|e| format!("The GPU failed while reading the result ({e:?}); reload the page."))?
        .to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    if job.cancelled.get() == job.id {
        return Ok(());
    }
    let pngs = batch_to_rgb8(&raw, job.batch, size, size)
        .iter()
        .map(|rgb| encode_png(rgb, size, size, &job.png_text))
        .collect();
    post(&FromWorker::Done {
        id: job.id,
        pngs,
        raw,
        ms_per_step: elapsed / done.max(1) as f64,
        evaluations,
    });
    Ok(())
}

/// Drives a sampler: posts every step's preview, then the result (unless cancelled).
async fn drive<B: Backend>(
    steps: impl Iterator<Item = SampleStep<B>>,
    job: Job<'_>,
) -> Result<(), String> {
    let start = js_sys::Date::now();
    let mut done = 0;
    let Some(x) = drive_stage(steps, &job, 0, job.size, &mut done).await? else {
        return Ok(());
    };
    let evaluations = done * job.evals_per_step;
    finish(x, &job, job.size, (start, done, evaluations)).await
}

/// Refuses a batch the GPU's buffers cannot hold (on WebGPU), before it runs.
fn check_batch<B: Backend>(
    p: &Text2Im<B>,
    req: &GenerateRequest,
    limits: Option<GpuLimits>,
) -> Result<(), String> {
    match limits {
        Some(l) => check_gpu_fit(
            &p.config,
            req.batch_size,
            p.evaluations_per_step(req) == 2,
            &l,
        )
        .map(|_| ())
        .map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

async fn run<B: Backend>(
    p: &Text2Im<B>,
    id: u64,
    req: GenerateRequest,
    ctx: &RunContext<'_>,
) -> Result<(), String> {
    check_batch(p, &req, ctx.limits)?;
    let steps = p.generate(&req).map_err(|e| e.to_string())?;
    let job = Job {
        id,
        batch: req.batch_size,
        size: p.config.image_size,
        evals_per_step: p.evaluations_per_step(&req),
        png_text: req.png_text(ctx.model_name),
        cancelled: ctx.cancelled,
        running: ctx.running,
    };
    drive(steps, job).await
}

/// A chain guided by `clip`'s gradient (scale `clip_scale`) besides classifier-free guidance.
async fn run_clip_guided<B: Backend, A: AutodiffBackend<InnerBackend = B>>(
    p: &Text2Im<B>,
    clip: &NoisedClip<A>,
    clip_scale: f64,
    id: u64,
    req: GenerateRequest,
    ctx: &RunContext<'_>,
) -> Result<(), String> {
    check_batch(p, &req, ctx.limits)?;
    let steps = p
        .generate_clip_guided(&req, clip, clip_scale)
        .map_err(|e| e.to_string())?;
    let mut png_text = req.png_text(ctx.model_name);
    png_text.push(("clip_guidance".into(), clip_scale.to_string()));
    let job = Job {
        id,
        batch: req.batch_size,
        size: p.config.image_size,
        evals_per_step: p.evaluations_per_step(&req),
        png_text,
        cancelled: ctx.cancelled,
        running: ctx.running,
    };
    drive(steps, job).await
}

/// GLIDE's cascade: the base model's chain, then the upsampler's from its sample.
async fn run_cascade<B: Backend>(
    c: &Cascade<B>,
    id: u64,
    req: GenerateRequest,
    upsample_respacing: Option<String>,
    ctx: &RunContext<'_>,
) -> Result<(), String> {
    check_batch(&c.base, &req, ctx.limits)?;
    check_batch(
        &c.upsampler,
        &GenerateRequest {
            guidance_scale: 1.0,
            ..req.clone()
        },
        ctx.limits,
    )?;
    let options = UpsampleOptions {
        respacing: upsample_respacing.unwrap_or_else(|| UpsampleOptions::default().respacing),
        ..Default::default()
    };
    let mut png_text = req.png_text(ctx.model_name);
    png_text.push(("upsample_respacing".into(), options.respacing.clone()));
    let job = Job {
        id,
        batch: req.batch_size,
        size: c.base.config.image_size,
        evals_per_step: c.base.evaluations_per_step(&req),
        png_text,
        cancelled: ctx.cancelled,
        running: ctx.running,
    };
    let steps = c.base_steps(&req).map_err(|e| e.to_string())?;
    let up_size = c.upsampler.config.image_size;
    let upsample = |low| c.upsample_steps(low, &req, &options).map_err(|e| e.to_string());
    drive_cascade(steps, upsample, up_size, job).await
}

/// Drives a cascade: the base stage's chain `first`, then the upsampler's (`second`, made from
/// the base sample, `up_size`² images); posts every step of both, then the result.
async fn drive_cascade<B, S1, S2, F>(
    first: S1,
    second: F,
    up_size: usize,
    job: Job<'_>,
) -> Result<(), String>
where
    B: Backend,
    S1: Iterator<Item = SampleStep<B>>,
    S2: Iterator<Item = SampleStep<B>>,
    F: FnOnce(Tensor<B, 4>) -> Result<S2, String>,
{
    let start = js_sys::Date::now();
    let mut done = 0;
    let Some(low) = drive_stage(first, &job, 0, job.size, &mut done).await? else {
        return Ok(());
    };
    let base_steps = done;
    let Some(up) = drive_stage(second(low)?, &job, 1, up_size, &mut done).await? else {
        return Ok(());
    };
    // the upsampler runs unguided: one evaluation per step
    let evaluations = base_steps * job.evals_per_step + (done - base_steps);
    finish(up, &job, up_size, (start, done, evaluations)).await
}

/// GLIDE's inpainting cascade: the base inpainting model at its size (the picture box-averaged
/// down), then the upsampling inpainting model from its sample. `image` is RGB at the upsampler's
/// size.
async fn run_cascade_edit<B: Backend>(
    c: &Cascade<B>,
    id: u64,
    req: EditRequest,
    image: &[u8],
    mask: Option<UserMask>,
    upsample_respacing: Option<String>,
    ctx: &RunContext<'_>,
) -> Result<(), String> {
    if req.method == glide_pipeline::EditMethod::Replace {
        return Err(
            "The inpainting cascade fills the mask with its inpainting models; set the method to \
             Auto or Model."
                .into(),
        );
    }
    let (low_s, high_s) = (c.base.config.image_size, c.upsampler.config.image_size);
    let (low_in, high_in) = cascade_inputs(image, mask.as_ref(), low_s, high_s).map_err(|_| {
        format!("The picture to edit must be {high_s}×{high_s} RGB; load it again.")
    })?;
    check_batch(&c.base, &req.generate, ctx.limits)?;
    let options = UpsampleOptions {
        respacing: upsample_respacing.unwrap_or_else(|| UpsampleOptions::default().respacing),
        ..Default::default()
    };
    let mut png_text = req.generate.png_text(ctx.model_name);
    png_text.push(("strength".into(), req.strength.to_string()));
    png_text.push(("upsample_respacing".into(), options.respacing.clone()));
    let job = Job {
        id,
        batch: req.generate.batch_size,
        size: low_s,
        evals_per_step: c.base.evaluations_per_step(&req.generate),
        png_text,
        cancelled: ctx.cancelled,
        running: ctx.running,
    };
    let steps = c.edit_steps(&req, &low_in).map_err(|e| e.to_string())?;
    let upsample = |low| {
        c.upsample_edit_steps(low, &req, &high_in, &options)
            .map_err(|e| e.to_string())
    };
    drive_cascade(steps, upsample, high_s, job).await
}

/// What every run shares: the model's name for the PNGs, the cancel and progress flags, and
/// the GPU's limits (on WebGPU).
struct RunContext<'a> {
    model_name: &'a str,
    cancelled: &'a Cell<u64>,
    running: &'a Cell<(u64, usize)>,
    limits: Option<GpuLimits>,
}
