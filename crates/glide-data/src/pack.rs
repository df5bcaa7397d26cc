//! `glide data pack`: a copy of a shard folder at another image size, for moving a data set to a
//! machine that receives little (a lent GPU takes 64 MiB in all: the 64 px emoji shards are 90 MiB,
//! at 32 px and xz-compressed they are a fraction of that). Keys, captions, metadata, splits, shard
//! boundaries, `manifest.json` and `LICENSES.md` are kept; only the pictures are resized (Lanczos,
//! as the trainer resizes) and re-encoded as PNG.

use std::path::Path;

use image::imageops::FilterType;

use crate::error::DataError;
use crate::imaging::encode_png;
use crate::reader::{read_shard, shard_paths};
use crate::shard::{ShardSample, tar_bytes, write_atomic};

/// What [`pack`] wrote.
#[derive(Debug, Clone, Default)]
pub struct PackSummary {
    pub shards: usize,
    pub images: usize,
    pub bytes: u64,
}

/// Writes every `train-*` and `heldout-*` shard of `from` to `to` with `size`×`size` pictures.
pub fn pack(from: &Path, to: &Path, size: u32) -> Result<PackSummary, DataError> {
    if size == 0 {
        return Err(DataError::InvalidOption(
            "the packed image size must be at least 1 px; pass --size 32".into(),
        ));
    }
    std::fs::create_dir_all(to).map_err(DataError::io("create", to))?;
    let mut summary = PackSummary::default();
    for split in ["train", "heldout"] {
        let paths = match shard_paths(from, split) {
            Ok(p) => p,
            Err(DataError::NoShards { .. }) if split == "heldout" => Vec::new(),
            Err(e) => return Err(e),
        };
        for path in paths {
            let samples = read_shard(&path)?;
            let packed: Vec<ShardSample> = samples
                .into_iter()
                .map(|s| {
                    let img = image::imageops::resize(&s.image, size, size, FilterType::Lanczos3);
                    let mut files = vec![
                        ("png", encode_png(&img)),
                        ("txt", s.captions.join("\n").into_bytes()),
                    ];
                    if !s.meta.is_null() {
                        files.push(("json", s.meta.to_string().into_bytes()));
                    }
                    ShardSample { key: s.key, files }
                })
                .collect();
            summary.images += packed.len();
            let bytes = tar_bytes(&packed);
            summary.bytes += bytes.len() as u64;
            let name = path.file_name().expect("shard paths are files");
            write_atomic(&to.join(name), &bytes)?;
            summary.shards += 1;
        }
    }
    for extra in ["manifest.json", "LICENSES.md"] {
        let src = from.join(extra);
        if src.exists() {
            std::fs::copy(&src, to.join(extra)).map_err(DataError::io("copy", &src))?;
        }
    }
    Ok(summary)
}
