//! `glide distill guidance` and `glide distill progressive`: the trainer with a teacher.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use glide_train::{DistillSpec, DistillStage, TrainOptions};

use crate::backend::{self, B};
use crate::train::RunArgs;

#[derive(clap::Subcommand)]
pub enum DistillCommand {
    /// Stage 1 (Meng et al. 2023): a student whose one forward at scale s matches the teacher's
    /// classifier-free guided output at s (s ∈ [1, 9]); it predicts v and starts from the teacher.
    Guidance {
        #[command(flatten)]
        args: DistillArgs,
        /// Start from these weights instead of the teacher's (an earlier guidance-distilled
        /// student, e.g. one trained on other data).
        #[arg(long)]
        init: Option<PathBuf>,
    },
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
    /// The teacher's own samples as a training folder (PNG + caption .txt) for its students:
    /// guided DDIM with captions from the training set and one s ∈ [1, 9] per batch. Point a
    /// distillation config's `data.folder` at it (configs/distill-guidance-emoji32-cpu.json).
    Samples(SamplesArgs),
    /// The teacher's guided DDIM chains on the nested 64-point grid, kept at every 8th position
    /// (PNG + caption .txt + .safetensors of the states), for `glide distill trajectory`.
    Trajectories(TrajectoriesArgs),
    /// Fine-tunes a distilled student on the teacher's stored chains (Luhman & Luhman 2021): one
    /// of its DDIM steps from a chain's state at grid position i must land on that chain's state
    /// at i − 64/N. Run after `glide distill progressive`, with `glide distill trajectories`.
    Trajectory {
        /// The folder written by `glide distill trajectories` (replaces the config's data).
        #[arg(long, default_value = "data/teacher-trajectories")]
        trajectories: PathBuf,
        /// The student to start from (runs/distill/student-4.safetensors).
        #[arg(long)]
        init: PathBuf,
        /// The student's step count: 1, 2, 4 or 8.
        #[arg(long, default_value_t = 4)]
        student_steps: usize,
        /// The config (configs/distill-trajectory-emoji32-cpu.json).
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(clap::Args)]
pub struct TrajectoriesArgs {
    /// The teacher (a base model).
    #[arg(long, default_value = "www/models/base.safetensors")]
    teacher: PathBuf,
    /// The shard directory whose training captions are drawn.
    #[arg(long, default_value = "data/emoji")]
    data: String,
    /// Chains to draw (64 guided steps each).
    #[arg(long, default_value_t = 512)]
    n: usize,
    /// Chains per batch (one guidance scale each).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The output folder.
    #[arg(long, default_value = "data/teacher-trajectories")]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct SamplesArgs {
    /// The teacher (a base model).
    #[arg(long, default_value = "www/models/base.safetensors")]
    teacher: PathBuf,
    /// The shard directory whose training captions are drawn.
    #[arg(long, default_value = "data/emoji")]
    data: String,
    /// Images to draw.
    #[arg(long, default_value_t = 1024)]
    n: usize,
    /// DDIM steps per image.
    #[arg(long, default_value_t = 16)]
    steps: usize,
    /// Images per batch (one guidance scale each).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The output folder.
    #[arg(long, default_value = "data/teacher-samples")]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct DistillArgs {
    /// The teacher's weights (a run's ema.safetensors or an exported model).
    #[arg(long)]
    teacher: PathBuf,
    /// The config (configs/distill-emoji32-cpu.json); its model options are replaced by the
    /// teacher's plus the student's. --steps and --max-minutes count per round; progressive
    /// rounds go to `<out_dir>/steps-N`.
    #[command(flatten)]
    run: RunArgs,
}

/// One stage into `out_dir` (None: the config's).
fn run_stage(
    run: &RunArgs,
    teacher: &Path,
    init: Option<&Path>,
    stage: DistillStage,
    out_dir: Option<String>,
) -> Result<PathBuf> {
    if !teacher.exists() {
        if let DistillStage::Trajectory { .. } = stage {
            bail!(
                "the chain folder {} does not exist; draw it with `glide distill trajectories \
                 --out {0}`",
                teacher.display()
            );
        }
        bail!(
            "the teacher {} does not exist; pass --teacher with a .safetensors file",
            teacher.display()
        );
    }
    let mut cfg = run.config()?;
    if let Some(o) = out_dir {
        cfg.out_dir = o;
    }
    cfg.distill = Some(DistillSpec {
        teacher: teacher.to_path_buf(),
        stage,
    });
    if let DistillStage::Trajectory { .. } = stage {
        cfg.data = cfg
            .data
            .with_shards(None)
            .with_folder(Some(teacher.to_string_lossy().into_owned()));
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
            resume: run.resume,
            init: Some(init.unwrap_or(teacher).to_path_buf()),
            ..Default::default()
        },
    )?;
    let last = outcome.rows.last();
    eprintln!(
        "{} at step {}{}; student weights in {}",
        if outcome.interrupted {
            "stopped"
        } else {
            "done"
        },
        outcome.step,
        last.map(|r| format!(", last loss {:.4}", r.loss))
            .unwrap_or_default(),
        outcome.out_dir.join("ema.safetensors").display()
    );
    Ok(outcome.out_dir.join("ema.safetensors"))
}

