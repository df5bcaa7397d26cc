//! Readers for the trainer: WebDataset shards (as written by [`crate::emoji::build`]) and plain
//! folders of images with a `.txt` caption beside each.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::DataError;
use crate::imaging::{center_crop_square, decode_image, flatten_on_white};
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
/// (The decoder goes by the bytes, not by the name.)
const SHARD_IMAGE_EXTS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];
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
/// Shards are decoded in parallel. Any damage is an error naming the shard and the entry.
pub fn read_shards(paths: &[PathBuf]) -> Result<Vec<Sample>, DataError> {
    let per_shard = map_ordered(paths, |p| read_shard(p), &|_| {});
    let mut samples = Vec::new();
    for shard in per_shard {
        samples.extend(shard?);
    }
    Ok(samples)
}

/// As [`read_shards`], but a damaged shard gives what it still holds: a file cut mid-way keeps
/// its whole samples before the cut, a sample whose image does not decode is left out. Each
/// problem is returned (it names the shard and the entry) for the caller to count and log; only a
/// shard that cannot be read at all is an error.
pub fn read_shards_lenient(paths: &[PathBuf]) -> Result<(Vec<Sample>, Vec<DataError>), DataError> {
    let per_shard = map_ordered(paths, |p| read_shard_lenient(p), &|_| {});
    let (mut samples, mut problems) = (Vec::new(), Vec::new());
    for shard in per_shard {
        let (s, p) = shard?;
        samples.extend(s);
        problems.extend(p);
    }
    Ok((samples, problems))
}

/// Reads one WebDataset shard; any damage is an error.
pub fn read_shard(path: &Path) -> Result<Vec<Sample>, DataError> {
    let bytes = std::fs::read(path).map_err(DataError::io("read", path))?;
    let (samples, mut problems) = read_shard_bytes(path, &bytes, true);
    match problems.is_empty() {
        true => Ok(samples),
        false => Err(problems.swap_remove(0)),
    }
}

/// Reads one WebDataset shard, skipping what is damaged (see [`read_shards_lenient`]).
pub fn read_shard_lenient(path: &Path) -> Result<(Vec<Sample>, Vec<DataError>), DataError> {
    let bytes = std::fs::read(path).map_err(DataError::io("read", path))?;
    Ok(read_shard_bytes(path, &bytes, false))
}

/// The samples of a shard's bytes and the problems met; `strict` stops at the first problem.
pub fn read_shard_bytes(path: &Path, bytes: &[u8], strict: bool) -> (Vec<Sample>, Vec<DataError>) {
    let corrupt = |entry: &str, detail: String| DataError::CorruptShard {
        path: path.to_path_buf(),
        entry: entry.to_string(),
        detail,
    };
    let mut problems = Vec::new();
    let (order, mut files, keys) = match tar_files(bytes) {
        Ok((order, files)) => {
            let n = order.len();
            (order, files, n)
        }
        Err(cut) => {
            problems.push(corrupt(&cut.entry, cut.detail));
            if strict {
                return (Vec::new(), problems);
            }
            (cut.order, cut.files, cut.whole_keys)
        }
    };
    let mut samples = Vec::with_capacity(keys);
    for key in order.into_iter().take(keys) {
        let parts = files.remove(&key).expect("every ordered key has files");
        match to_sample(key.clone(), parts) {
            Ok(sample) => samples.push(sample),
            Err((entry, detail)) => {
                problems.push(corrupt(&entry, detail));
                if strict {
                    return (Vec::new(), problems);
                }
            }
        }
    }
    (samples, problems)
}

/// Files of one shard's samples by key, keys in order of first appearance.
type ShardFiles = (Vec<String>, ShardMap);

/// Where a tar stops being readable, and what was read before.
struct TarCut {
    order: Vec<String>,
    files: ShardMap,
    /// How many keys of `order` are surely whole (WebDataset keeps a key's files together).
    whole_keys: usize,
    entry: String,
    detail: String,
}

