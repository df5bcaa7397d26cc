//! `glide train-clip`: a thin wrapper over `glide_train::clip_train`.

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use glide_train::TrainOptions;
use glide_train::clip_train::{ClipTrainConfig, train_clip};

use crate::backend::{self, B};
use crate::train::RunArgs;

#[derive(clap::Args)]
pub struct TrainClipArgs {
    /// --config: a `ClipTrainConfig` file, configs/clip-emoji32.json (the noised CLIP that guides)
    /// or configs/clip-emoji32-eval.json (the clean CLIP that scores).
    #[command(flatten)]
    run: RunArgs,
    /// As `glide train --devices`.
    #[arg(long)]
    devices: Option<usize>,
}

pub fn train_clip_cmd(a: TrainClipArgs) -> Result<()> {
    let mut cfg = ClipTrainConfig::read(&a.run.config).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the CLIP training config {} ({e}); start from configs/clip-emoji32.json",
            a.run.config.display()
        )
    })?;
    a.run
        .apply(&mut cfg.out_dir, &mut cfg.steps, &mut cfg.max_minutes);
    let devices = a
        .devices
        .unwrap_or_else(|| backend::default_devices(cfg.batch_size));
    if devices == 0 {
        bail!("--devices must be at least 1");
    }
    eprintln!(
        "training a {} CLIP on {} × {} (batch {}), writing to {}",
        if cfg.noised { "noised" } else { "clean" },
        devices,
        backend::NAME,
        cfg.batch_size,
        cfg.out_dir
    );
    let out = train_clip::<Autodiff<B>>(
        cfg,
        backend::devices(devices),
        TrainOptions {
            resume: a.run.resume,
            ..Default::default()
        },
    )?;
    let last = out.retrieval.last().map_or(String::new(), |r| {
        format!(
            "; held-out retrieval {:.1}% clean, {:.1}% noised",
            100.0 * r.clean,
            100.0 * r.noised
        )
    });
    eprintln!(
        "{} at step {} ({:.1} images/s{last}); weights in {}",
        if out.interrupted { "stopped" } else { "done" },
        out.step,
        out.images_per_s,
        out.out_dir.join("clip.safetensors").display()
    );
    Ok(())
}