pub fn run(cmd: DistillCommand) -> Result<()> {
    match cmd {
        DistillCommand::Guidance { args, init } => run_stage(
            &args.run,
            &args.teacher,
            init.as_deref(),
            DistillStage::Guidance,
            None,
        )
        .map(|_| ()),
        DistillCommand::Samples(a) => samples(a),
        DistillCommand::Trajectories(a) => trajectories(a),
        DistillCommand::Trajectory {
            trajectories,
            init,
            student_steps,
            run,
        } => run_stage(
            &run,
            &trajectories,
            Some(&init),
            DistillStage::Trajectory {
                steps: student_steps,
            },
            None,
        )
        .map(|_| ()),
        DistillCommand::Progressive { args, from, to } => {
            let cfg = args.run.config()?;
            let last = glide_train::rounds::progressive_rounds::<Autodiff<B>>(
                &cfg,
                &args.teacher,
                (from, to),
                &backend::devices(1),
                args.run.resume,
                |n, outcome| {
                    eprintln!(
                        "round {n} → {} steps done at step {}; student weights in {}",
                        n / 2,
                        outcome.step,
                        outcome.out_dir.join("ema.safetensors").display()
                    )
                },
            )?;
            eprintln!("the {to}-step student is {}", last.display());
            Ok(())
        }
    }
}

/// What drawing from the teacher needs: the teacher, the training captions of `data`, the
/// output folder (created) and a progress bar of `n` `what`.
fn draw_setup(
    teacher: &Path,
    data: &str,
    out: &Path,
    n: usize,
    what: &str,
) -> Result<(
    glide_pipeline::Text2Im<B>,
    glide_train::batch::TrainData,
    indicatif::ProgressBar,
)> {
    let teacher = load(teacher)?;
    let data = glide_train::batch::TrainData::load(
        &glide_train::DataConfig::new().with_shards(Some(data.to_string())),
        teacher.config.image_size,
    )?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create {}; check the path", out.display()))?;
    let bar = indicatif::ProgressBar::new(n as u64).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}, {{elapsed}} (ETA {{eta}})"
        ))
        .expect("template"),
    );
    Ok((teacher, data, bar))
}

/// `glide distill samples`: the teacher's samples as an image folder with captions.
fn samples(a: SamplesArgs) -> Result<()> {
    use glide_pipeline::image::{batch_to_rgb8, encode_png};
    let (teacher, data, bar) = draw_setup(&a.teacher, &a.data, &a.out, a.n, "images")?;
    let size = teacher.config.image_size;
    let mut failed = None;
    glide_train::teacher_data::teacher_samples(
        &teacher,
        &data.train,
        a.n,
        a.steps,
        a.batch,
        a.seed,
        |i, s| {
            let rgb = batch_to_rgb8(&s.image, 1, size, size).remove(0);
            let text = [("guidance".to_string(), format!("{:.3}", s.guidance))];
            let png = a.out.join(format!("{i:05}.png"));
            let result = std::fs::write(&png, encode_png(&rgb, size, size, &text))
                .and_then(|()| std::fs::write(png.with_extension("txt"), &s.caption));
            if let Err(e) = result {
                failed.get_or_insert(format!("cannot write {} ({e})", png.display()));
            }
            bar.inc(1);
        },
    )?;
    bar.finish();
    if let Some(e) = failed {
        bail!("{e}; check that the disk is writable");
    }
    eprintln!(
        "wrote {} teacher samples ({} DDIM steps) to {}",
        a.n,
        a.steps,
        a.out.display()
    );
    Ok(())
}

