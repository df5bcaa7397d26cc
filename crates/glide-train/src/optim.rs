//! AdamW (burn's), global-norm gradient clipping, and the optimiser state as named tensors so a
//! checkpoint can hold it.

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, Optimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use glide_model::Text2ImUNet;

/// The optimiser of a run that trains `M` (the UNet by default).
pub type Adam<B, M = Text2ImUNet<B>> = OptimizerAdaptor<AdamW, M, B>;

/// What one optimisation step needs from any run's config (the diffusion trainer's
/// `TrainConfig`, the CLIP trainer's `ClipTrainConfig`): AdamW, clipping, the learning-rate
/// warm-up, the EMA and the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSettings {
    pub seed: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    /// Cosine decay of the learning rate after the warm-up (`None`: constant).
    pub lr_decay: Option<LrDecay>,
    pub weight_decay: f64,
    pub beta_1: f64,
    pub beta_2: f64,
    pub epsilon: f64,
    pub grad_clip: Option<f64>,
    pub ema_decay: f64,
    /// The batch's shares run one after another, not on parallel workers (dropout draws from
    /// the backend's one seeded RNG, and only a fixed order of draws keeps a resumed run
    /// bit-identical).
    pub sequential: bool,
}

impl StepSettings {
    /// Learning rate at step `step` (from 0): linear warm-up, then constant or `lr_decay`'s
    /// cosine.
    pub fn lr_at(&self, step: usize) -> f64 {
        let lr = self
            .lr_decay
            .as_ref()
            .map_or(self.lr, |d| d.lr_at(self.lr, step));
        if self.warmup_steps == 0 {
            lr
        } else {
            lr * ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
        }
    }

    /// EMA decay for the update after `n` earlier updates.
    pub fn ema_decay_at(&self, n: usize) -> f64 {
        self.ema_decay.min((1.0 + n as f64) / (10.0 + n as f64))
    }

    /// burn's AdamW with these settings; clipping is global (see [`clip_global_norm`]).
    pub fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> Adam<B, M> {
        AdamWConfig::new()
            .with_beta_1(self.beta_1 as f32)
            .with_beta_2(self.beta_2 as f32)
            .with_epsilon(self.epsilon as f32)
            .with_weight_decay(self.weight_decay as f32)
            .init()
    }
}

/// A cosine decay of the learning rate from the run's `lr` at `start_step` to `final_lr` at
/// `end_step`, `final_lr` after it. Steps count the whole run, so a `--resume`d run can anneal
/// its last part (e.g. `start_step` = the step it resumes from).
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct LrDecay {
    pub start_step: usize,
    pub end_step: usize,
    pub final_lr: f64,
}

