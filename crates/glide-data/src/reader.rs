//! Readers for the trainer: WebDataset shards (as written by [`crate::emoji::build`]) and plain
//! folders of images with a `.txt` caption beside each.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};

use crate::error::DataError;
use crate::imaging::{center_crop_square, flatten_on_white};
use crate::parallel::map_ordered;
use crate::shard::is_shard_name;

/// One training example.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// WebDataset key (`noto_1f34e`), or the image's path relative to the folder, without extension.
    pub key: String,
    pub image: RgbImage,
    /// One caption per non-empty line of the `.txt`; empty means train it unconditionally.
    pub captions: Vec<String>,
    /// Whether a horizontal flip is a valid augmentation (json `flip`, default true).
    pub flip_ok: bool,
    /// The sample's `.json` (shards) or `{"path": ...}` (folders); `null` when a shard has none.
    pub meta: serde_json::Value,
}

/// Image extensions a shard sample may carry, in order of preference.
const SHARD_IMAGE_EXTS: [(&str, ImageFormat); 4] = [
    ("png", ImageFormat::Png),
    ("jpg", ImageFormat::Jpeg),
    ("jpeg", ImageFormat::Jpeg),
    ("webp", ImageFormat::WebP),
];
/// Image extensions `read_folder` picks up (case-insensitive).
const FOLDER_IMAGE_EXTS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];
/// A tar ends with two zero blocks; a file cut at an entry boundary lacks them.
const END_OF_ARCHIVE: usize = 1024;

/// The shard files of one split, sorted by name.
///
/// `path` may be a shard file (returned as is), a folder (its `{split_prefix}-NNNNNN.tar` files),
/// or a glob-like prefix such as `data/train-00` or `data/train-*` (the `.tar` files in `data/`
/// whose names start with `train-00`).
pub fn shard_paths(path: &Path, split_prefix: &str) -> Result<Vec<PathBuf>, DataError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    // A folder: exactly `{split_prefix}-NNNNNN.tar`. Otherwise: any `.tar` starting with the prefix.
    let (dir, name_prefix, whole_folder) = if path.is_dir() {
        (path, split_prefix.to_string(), true)
    } else {
        let prefix = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        (
            dir.unwrap_or(Path::new(".")),
            prefix.trim_end_matches('*').to_string(),
            false,
        )
    };
    let matches = |name: &str| {
        if whole_folder {
            is_shard_name(name, &name_prefix)
        } else {
            name.starts_with(&name_prefix) && name.ends_with(".tar")
        }
    };
    let no_shards = || DataError::NoShards {
        path: path.to_path_buf(),
        prefix: split_prefix.to_string(),
    };
    let listing = std::fs::read_dir(dir).map_err(|_| no_shards())?;
    let mut paths = Vec::new();
    for entry in listing {
        let entry = entry.map_err(DataError::io("list", dir))?;
        if entry.file_name().to_str().is_some_and(&matches) && entry.path().is_file() {
            paths.push(entry.path());
        }
    }
    if paths.is_empty() {
        return Err(no_shards());
    }
    paths.sort();
    Ok(paths)
}

/// Reads every sample of the given shards, in shard order and in order within each shard.
/// Shards are decoded in parallel.
pub fn read_shards(paths: &[PathBuf]) -> Result<Vec<Sample>, DataError> {
    let per_shard = map_ordered(paths, |p| read_shard(p), &|_| {});
    let mut samples = Vec::new();
    for shard in per_shard {
        samples.extend(shard?);
    }
    Ok(samples)
}

