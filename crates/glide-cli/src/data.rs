//! `glide data …`: build training data sets. A thin wrapper over `glide-data`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use glide_data::emoji::{DEFAULT_KEEP, DEFAULT_SHARD_SIZE};
use glide_data::{EmojiOptions, Split, Style};

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Build the captioned emoji dataset (Noto, Twemoji, OpenMoji, Fluent 3D) as WebDataset shards.
    Emoji(EmojiArgs),
    /// Copy a shard folder with its pictures resized (a compact pack for a lent GPU machine).
    Pack(PackArgs),
}

#[derive(clap::Args)]
pub struct PackArgs {
    /// The shard folder to copy, e.g. data/emoji.
    #[arg(long)]
    pub from: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Side of the packed pictures in pixels (the model's image_size).
    #[arg(long, default_value_t = 32)]
    pub size: u32,
}

#[derive(clap::Args)]
pub struct EmojiArgs {
    /// Output folder for the shards, `manifest.json` and `LICENSES.md`.
    #[arg(long)]
    pub out: PathBuf,
    /// Fixes the held-out split, the captions and the shard order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The folder `npm ci` filled (run `make setup` first).
    #[arg(long, default_value = "node_modules")]
    pub node_modules: PathBuf,
    /// Samples per shard.
    #[arg(long, default_value_t = DEFAULT_SHARD_SIZE)]
    pub shard_size: usize,
    /// Only the first N emojibase entries (with their skin tones), for a quick trial build.
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Emoji(args) => emoji(args),
        DataCommand::Pack(args) => pack(args),
    }
}

fn pack(args: PackArgs) -> Result<()> {
    let s = glide_data::pack::pack(&args.from, &args.out, args.size).with_context(|| {
        format!(
            "packing {} into {} (build it first with `glide data emoji --out {}`)",
            args.from.display(),
            args.out.display(),
            args.from.display()
        )
    })?;
    println!(
        "{} images at {} px in {} shards, {:.1} MiB, in {}",
        s.images,
        args.size,
        s.shards,
        s.bytes as f64 / (1024.0 * 1024.0),
        args.out.display()
    );
    Ok(())
}

fn emoji(args: EmojiArgs) -> Result<()> {
    let opts = EmojiOptions {
        node_modules: args.node_modules,
        out: args.out,
        seed: args.seed,
        shard_size: args.shard_size,
        limit: args.limit,
        keep: DEFAULT_KEEP.iter().map(|h| h.to_string()).collect(),
    };
    let start = Instant::now();
    let summary = glide_data::build(&opts)
        .with_context(|| format!("building the emoji dataset in {}", opts.out.display()))?;

    println!(
        "{} images ({} with a 256 px copy) in {:.1} s, seed {}",
        summary.images,
        summary.images_256,
        start.elapsed().as_secs_f64(),
        summary.seed
    );
    let splits = Split::ALL.map(Split::name);
    println!(
        "{:<10} {:>8} {:>14} {:>13}",
        "style", splits[0], splits[1], splits[2]
    );
    for style in Style::ALL {
        let per_split = summary.counts.get(style.name());
        let n = |split: &str| per_split.and_then(|c| c.get(split)).copied().unwrap_or(0);
        println!(
            "{:<10} {:>8} {:>14} {:>13}",
            style.name(),
            n(splits[0]),
            n(splits[1]),
            n(splits[2])
        );
    }
    println!(
        "held out: {} emoji groups in every style, {} (emoji, style) pairs",
        summary.heldout_emoji.len(),
        summary.heldout_pairs.len()
    );
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "64 px: {} shards, {:.1} MiB; 256 px: {} shards, {:.1} MiB, in {}",
        summary.shards.len(),
        mib(summary.bytes),
        summary.shards_256.len(),
        mib(summary.bytes_256),
        opts.out.display()
    );
    println!("manifest: {}", summary.manifest.display());
    Ok(())
}
