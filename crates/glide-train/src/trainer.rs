//! Training a diffusion model: restore the run ([`RunState`]), then the shared optimisation loop
//! ([`run_steps`]) with the run directory's hooks ([`Hooks`]) after each step.

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use std::path::PathBuf;
use std::sync::Arc;

use crate::TrainError;
use crate::batch::{BatchMaker, Prefetcher};
use crate::config::{TrainConfig, TrainOptions};
use crate::hooks::Hooks;
use crate::log::LogRow;
use crate::run_loop::{Budget, Clock, run_steps};
use crate::run_state::RunState;
use crate::step::StepContext;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub step: usize,
    pub rows: Vec<LogRow>,
    /// Stopped early by Ctrl-C, `max_minutes` or `stop_after` (a checkpoint was written).
    pub interrupted: bool,
    /// Training images per second over this invocation (excluding evaluation and sampling).
    pub images_per_s: f64,
    pub out_dir: PathBuf,
    /// Parameters of the trained model (with its pruned vocabulary).
    pub params: usize,
    /// Steps skipped because their loss or gradients were not finite.
    pub skipped_steps: usize,
}

/// Trains (or resumes) a model as `cfg` says, on `devices` (the batch is split evenly over them).
pub fn train<B: AutodiffBackend>(
    cfg: TrainConfig,
    devices: Vec<B::Device>,
    opts: TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    cfg.validate(devices.len())?;
    let (state, data) = RunState::<B>::restore(cfg, &devices[0], &opts)?;
    let cfg = state.cfg.clone();
    let num_timesteps = cfg.model.diffusion_steps;
    let mut hooks = Hooks::new(&state, &data, num_timesteps, opts.quiet)?;
    let maker = BatchMaker::new(
        Arc::new(data.train),
        state.tokenizer()?,
        &cfg,
        num_timesteps,
    );
    let start = state.step;
    let mut batches = Prefetcher::start(maker, start, cfg.steps, 4);
    let mut clock = Clock::start(state.elapsed_before);
    let ctx = StepContext {
        settings: cfg.step_settings(),
        devices: &devices,
        objective: state.objective.as_ref(),
    };
    let budget = Budget {
        steps: cfg.steps,
        max_minutes: cfg.max_minutes,
        stop_after: opts.stop_after,
        nonfinite_limit: cfg.nonfinite_limit(),
    };
    let (learner, end) = run_steps(
        state.learner,
        start,
        &budget,
        &ctx,
        &mut batches,
        &mut clock,
        &mut hooks,
    )?;
    drop(batches);
    hooks.finish(start, end.step, &learner, &devices[0], &clock)?;
    Ok(TrainOutcome {
        step: end.step,
        rows: hooks.log.rows,
        interrupted: end.interrupted,
        images_per_s: clock.images_per_s(),
        out_dir: PathBuf::from(&cfg.out_dir),
        params: learner.model.num_params(),
        skipped_steps: end.skipped,
    })
}
