//! One optimisation step: each worker's loss and gradients on its share of the batch, global-norm
//! clipping, the AdamW step and the EMA update; and the held-out evaluation on the same losses.

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend, DeviceOps};
use burn::tensor::{Tensor, TensorData};
use glide_diffusion::losses::LossTerms;
use glide_diffusion::{GaussianDiffusion, ModelMeanType};
use glide_model::{ImageCond, Text2ImUNet};

use crate::TrainError;
use crate::batch::{Batch, mix};
use crate::config::TrainConfig;
use crate::distill::{Teacher, student_losses};
use crate::optim::clip_global_norm;
use crate::run_state::Learner;

/// What one optimisation step reports: the loss terms (means over the batch), the gradient norm
/// before clipping and the learning rate.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f64,
    pub mse: f64,
    pub vb: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

/// What a step needs besides the learner: the devices, the chain and the teacher.
pub struct StepContext<'a, B: AutodiffBackend> {
    pub cfg: &'a TrainConfig,
    pub devices: &'a [B::Device],
    pub diffusion: &'a GaussianDiffusion,
    pub teacher: Option<&'a Teacher<B::InnerBackend>>,
}

impl<B: AutodiffBackend> Learner<B> {
    /// Optimisation step `step` on `batch`: dropout and anything else random is seeded from the
    /// step, so a resumed run repeats it bit for bit.
    pub fn step(
        self,
        ctx: &StepContext<'_, B>,
        batch: &Batch,
        step: usize,
    ) -> Result<(Self, StepStats), TrainError> {
        let Self {
            model,
            mut optim,
            mut ema,
        } = self;
        let cfg = ctx.cfg;
        B::seed(&ctx.devices[0], mix(cfg.seed ^ 0xd209, step as u64));
        let lr = cfg.lr_at(step);
        let (mut loss, mut mse, mut vb) = (0.0, 0.0, 0.0);
        let mut grads = Vec::with_capacity(ctx.devices.len());
        let mut forked = Vec::with_capacity(ctx.devices.len());
        let parts = device_gradients(&model, ctx.devices, ctx.diffusion, batch, ctx.teacher, cfg);
        for part in parts {
            mse += part.mse;
            vb += part.vb;
            loss += part.loss;
            grads.push(part.grads);
            forked.push(part.device_id);
        }
        if !loss.is_finite() {
            return Err(TrainError::NonFinite(loss, step));
        }
        let grad_norm = clip_global_norm(&model, &mut grads, cfg.grad_clip);
        let model = if ctx.devices.len() == 1 {
            optim.step(lr, model, grads.pop().expect("one device's gradients"))
        } else {
            let multi = MultiGradientsParams {
                grads: grads.into_iter().zip(forked).collect(),
            };
            optim.step_multi(lr, model, multi)
        };
        ema.update(&model, cfg.ema_decay_at(step));
        let n = cfg.batch_size as f64;
        let stats = StepStats {
            loss,
            mse: mse / n,
            vb: vb / n,
            grad_norm,
            lr,
        };
        Ok((Self { model, optim, ema }, stats))
    }

    /// Held-out (loss, ε-MSE, vb) of the live and the EMA model: (live, EMA loss).
    pub fn evaluate(&self, ctx: &StepContext<'_, B>, eval: &Batch) -> ((f64, f64, f64), f64) {
        let (cfg, d, device) = (ctx.cfg, ctx.diffusion, &ctx.devices[0]);
        let live = evaluate_with(
            &self.model.valid(),
            d,
            eval,
            cfg.batch_size,
            device,
            ctx.teacher,
        );
        let (ema, _, _) = evaluate_with(
            &self.ema.model,
            d,
            eval,
            cfg.batch_size,
            device,
            ctx.teacher,
        );
        (live, ema)
    }
}