/// The files of a tar by WebDataset key, or where it is cut.
fn tar_files(bytes: &[u8]) -> Result<ShardFiles, Box<TarCut>> {
    let mut order: Vec<String> = Vec::new();
    let mut files: ShardMap = HashMap::new();
    let mut archive = tar::Archive::new(Cursor::new(bytes));
    let mut last_name = String::from("(start of file)");
    let mut end_of_entries = 0usize;
    // The cut at `entry`: a key whose file is cut (or unknown) may have lost files.
    let cut = |order: Vec<String>, files, entry: String, cut_key: Option<&str>, detail| {
        let last_is_cut = cut_key.is_none_or(|k| order.last().is_some_and(|l| l == k));
        let whole_keys = order.len() - usize::from(last_is_cut && !order.is_empty());
        Box::new(TarCut {
            order,
            files,
            whole_keys,
            entry,
            detail,
        })
    };
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return Err(cut(order, files, last_name, None, e.to_string())),
    };
    for entry in entries {
        let after = format!("after {last_name}");
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => return Err(cut(order, files, after, None, e.to_string())),
        };
        let name = match entry.path() {
            Ok(n) => n.to_string_lossy().into_owned(),
            Err(e) => return Err(cut(order, files, after, None, e.to_string())),
        };
        let size = entry.size();
        let mut data = Vec::with_capacity(size.min(bytes.len() as u64) as usize);
        let read = entry.read_to_end(&mut data).map_err(|e| e.to_string());
        let short =
            (data.len() as u64 != size).then(|| format!("{} of {size} bytes present", data.len()));
        if let Some(why) = read.err().or(short) {
            let key = wds_key(&name).map(|(k, _)| k.to_string());
            return Err(cut(order, files, name, key.as_deref(), why));
        }
        end_of_entries = (entry.raw_file_position() + size.div_ceil(512) * 512) as usize;
        let is_file = entry.header().entry_type().is_file();
        last_name = name.clone();
        if !is_file {
            continue;
        }
        let Some((key, ext)) = wds_key(&name) else {
            continue;
        };
        if !files.contains_key(key) {
            order.push(key.to_string());
        }
        files.entry(key.to_string()).or_default().insert(ext, data);
    }
    let tail = end_of_entries
        .checked_add(END_OF_ARCHIVE)
        .and_then(|end| bytes.get(end_of_entries..end));
    if !tail.is_some_and(|t| t.iter().all(|&b| b == 0)) {
        let why = "the file ends without the tar end-of-archive marker".to_string();
        return Err(cut(order, files, format!("after {last_name}"), None, why));
    }
    Ok((order, files))
}

/// WebDataset: the key is the path up to the first '.' of the file name; then the extension.
fn wds_key(name: &str) -> Option<(&str, String)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base_start..].find('.').map(|i| base_start + i)?;
    Some((&name[..dot], name[dot + 1..].to_ascii_lowercase()))
}

type ShardMap = HashMap<String, HashMap<String, Vec<u8>>>;

/// One sample from its files; on failure, the entry and why.
fn to_sample(key: String, parts: HashMap<String, Vec<u8>>) -> Result<Sample, (String, String)> {
    let Some(ext) = SHARD_IMAGE_EXTS
        .iter()
        .find(|ext| parts.contains_key(**ext))
    else {
        return Err((key, "the sample has no png image".to_string()));
    };
    let image = decode_image(&parts[*ext]).map_err(|e| (format!("{key}.{ext}"), e.to_string()))?;
    let captions = parts
        .get("txt")
        .map(|t| caption_lines(&String::from_utf8_lossy(t)))
        .unwrap_or_default();
    let meta = match parts.get("json") {
        Some(json) => {
            serde_json::from_slice(json).map_err(|e| (format!("{key}.json"), e.to_string()))?
        }
        None => serde_json::Value::Null,
    };
    Ok(Sample {
        flip_ok: meta.get("flip").and_then(|f| f.as_bool()).unwrap_or(true),
        image: flatten_on_white(&image.to_rgba8()),
        key,
        captions,
        meta,
    })
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
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let image = decode_image(&bytes).map_err(|e| e.to_string())?;
    Ok(flatten_on_white(&center_crop_square(&image).to_rgba8()))
}
