//! The optimisation loop every run shares (the diffusion trainer's `train`, the
//! CLIP trainer's `train_clip`): steps on prefetched batches, non-finite steps skipped, the run's
//! hooks after each step, stopped by its budget or Ctrl-C; and the clock that times it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::TrainError;
use crate::batch::Prefetcher;
use crate::run_state::Learner;
use crate::step::{StepContext, StepStats};

/// Wall time and images of this invocation (training steps only, not evaluation or sampling).
pub struct Clock {
    t0: Instant,
    before: f64,
    train_time: f64,
    pub images: usize,
}

impl Clock {
    /// A clock for a run that has trained `before` seconds in earlier invocations.
    pub fn start(before: f64) -> Self {
        Self {
            t0: Instant::now(),
            before,
            train_time: 0.0,
            images: 0,
        }
    }

    /// Counts one step of `images` that took `since.elapsed()`.
    pub fn count(&mut self, since: Instant, images: usize) {
        self.train_time += since.elapsed().as_secs_f64();
        self.images += images;
    }

    /// Training images per second in this invocation.
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / self.train_time.max(1e-9)
    }

    /// Wall time of the whole run so far (all invocations), in seconds.
    pub fn run_seconds(&self) -> f64 {
        self.before + self.t0.elapsed().as_secs_f64()
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another handler may exist in an embedding program; training then just isn't interruptible.
        // Ctrl-C, SIGTERM and SIGHUP (ctrlc's `termination` feature). The terminal may be gone
        // (SIGHUP), so the message must not panic on a failed write.
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            let _ = writeln!(
                std::io::stderr(),
                "\nstop asked (Ctrl-C, SIGTERM or SIGHUP): finishing this step and writing a \
                 checkpoint (ask again to quit at once)"
            );
        });
    });
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
    /// `last`: the run stops after this step (its step count, budget or Ctrl-C), so its
    /// evaluation belongs in the log whatever `eval_every` says.
    fn after_step(
        &mut self,
        step: usize,
        last: bool,
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
/// step taken. Ctrl-C, SIGTERM or SIGHUP stops it between steps.
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
    // A stop asked while a step runs or its hooks run ends the run after the next step taken,
    // which its hooks see as `last` (so it is evaluated and checkpointed).
    if start < budget.steps && should_stop(budget, start, clock) {
        end.interrupted = true;
        return Ok((learner, end));
    }
    while end.step < budget.steps {
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
            if should_stop(budget, end.step, clock) {
                end.interrupted = true;
                break;
            }
            continue;
        }
        skipped_in_a_row = 0;
        let stop = should_stop(budget, end.step, clock);
        let last = end.step >= budget.steps || stop;
        hooks.after_step(end.step, last, &stats, &learner, ctx, clock)?;
        if stop && end.step < budget.steps {
            end.interrupted = true;
            break;
        }
    }
    Ok((learner, end))
}

/// Ctrl-C (or SIGTERM/SIGHUP), `stop_after` or `max_minutes` (over all invocations of the run).
fn should_stop(budget: &Budget, step: usize, clock: &Clock) -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
        || budget.stop_after.is_some_and(|s| step >= s)
        || budget
            .max_minutes
            .is_some_and(|m| clock.run_seconds() >= m * 60.0)
}
