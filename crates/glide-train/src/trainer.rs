//! The training loop: restore the run ([`RunState`]), then optimisation steps
//! ([`crate::run_state::Learner::step`]) with the run directory's hooks ([`Hooks`]) after each.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;

use crate::TrainError;
use crate::batch::{BatchMaker, Prefetcher};
use crate::config::{TrainConfig, TrainOptions};
use crate::hooks::{Clock, Hooks};
use crate::log::LogRow;
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

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another handler may exist in an embedding program; training then just isn't interruptible.
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: writing a checkpoint (press Ctrl-C again to quit at once)");
        });
    });
}

/// Trains (or resumes) a model as `cfg` says, on `devices` (the batch is split evenly over them).
pub fn train<B: AutodiffBackend>(
    cfg: TrainConfig,
    devices: Vec<B::Device>,
    opts: TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    cfg.validate(devices.len())?;
    install_ctrlc();
    INTERRUPTED.store(false, Ordering::SeqCst);
    let (mut state, data) = RunState::<B>::restore(cfg, &devices[0], &opts)?;
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
        cfg: &cfg,
        devices: &devices,
        objective: state.objective.as_ref(),
    };
    let mut interrupted = false;
    let (mut skipped, mut skipped_in_a_row) = (0, 0);
    while state.step < cfg.steps {
        if should_stop(&cfg, &opts, state.step, &clock) {
            interrupted = true;
            break;
        }
        let Some(batch) = batches.next_batch() else {
            break;
        };
        let t = Instant::now();
        let (learner, stats) = state.learner.step(&ctx, &batch, state.step)?;
        state.learner = learner;
        state.step += 1;
        clock.count(t, batch.len());
        if stats.skipped {
            skipped += 1;
            skipped_in_a_row += 1;
            hooks.bar.println(format!(
                "step {}: loss {} / gradient norm {} not finite: skipped ({skipped_in_a_row} in a \
                 row, {skipped} in all)",
                state.step, stats.loss, stats.grad_norm
            ));
            if skipped_in_a_row >= cfg.nonfinite_limit() {
                return Err(TrainError::NonFinite(
                    stats.loss,
                    state.step,
                    skipped_in_a_row,
                ));
            }
            continue;
        }
        skipped_in_a_row = 0;
        hooks.after_step(state.step, &stats, &state.learner, &ctx, &clock)?;
    }
    drop(batches);
    let (step, learner) = (state.step, &state.learner);
    hooks.finish(start, step, learner, &devices[0], &clock)?;
    Ok(TrainOutcome {
        step,
        rows: hooks.log.rows,
        interrupted,
        images_per_s: clock.images_per_s(),
        out_dir: PathBuf::from(&cfg.out_dir),
        params: learner.model.num_params(),
        skipped_steps: skipped,
    })
}

/// Ctrl-C, `stop_after` or `max_minutes` (over all invocations of the run).
fn should_stop(cfg: &TrainConfig, opts: &TrainOptions, step: usize, clock: &Clock) -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
        || opts.stop_after.is_some_and(|s| step >= s)
        || cfg
            .max_minutes
            .is_some_and(|m| clock.run_seconds() >= m * 60.0)
}