impl LrDecay {
    /// The rate at `step` for a run whose constant rate is `lr`.
    pub fn lr_at(&self, lr: f64, step: usize) -> f64 {
        if step <= self.start_step {
            return lr;
        }
        if step >= self.end_step {
            return self.final_lr;
        }
        let span = (self.end_step - self.start_step) as f64;
        let progress = (step - self.start_step) as f64 / span;
        self.final_lr + 0.5 * (lr - self.final_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Tracks the module path while a visitor walks a model.
#[derive(Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn key(&self) -> String {
        self.0.join(".")
    }
}

/// Parameter ids, paths and shapes of a model, in visiting order.
struct Params {
    path: PathStack,
    out: Vec<(String, ParamId, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for Params {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.0.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out
            .push((self.path.key(), param.id, param.val().dims().to_vec()));
    }
}

fn params<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, ParamId, Vec<usize>)> {
    let mut v = Params {
        path: PathStack::default(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Scales the gradients (summed over devices) so their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`. Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &mut [GradientsParams],
    max_norm: Option<f64>,
) -> f64 {
    let device = model.devices()[0].clone();
    let ps = params::<B, _>(model);
    let mut total: Option<Tensor<B::InnerBackend, 1>> = None;
    for (_, id, shape) in &ps {
        let sq = match shape.len() {
            1 => sum_sq::<B, 1>(grads, *id, &device),
            2 => sum_sq::<B, 2>(grads, *id, &device),
            3 => sum_sq::<B, 3>(grads, *id, &device),
            4 => sum_sq::<B, 4>(grads, *id, &device),
            _ => None,
        };
        if let Some(sq) = sq {
            total = Some(match total {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
    let norm = total.map_or(0.0, |t| f64::from(t.sqrt().into_scalar().to_f32()));
    if let Some(max) = max_norm
        && norm > max
    {
        let scale = max / (norm + 1e-6);
        for (_, id, shape) in &ps {
            match shape.len() {
                1 => scale_grad::<B, 1>(grads, *id, scale),
                2 => scale_grad::<B, 2>(grads, *id, scale),
                3 => scale_grad::<B, 3>(grads, *id, scale),
                4 => scale_grad::<B, 4>(grads, *id, scale),
                _ => {}
            }
        }
    }
    norm
}

trait ToF32 {
    fn to_f32(self) -> f32;
}
impl<E: burn::tensor::Element> ToF32 for E {
    fn to_f32(self) -> f32 {
        burn::tensor::ElementConversion::elem(self)
    }
}

fn sum_sq<B: AutodiffBackend, const D: usize>(
    grads: &[GradientsParams],
    id: ParamId,
    device: &B::Device,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut sum: Option<Tensor<B::InnerBackend, D>> = None;
    for g in grads {
        if let Some(t) = g.get::<B::InnerBackend, D>(id) {
            let t = t.to_device(device);
            sum = Some(match sum {
                Some(s) => s + t,
                None => t,
            });
        }
    }
    sum.map(|s| s.square().sum())
}

fn scale_grad<B: AutodiffBackend, const D: usize>(
    grads: &mut [GradientsParams],
    id: ParamId,
    scale: f64,
) {
    for g in grads.iter_mut() {
        if let Some(t) = g.remove::<B::InnerBackend, D>(id) {
            g.register::<B::InnerBackend, D>(id, t.mul_scalar(scale));
        }
    }
}

/// The optimiser state as tensors `optim.<path>.m` / `.v` (f32) and each parameter's step count.
pub fn optimizer_state<B: AutodiffBackend, M: AutodiffModule<B>>(
    optim: &Adam<B, M>,
    model: &M,
) -> (BTreeMap<String, TensorData>, BTreeMap<String, usize>) {
    let records = optim.to_record();
    let mut tensors = BTreeMap::new();
    let mut times = BTreeMap::new();
    for (path, id, shape) in params::<B, _>(model) {
        let Some(rec) = records.get(&id) else {
            continue;
        };
        let (time, m, v) = match shape.len() {
            1 => moments::<B, 1>(rec.clone()),
            2 => moments::<B, 2>(rec.clone()),
            3 => moments::<B, 3>(rec.clone()),
            4 => moments::<B, 4>(rec.clone()),
            _ => continue,
        };
        tensors.insert(format!("optim.{path}.m"), m);
        tensors.insert(format!("optim.{path}.v"), v);
        times.insert(path, time);
    }
    (tensors, times)
}

fn moments<B: AutodiffBackend, const D: usize>(
    rec: AdaptorRecord<AdamW, B>,
) -> (usize, TensorData, TensorData) {
    let state: AdamWState<B::InnerBackend, D> = rec.into_state::<D>();
    let m = state.momentum;
    (m.time, m.moment_1.into_data(), m.moment_2.into_data())
}

/// Errors restoring the optimiser state.
#[derive(Debug, thiserror::Error)]
#[error(
    "the checkpoint's optimiser state does not fit this model ({0}); resume with the config it was \
     written with, or start over without --resume"
)]
pub struct OptimStateError(pub String);

/// Loads the state written by [`optimizer_state`] into a fresh optimiser for `model`.
pub fn load_optimizer_state<B: AutodiffBackend, M: AutodiffModule<B>>(
    optim: Adam<B, M>,
    model: &M,
    tensors: &BTreeMap<String, TensorData>,
    times: &BTreeMap<String, usize>,
) -> Result<Adam<B, M>, OptimStateError> {
    let inner_device = model.devices()[0].clone();
    let mut records: <Adam<B, M> as Optimizer<M, B>>::Record = Default::default();
    for (path, id, shape) in params::<B, _>(model) {
        let Some(&time) = times.get(&path) else {
            continue;
        };
        let get = |k: &str| {
            tensors
                .get(&format!("optim.{path}.{k}"))
                .cloned()
                .ok_or_else(|| OptimStateError(format!("optim.{path}.{k} is missing")))
        };
        let (m, v) = (get("m")?, get("v")?);
        if m.shape.to_vec() != shape || v.shape.to_vec() != shape {
            return Err(OptimStateError(format!(
                "{path} has shape {:?} in the checkpoint, {shape:?} in the model",
                m.shape
            )));
        }
        let rec = match shape.len() {
            1 => record::<B, 1>(time, m, v, &inner_device),
            2 => record::<B, 2>(time, m, v, &inner_device),
            3 => record::<B, 3>(time, m, v, &inner_device),
            4 => record::<B, 4>(time, m, v, &inner_device),
            n => return Err(OptimStateError(format!("{path} has rank {n}"))),
        };
        records.insert(id, rec);
    }
    Ok(optim.load_record(records))
}

fn record<B: AutodiffBackend, const D: usize>(
    time: usize,
    m: TensorData,
    v: TensorData,
    device: &B::Device,
) -> AdaptorRecord<AdamW, B> {
    let momentum = AdaptiveMomentumState {
        time,
        moment_1: Tensor::<B::InnerBackend, D>::from_data(m, device),
        moment_2: Tensor::<B::InnerBackend, D>::from_data(v, device),
        max_moment_2: None,
    };
    AdaptorRecord::from_state::<D>(AdamWState::new(momentum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_decay_is_a_cosine_between_its_steps_after_the_warm_up() {
        let mut cfg =
            crate::TrainConfig::new(glide_model::GlideConfig::tiny(), crate::DataConfig::new())
                .with_lr(1e-3)
                .with_warmup_steps(10);
        assert_eq!(cfg.lr_at(4), 1e-3 * 0.5);
        assert_eq!(cfg.lr_at(5_000), 1e-3);
        cfg.lr_decay = Some(LrDecay::new(1_000, 3_000, 1e-5));
        let s = cfg.step_settings();
        assert_eq!(s.lr_at(4), 1e-3 * 0.5, "the warm-up is unchanged");
        assert_eq!(s.lr_at(1_000), 1e-3);
        assert!(
            (s.lr_at(2_000) - (1e-3 + 1e-5) / 2.0).abs() < 1e-12,
            "half-way: the mean"
        );
        assert!(s.lr_at(2_500) < s.lr_at(2_000) && s.lr_at(2_500) > 1e-5);
        assert_eq!(s.lr_at(3_000), 1e-5);
        assert_eq!(s.lr_at(90_000), 1e-5);
        // A config without the key (every run before it) parses to the constant rate.
        let text = serde_json::to_string(&cfg.clone().with_lr_decay(None)).unwrap();
        let without: String = text.replace(",\"lr_decay\":null", "");
        assert!(!without.contains("lr_decay"));
        let parsed = crate::TrainConfig::parse(&without).unwrap();
        assert_eq!(parsed.lr_decay, None);
        assert_eq!(parsed.lr_at(90_000), 1e-3);
    }
}
