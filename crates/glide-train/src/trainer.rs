//! The training loop: restore the run ([`RunState`]), then optimisation steps ([`run_steps`]:
//! [`Learner::step`] with the run directory's hooks ([`Hooks`]) after each). The CLIP trainer
//! (`crate::clip_train`) runs the same loop over its own model and hooks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;

use crate::TrainError;
use crate::batch::{BatchMaker, Prefetcher};
use crate::config::{TrainConfig, TrainOptions};
use crate::hooks::{Clock, Hooks};
use crate::log::LogRow;
use crate::run_state::{Learner, RunState};
use crate::step::{StepContext, StepStats};

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

/// When a run stops: its step count, its wall-time budget over all invocations, a test's
/// `stop_after`, and how many non-finite steps in a row end it.
pub struct Budget {
    pub steps: usize,
    pub max_minutes: Option<f64>,
    pub stop_after: Option<usize>,
    pub nonfinite_limit: usize,
}

/// Where a run's steps ended.
pub struct StepsDone {
    pub step: usize,
    /// Stopped early by Ctrl-C, `max_minutes` or `stop_after`.
    pub interrupted: bool,
    /// Steps skipped because their loss or gradients were not finite.
    pub skipped: usize,
}

/// What a run does after each step it took (progress, logs, evaluation, checkpoints): the
/// diffusion run's [`Hooks`], the CLIP run's `ClipHooks`.
pub trait AfterStep<B: AutodiffBackend, M: AutodiffModule<B>> {
    fn after_step(
        &mut self,
        step: usize,
        stats: &StepStats,
        learner: &Learner<B, M>,
        ctx: &StepContext<'_, B, M>,
        clock: &Clock,
    ) -> Result<(), TrainError>;

    /// A line above the progress bar.
    fn println(&self, line: String);
}

/// The optimisation loop of any run: steps `start..budget.steps` on the prefetched batches, a
/// non-finite step skipped (the run stops after `nonfinite_limit` in a row), `hooks` after each
/// step taken. Ctrl-C stops it between steps.
pub fn run_steps<B: AutodiffBackend, M: AutodiffModule<B>>(
    mut learner: Learner<B, M>,
    start: usize,
    budget: &Budget,
    ctx: &StepContext<'_, B, M>,
    batches: &mut Prefetcher,
    clock: &mut Clock,
    hooks: &mut dyn AfterStep<B, M>,
) -> Result<(Learner<B, M>, StepsDone), TrainError> {
    install_ctrlc();
    INTERRUPTED.store(false, Ordering::SeqCst);
    let mut end = StepsDone {
        step: start,
        interrupted: false,
        skipped: 0,
    };
    let mut skipped_in_a_row = 0;
    while end.step < budget.steps {
        if should_stop(budget, end.step, clock) {
            end.interrupted = true;
            break;
        }
        let Some(batch) = batches.next_batch() else {
            break;
        };
        let t = Instant::now();
        let (next, stats) = learner.step(ctx, &batch, end.step)?;
        learner = next;
        end.step += 1;
        clock.count(t, batch.len());
        if stats.skipped {
            end.skipped += 1;
            skipped_in_a_row += 1;
            hooks.println(format!(
                "step {}: loss {} / gradient norm {} not finite: skipped ({skipped_in_a_row} in a \
                 row, {} in all)",
                end.step, stats.loss, stats.grad_norm, end.skipped
            ));
            if skipped_in_a_row >= budget.nonfinite_limit {
                return Err(TrainError::NonFinite(
                    stats.loss,
                    end.step,
                    skipped_in_a_row,
                ));
            }
            continue;
        }
        skipped_in_a_row = 0;
        hooks.after_step(end.step, &stats, &learner, ctx, clock)?;
    }
    Ok((learner, end))
}

/// Ctrl-C, `stop_after` or `max_minutes` (over all invocations of the run).
fn should_stop(budget: &Budget, step: usize, clock: &Clock) -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
        || budget.stop_after.is_some_and(|s| step >= s)
        || budget
            .max_minutes
            .is_some_and(|m| clock.run_seconds() >= m * 60.0)
}
