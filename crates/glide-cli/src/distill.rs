//! `glide distill guidance` and `glide distill progressive`: the trainer with a teacher.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use glide_train::{DistillSpec, DistillStage, TrainOptions};

use crate::backend::{self, B};

#[derive(clap::Subcommand)]
pub enum DistillCommand {
    /// Stage 1 (Meng et al. 2023): a student whose one forward at scale s matches the teacher's
    /// classifier-free guided output at s (s ∈ [1, 9]); it predicts v and starts from the teacher.
    Guidance(DistillArgs),
    /// Stage 2 (Salimans & Ho 2022): rounds of halving the step count on the nested grid, each
    /// student's one DDIM step matching two of its teacher's, each round starting from the last.
    Progressive {
        #[command(flatten)]
        args: DistillArgs,
        /// The teacher's step count (64 for a guidance-distilled student).
        #[arg(long, default_value_t = 64)]
        from: usize,
        /// The last round's student step count.
        #[arg(long, default_value_t = 4)]
        to: usize,
    },
}

#[derive(clap::Args)]
pub struct DistillArgs {
    /// The teacher's weights (a run's ema.safetensors or an exported model).
    #[arg(long)]
    teacher: PathBuf,
    /// A `TrainConfig` JSON file (configs/distill-emoji32-cpu.json); its model options are
    /// replaced by the teacher's plus the student's.
    #[arg(long)]
    config: PathBuf,
    /// Continue (each round of) the run from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Overrides the config's out_dir (progressive rounds go to `<out_dir>/steps-N`).
    #[arg(long)]
    out_dir: Option<String>,
    /// Training steps (per round).
    #[arg(long)]
    steps: Option<usize>,
    /// Wall-clock minutes (per round).
    #[arg(long)]
    max_minutes: Option<f64>,
}

fn run_stage(a: &DistillArgs, teacher: &Path, stage: DistillStage, out_dir: String) -> Result<PathBuf> {
    if !teacher.exists() {
        bail!(
            "the teacher {} does not exist; pass --teacher with a .safetensors file",
            teacher.display()
        );
    }
    let mut cfg = crate::train::load_config(&a.config)?;
    cfg.out_dir = out_dir;
    if let Some(s) = a.steps {
        cfg.steps = s;
    }
    if a.max_minutes.is_some() {
        cfg.max_minutes = a.max_minutes;
    }
    eprintln!(
        "distilling ({stage:?}) from {} on {}, writing to {}",
        teacher.display(),
        backend::NAME,
        cfg.out_dir
    );
    let outcome = glide_train::train::<Autodiff<B>>(
        cfg,
        backend::devices(1),
        TrainOptions {
            resume: a.resume,
            init: Some(teacher.to_path_buf()),
            distill: Some(DistillSpec {
                teacher: teacher.to_path_buf(),
                stage,
            }),
            ..Default::default()
        },
    )?;
    let last = outcome.rows.last();
    eprintln!(
        "{} at step {}{}; student weights in {}",
        if outcome.interrupted { "stopped" } else { "done" },
        outcome.step,
        last.map(|r| format!(", last loss {:.4}", r.loss))
            .unwrap_or_default(),
        outcome.out_dir.join("ema.safetensors").display()
    );
    Ok(outcome.out_dir.join("ema.safetensors"))
}

pub fn run(cmd: DistillCommand) -> Result<()> {
    match cmd {
        DistillCommand::Guidance(a) => {
            let cfg = crate::train::load_config(&a.config)?;
            let out = a.out_dir.clone().unwrap_or(cfg.out_dir);
            run_stage(&a, &a.teacher, DistillStage::Guidance, out).map(|_| ())
        }
        DistillCommand::Progressive { args, from, to } => {
            if !(to >= 1 && from > to && from.is_power_of_two() && to.is_power_of_two()) {
                bail!("--from and --to must be powers of two with --from > --to (e.g. 64 and 4)");
            }
            let cfg = crate::train::load_config(&args.config)?;
            let root = args.out_dir.clone().unwrap_or(cfg.out_dir);
            let mut teacher = args.teacher.clone();
            let mut n = from;
            while n > to {
                let out = Path::new(&root).join(format!("steps-{}", n / 2));
                teacher = run_stage(
                    &args,
                    &teacher,
                    DistillStage::Progressive { teacher_steps: n },
                    out.to_string_lossy().into_owned(),
                )
                .with_context(|| format!("the round {n} → {} steps failed", n / 2))?;
                n /= 2;
            }
            eprintln!("the {to}-step student is {}", teacher.display());
            Ok(())
        }
    }
}
