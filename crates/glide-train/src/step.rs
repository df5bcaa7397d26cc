//! One optimisation step: each worker's loss and gradients on its share of the batch, global-norm
//! clipping, the AdamW step and the EMA update; and the held-out evaluation on the same losses.

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend, DeviceOps};
use glide_diffusion::losses::LossTerms;
use glide_model::Text2ImUNet;

use crate::TrainError;
use crate::batch::{Batch, mix};
use crate::objective::Objective;
use crate::optim::{StepSettings, clip_global_norm};
use crate::run_state::Learner;

/// What one optimisation step reports: the loss terms (means over the batch), the gradient norm
/// before clipping and the learning rate.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// The loss or the gradient norm was not finite: nothing was updated.
    pub skipped: bool,
    pub loss: f64,
    pub mse: f64,
    pub vb: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

/// What a step needs besides the learner: the settings, the devices and the objective.
pub struct StepContext<'a, B: AutodiffBackend, M: AutodiffModule<B> = Text2ImUNet<B>> {
    pub settings: StepSettings,
    pub devices: &'a [B::Device],
    pub objective: &'a dyn Objective<B, M>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Learner<B, M> {
    /// Optimisation step `step` on `batch`: dropout and anything else random is seeded from the
    /// step, so a resumed run repeats it bit for bit.
    pub fn step(
        self,
        ctx: &StepContext<'_, B, M>,
        batch: &Batch,
        step: usize,
    ) -> Result<(Self, StepStats), TrainError> {
        let Self {
            model,
            mut optim,
            mut ema,
        } = self;
        let cfg = &ctx.settings;
        B::seed(&ctx.devices[0], mix(cfg.seed ^ 0xd209, step as u64));
        let lr = cfg.lr_at(step);
        let (mut loss, mut mse, mut vb) = (0.0, 0.0, 0.0);
        let mut grads = Vec::with_capacity(ctx.devices.len());
        let mut forked = Vec::with_capacity(ctx.devices.len());
        let parts = device_gradients(&model, ctx.devices, ctx.objective, batch, cfg);
        for part in parts {
            mse += part.mse;
            vb += part.vb;
            loss += part.loss;
            grads.push(part.grads);
            forked.push(part.device_id);
        }
        let n = cfg.batch_size as f64;
        let grad_norm = if loss.is_finite() {
            clip_global_norm(&model, &mut grads, cfg.grad_clip)
        } else {
            f64::NAN
        };
        if !grad_norm.is_finite() {
            let stats = StepStats {
                skipped: true,
                loss,
                mse: mse / n,
                vb: vb / n,
                grad_norm,
                lr,
            };
            return Ok((Self { model, optim, ema }, stats));
        }
        let model = if ctx.devices.len() == 1 {
            optim.step(lr, model, grads.pop().expect("one device's gradients"))
        } else {
            let multi = MultiGradientsParams {
                grads: grads.into_iter().zip(forked).collect(),
            };
            optim.step_multi(lr, model, multi)
        };
        ema.update(&model, cfg.ema_decay_at(step));
        let stats = StepStats {
            skipped: false,
            loss,
            mse: mse / n,
            vb: vb / n,
            grad_norm,
            lr,
        };
        Ok((Self { model, optim, ema }, stats))
    }

    /// Held-out (loss, mse, vb) of the live model and the loss of the EMA model.
    pub fn evaluate(&self, ctx: &StepContext<'_, B, M>, eval: &Batch) -> ((f64, f64, f64), f64) {
        let (chunk, device) = (ctx.settings.batch_size, &ctx.devices[0]);
        let live = self.model.valid();
        let live = evaluate(eval, chunk, |rows| {
            ctx.objective.heldout_losses(&live, eval, rows, device)
        });
        let (ema, _, _) = evaluate(eval, chunk, |rows| {
            ctx.objective
                .heldout_losses(&self.ema.model, eval, rows, device)
        });
        (live, ema)
    }
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    f64::from(
        t.into_data()
            .convert::<f32>()
            .as_slice::<f32>()
            .expect("f32")[0],
    )
}

/// Mean (loss, mse, vb) over the fixed held-out batch of the loss terms `terms` gives for its
/// row ranges, in chunks of `chunk` rows (e.g. [`Objective::heldout_losses`] of a model).
pub fn evaluate<B: Backend>(
    batch: &Batch,
    chunk: usize,
    terms: impl Fn(std::ops::Range<usize>) -> LossTerms<B>,
) -> (f64, f64, f64) {
    let (mut l, mut m, mut v) = (0.0, 0.0, 0.0);
    let mut lo = 0;
    while lo < batch.len() {
        let hi = (lo + chunk).min(batch.len());
        let terms = terms(lo..hi);
        l += scalar(terms.loss.sum());
        m += scalar(terms.mse.sum());
        v += scalar(terms.vb.sum());
        lo = hi;
    }
    let n = batch.len() as f64;
    (l / n, m / n, v / n)
}

/// One worker's share of a step: its loss terms (sums over its examples) and its gradients.
struct DeviceGradients {
    loss: f64,
    mse: f64,
    vb: f64,
    grads: GradientsParams,
    device_id: burn::tensor::backend::DeviceId,
}

/// The batch split evenly over `devices`, each share's loss and gradients computed on its own
/// thread (a forked copy of the model per device). Several entries of the same CPU device are
/// workers that keep every core busy: flex runs a small model's ops on one thread.
///
/// With dropout the shares run one after another instead: dropout draws from the backend's one
/// seeded RNG, and only a fixed order of draws keeps a resumed run bit-identical.
fn device_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    devices: &[B::Device],
    objective: &dyn Objective<B, M>,
    batch: &Batch,
    cfg: &StepSettings,
) -> Vec<DeviceGradients> {
    let per_dev = cfg.batch_size / devices.len();
    let scale = 1.0 / cfg.batch_size as f64;
    let work = |m: M, d: usize, dev: &B::Device| {
        let (lo, hi) = (d * per_dev, (d + 1) * per_dev);
        let terms = objective.losses(&m, batch, lo..hi, dev);
        let mse = scalar(terms.mse.clone().sum().detach());
        let vb = scalar(terms.vb.clone().sum().detach());
        let total = terms.loss.sum() * scale;
        let loss = scalar(total.clone().detach());
        let grads = GradientsParams::from_grads(total.backward(), &m);
        DeviceGradients {
            loss,
            mse,
            vb,
            grads,
            device_id: dev.id(),
        }
    };
    if devices.len() == 1 {
        return vec![work(model.clone(), 0, &devices[0])];
    }
    if cfg.sequential {
        let run = |(d, dev): (usize, &B::Device)| work(model.clone().fork(dev), d, dev);
        return devices.iter().enumerate().map(run).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(d, dev)| {
                let m = model.clone().fork(dev);
                let work = &work;
                s.spawn(move || on_own_thread(|| work(m, d, dev)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a training worker thread panicked"))
            .collect()
    })
}

/// Runs `f` with this thread as a rayon pool of one: flex parallelises a large op over rayon's
/// global pool, whose threads would then compete with the other workers for the same cores
/// (four busy threads on two cores); in a pool of one, each worker's ops stay on its own thread.
fn on_own_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .use_current_thread()
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
