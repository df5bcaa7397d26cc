//! Exponential moving average of the weights (sampling uses it), matched to the live model by
//! parameter id.

use std::collections::HashMap;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use glide_model::Text2ImUNet;

/// The EMA weights of any model (the UNet by default), on the live model's inner (non-autodiff)
/// backend.
#[derive(Clone)]
pub struct Ema<B: Backend, M: Module<B> = Text2ImUNet<B>> {
    pub model: M,
    backend: std::marker::PhantomData<B>,
}

struct Collect<B: Backend>(HashMap<ParamId, Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let v = param.val();
        let n = v.shape().num_elements();
        self.0.insert(param.id, v.reshape([n]));
    }
}

struct Blend<B: Backend> {
    live: HashMap<ParamId, Tensor<B, 1>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, ema, _) = param.consume();
        let new = match self.live.remove(&id) {
            Some(live) => {
                let shape = ema.shape();
                ema.mul_scalar(self.decay) + live.reshape(shape).mul_scalar(1.0 - self.decay)
            }
            // A parameter the live model does not have cannot move.
            None => ema,
        };
        Param::initialized(id, new)
    }
}

impl<B: Backend, M: Module<B>> Ema<B, M> {
    /// Starts the average at `model` (which must share parameter ids with the live model: take it
    /// from `live.valid()`).
    pub fn new(model: M) -> Self {
        Self {
            model,
            backend: std::marker::PhantomData,
        }
    }

    /// ema ← decay·ema + (1 − decay)·live.
    pub fn update<AB, L>(&mut self, live: &L, decay: f64)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        L: AutodiffModule<AB, InnerModule = M>,
    {
        let mut collect = Collect(HashMap::new());
        live.valid().visit(&mut collect);
        let mut blend = Blend {
            live: collect.0,
            decay,
        };
        self.model = self.model.clone().map(&mut blend);
    }
}