/// Tensors of `batch[lo..hi]` and the loss terms of `model` on them: the hybrid diffusion loss,
/// or with a teacher the distillation loss.
fn batch_losses<B: Backend, TB: Backend>(
    model: &Text2ImUNet<B>,
    diffusion: &GaussianDiffusion,
    batch: &Batch,
    rows: std::ops::Range<usize>,
    device: &B::Device,
    teacher: Option<&Teacher<TB>>,
    min_snr_gamma: Option<f64>,
) -> LossTerms<B> {
    let (lo, hi) = (rows.start, rows.end);
    if let Some(teacher) = teacher {
        let targets = teacher.targets(batch, lo, hi);
        return student_losses(model, diffusion, batch, lo, hi, targets, device);
    }
    let n = hi - lo;
    let px = batch.x_start.len() / batch.len();
    let side = ((px / 3) as f64).sqrt() as usize;
    let img = |v: &[f32]| {
        Tensor::<B, 4>::from_data(
            TensorData::new(v[lo * px..hi * px].to_vec(), [n, 3, side, side]),
            device,
        )
    };
    let x_start = img(&batch.x_start);
    let noise = img(&batch.noise);
    let t = &batch.t[lo..hi];
    let (tokens, mask) = batch.text_tensors::<B>(lo, hi, device);
    let x_t = diffusion.q_sample(x_start.clone(), t, noise.clone());
    let ts: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let ts = Tensor::<B, 1>::from_floats(ts.as_slice(), device);
    let cond = if batch.keep.is_empty() {
        ImageCond::none()
    } else {
        let keep = Tensor::<B, 4>::from_data(
            TensorData::new(
                batch.keep[lo * side * side..hi * side * side].to_vec(),
                [n, 1, side, side],
            ),
            device,
        );
        ImageCond::new(Some((x_start.clone(), keep)), None, side)
    };
    let out = model.forward(x_t.clone(), ts, tokens, mask, &cond);
    let weights = min_snr_gamma.map(|g| diffusion.min_snr_weights(t, g));
    diffusion.training_losses(out, x_start, x_t, t, noise, weights.as_deref())
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    f64::from(
        t.into_data()
            .convert::<f32>()
            .as_slice::<f32>()
            .expect("f32")[0],
    )
}

/// Mean (loss, mse, vb) of a model on the fixed held-out batch, in chunks: the unweighted loss
/// of its own objective, and the ε-MSE whatever it predicts (a v model's ε error is √ᾱ_t times
/// its v error), so that runs with either prediction compare.
pub fn evaluate<B: Backend>(
    model: &Text2ImUNet<B>,
    diffusion: &GaussianDiffusion,
    batch: &Batch,
    chunk: usize,
    device: &B::Device,
) -> (f64, f64, f64) {
    evaluate_with::<B, B>(model, diffusion, batch, chunk, device, None)
}

/// [`evaluate`] with the run's teacher, if it distils.
pub fn evaluate_with<B: Backend, TB: Backend>(
    model: &Text2ImUNet<B>,
    diffusion: &GaussianDiffusion,
    batch: &Batch,
    chunk: usize,
    device: &B::Device,
    teacher: Option<&Teacher<TB>>,
) -> (f64, f64, f64) {
    let (mut l, mut m, mut v) = (0.0, 0.0, 0.0);
    let mut lo = 0;
    let predict_v = diffusion.model_mean_type == ModelMeanType::V;
    while lo < batch.len() {
        let hi = (lo + chunk).min(batch.len());
        // Held-out losses are unweighted, comparable between recipes.
        let terms = batch_losses(model, diffusion, batch, lo..hi, device, teacher, None);
        l += scalar(terms.loss.sum());
        m += if predict_v && teacher.is_none() {
            let a: Vec<f32> = batch.t[lo..hi]
                .iter()
                .map(|&t| diffusion.alphas_cumprod[t] as f32)
                .collect();
            scalar((terms.mse * Tensor::<B, 1>::from_floats(a.as_slice(), device)).sum())
        } else {
            scalar(terms.mse.sum())
        };
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
fn device_gradients<B: AutodiffBackend, TB: Backend>(
    model: &Text2ImUNet<B>,
    devices: &[B::Device],
    diffusion: &GaussianDiffusion,
    batch: &Batch,
    teacher: Option<&Teacher<TB>>,
    cfg: &TrainConfig,
) -> Vec<DeviceGradients> {
    let per_dev = cfg.batch_size / devices.len();
    let scale = 1.0 / cfg.batch_size as f64;
    let gamma = cfg.min_snr_gamma;
    let work = |m: Text2ImUNet<B>, d: usize, dev: &B::Device| {
        let (lo, hi) = (d * per_dev, (d + 1) * per_dev);
        let terms = batch_losses(&m, diffusion, batch, lo..hi, dev, teacher, gamma);
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
    if cfg.model.dropout > 0.0 {
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
                s.spawn(move || work(m, d, dev))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a training worker thread panicked"))
            .collect()
    })
}