/// `glide distill trajectories`: the teacher's chains as a training folder.
fn trajectories(a: TrajectoriesArgs) -> Result<()> {
    let (teacher, data, bar) = draw_setup(&a.teacher, &a.data, &a.out, a.n, "chains")?;
    let size = teacher.config.image_size;
    let mut failed = None;
    glide_train::trajectories::teacher_trajectories(
        &teacher,
        &data.train,
        a.n,
        a.batch,
        a.seed,
        |i, tr| {
            if let Err(e) = tr.write(&a.out, i, size) {
                failed.get_or_insert(format!("cannot write into {} ({e})", a.out.display()));
            }
            bar.inc(1);
        },
    )?;
    bar.finish();
    if let Some(e) = failed {
        bail!("{e}; check that the disk is writable");
    }
    eprintln!("wrote {} teacher trajectories to {}", a.n, a.out.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalDistillArgs {
    /// The teacher (the base model the students were distilled from).
    #[arg(long, default_value = "www/models/base.safetensors")]
    teacher: PathBuf,
    /// Students to compare (each samples with its own step count).
    #[arg(long, num_args = 1.., default_values = ["www/models/student.safetensors"])]
    student: Vec<PathBuf>,
    /// The shard directory of `glide data emoji` (its held-out captions are used).
    #[arg(long, default_value = "data/emoji")]
    data: String,
    /// Held-out captions (one image each, seed = index).
    #[arg(long, default_value_t = 32)]
    n: usize,
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    /// Steps of the reference: the teacher's guided DDIM.
    #[arg(long, default_value_t = 100)]
    reference_steps: usize,
    /// Step counts for students without their own (a guidance-distilled stage-1 student samples
    /// on the nested grid with any power of two up to 64).
    #[arg(long, num_args = 1..)]
    steps: Vec<usize>,
    /// Side-by-side grid of the first 8 captions.
    #[arg(long, default_value = "distill-compare.png")]
    out: PathBuf,
}

fn load(path: &Path) -> Result<glide_pipeline::Text2Im<B>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the weights {}; check the path", path.display()))?;
    glide_pipeline::Text2Im::<B>::from_safetensors(&bytes, &Default::default())
        .with_context(|| format!("cannot use the weights {}", path.display()))
}

/// PSNR and MSE of samples against the teacher's many-step samples from the same x_T, the
/// teacher's own DDIM at the students' step counts, and wall time per image.
pub fn eval_distill(a: EvalDistillArgs) -> Result<()> {
    use glide_pipeline::image::{batch_to_rgb8, encode_png, grid};
    let teacher = load(&a.teacher)?;
    let size = teacher.config.image_size;
    let data = glide_train::batch::TrainData::load(
        &glide_train::DataConfig::new().with_shards(Some(a.data.clone())),
        size,
    )?;
    let captions: Vec<String> = glide_train::eval::pick_captions(&data.heldout, a.n, 0)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    if captions.is_empty() {
        bail!(
            "{} has no held-out captions; build the full dataset with `make data`",
            a.data
        );
    }
    let students = a
        .student
        .iter()
        .map(|p| Ok((p.display().to_string(), load(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let (reference, rows) = glide_train::distill_eval::compare_students(
        &teacher,
        &students,
        &captions,
        a.guidance,
        a.reference_steps,
        &a.steps,
    )?;
    let (ref_ms, ref_evals) = (reference.ms_per_image, reference.evaluations);
    println!(
        "{} held-out captions, s = {}, seeds 0..{}; reference: the teacher's guided DDIM, {} \
         steps ({ref_evals} UNet evaluations, {ref_ms:.0} ms per image)\n",
        captions.len(),
        a.guidance,
        captions.len(),
        a.reference_steps
    );
    println!(
        "| sampler | UNet evaluations | PSNR vs reference (dB) | MSE vs reference | time per image (vs reference) |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
        let ms = r.sampled.ms_per_image;
        println!(
            "| {} | {} | {:.2} | {:.4} | {ms:.0} ms ({:.3}×) |",
            r.name,
            r.sampled.evaluations,
            r.psnr,
            r.mse,
            ms / ref_ms
        );
    }
    let k = captions.len().min(8);
    let mut images = Vec::new();
    for (i, r) in reference.images.iter().enumerate().take(k) {
        images.extend(batch_to_rgb8(r, 1, size, size));
        for r in &rows {
            images.extend(batch_to_rgb8(&r.sampled.images[i], 1, size, size));
        }
    }
    let cols = 1 + rows.len();
    let (rgb, w, h) = grid(&images, size, size, cols);
    let mut names = vec![format!("teacher {} steps", a.reference_steps)];
    names.extend(rows.iter().map(|r| r.name.clone()));
    let text = vec![
        ("columns".to_string(), names.join(" | ")),
        ("prompts".to_string(), captions[..k].join(" | ")),
    ];
    crate::write(&a.out, &encode_png(&rgb, w, h, &text))?;
    eprintln!("wrote {} (columns: {})", a.out.display(), names.join(" | "));
    Ok(())
}