/// Reads one WebDataset shard.
pub fn read_shard(path: &Path) -> Result<Vec<Sample>, DataError> {
    let bytes = std::fs::read(path).map_err(DataError::io("read", path))?;
    let corrupt = |entry: &str, detail: String| DataError::CorruptShard {
        path: path.to_path_buf(),
        entry: entry.to_string(),
        detail,
    };

    // Files of each key, keys in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut files: HashMap<String, HashMap<String, Vec<u8>>> = HashMap::new();
    let mut archive = tar::Archive::new(Cursor::new(bytes.as_slice()));
    let entries = archive
        .entries()
        .map_err(|e| corrupt("(start of file)", e.to_string()))?;
    let mut last_name = String::from("(start of file)");
    let mut end_of_entries = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(&format!("after {last_name}"), e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| corrupt(&format!("after {last_name}"), e.to_string()))?;
        let name = name.to_string_lossy().into_owned();
        let size = entry.size();
        let mut data = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| corrupt(&name, e.to_string()))?;
        if data.len() as u64 != size {
            return Err(corrupt(
                &name,
                format!("{} of {size} bytes present", data.len()),
            ));
        }
        end_of_entries = (entry.raw_file_position() + size.div_ceil(512) * 512) as usize;
        let is_file = entry.header().entry_type().is_file();
        last_name = name.clone();
        if !is_file {
            continue;
        }
        // WebDataset: the key is the path up to the first '.' of the file name.
        let base_start = name.rfind('/').map_or(0, |i| i + 1);
        let Some(dot) = name[base_start..].find('.').map(|i| base_start + i) else {
            continue;
        };
        let (key, ext) = (&name[..dot], name[dot + 1..].to_ascii_lowercase());
        if !files.contains_key(key) {
            order.push(key.to_string());
        }
        files.entry(key.to_string()).or_default().insert(ext, data);
    }
    let tail = bytes.get(end_of_entries..end_of_entries + END_OF_ARCHIVE);
    if !tail.is_some_and(|t| t.iter().all(|&b| b == 0)) {
        return Err(corrupt(
            &format!("after {last_name}"),
            "the file ends without the tar end-of-archive marker".to_string(),
        ));
    }

    let mut samples = Vec::with_capacity(order.len());
    for key in order {
        let parts = files.remove(&key).expect("every ordered key has files");
        let Some((ext, format)) = SHARD_IMAGE_EXTS
            .iter()
            .find(|(ext, _)| parts.contains_key(*ext))
        else {
            return Err(corrupt(&key, "the sample has no png image".to_string()));
        };
        let image = image::load_from_memory_with_format(&parts[*ext], *format)
            .map_err(|e| corrupt(&format!("{key}.{ext}"), e.to_string()))?;
        let captions = parts
            .get("txt")
            .map(|t| caption_lines(&String::from_utf8_lossy(t)))
            .unwrap_or_default();
        let meta = match parts.get("json") {
            Some(json) => serde_json::from_slice(json)
                .map_err(|e| corrupt(&format!("{key}.json"), e.to_string()))?,
            None => serde_json::Value::Null,
        };
        samples.push(Sample {
            flip_ok: meta.get("flip").and_then(|f| f.as_bool()).unwrap_or(true),
            image: flatten_on_white(&image.to_rgba8()),
            key,
            captions,
            meta,
        });
    }
    Ok(samples)
}

/// What [`read_folder`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FolderSummary {
    /// Images decoded and returned.
    pub loaded: usize,
    /// Image files that did not decode (each reported on stderr).
    pub skipped_unreadable: usize,
    /// Loaded images whose `.txt` has no non-empty line (trained unconditionally).
    pub empty_captions: usize,
    /// Loaded images without a `.txt` beside them (trained unconditionally).
    pub missing_captions: usize,
}

/// Reads a folder tree of images (png, jpg, jpeg, webp) with captions in `.txt` files of the same
/// name beside them. Images are centre-cropped to a square and composited on white; their size is
/// kept (resize with [`crate::imaging::resize_square`]). Undecodable images are skipped with a
/// warning on stderr.
pub fn read_folder(dir: &Path) -> Result<(Vec<Sample>, FolderSummary), DataError> {
    let mut images = Vec::new();
    collect_images(dir, &mut images)?;
    if images.is_empty() {
        return Err(DataError::EmptyFolder {
            path: dir.to_path_buf(),
        });
    }
    images.sort();
    let decoded = map_ordered(&images, |p| decode_any(p), &|_| {});

    let mut summary = FolderSummary::default();
    let mut samples = Vec::with_capacity(images.len());
    for (path, image) in images.iter().zip(decoded) {
        let image = match image {
            Ok(image) => image,
            Err(err) => {
                eprintln!(
                    "warning: skipping {}: it is not a readable image ({err})",
                    path.display()
                );
                summary.skipped_unreadable += 1;
                continue;
            }
        };
        let caption_path = path.with_extension("txt");
        let captions = match std::fs::read_to_string(&caption_path) {
            Ok(text) => {
                let lines = caption_lines(&text);
                if lines.is_empty() {
                    summary.empty_captions += 1;
                }
                lines
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                summary.missing_captions += 1;
                Vec::new()
            }
            Err(e) => return Err(DataError::io("read", &caption_path)(e)),
        };
        let relative = path.strip_prefix(dir).unwrap_or(path);
        let key = relative
            .with_extension("")
            .to_string_lossy()
            .replace('\\', "/");
        samples.push(Sample {
            key,
            image,
            captions,
            flip_ok: true,
            meta: serde_json::json!({ "path": relative.to_string_lossy() }),
        });
        summary.loaded += 1;
    }
    if samples.is_empty() {
        return Err(DataError::NoReadableImages {
            path: dir.to_path_buf(),
            skipped: summary.skipped_unreadable,
        });
    }
    Ok((samples, summary))
}

/// Non-empty, trimmed lines.
fn caption_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let listing = std::fs::read_dir(dir).map_err(DataError::io("list", dir))?;
    for entry in listing {
        let path = entry.map_err(DataError::io("list", dir))?.path();
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| FOLDER_IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

fn decode_any(path: &Path) -> Result<RgbImage, String> {
    let image = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    Ok(flatten_on_white(&center_crop_square(&image).to_rgba8()))
}
