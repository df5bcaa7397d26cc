//! Weights in shards, as Hugging Face stores large models: `<stem>.safetensors.index.json` maps
//! every tensor to one of `<stem>-00001-of-0000N.safetensors`, each shard a whole safetensors file
//! of at most a given size. A browser can then download a 1.5 GB model in pieces it can resume,
//! keep in Cache Storage and check one by one.
//!
//! Our index adds to Hugging Face's `metadata.total_size` and `weight_map`: the model's own
//! metadata (`options`, …, so a loader knows the model before it downloads a byte) and `shards`,
//! the byte size and SHA-256 of each file. Every shard also carries the model's metadata.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::DType;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::weights::{ParamStorage, StateDict, WeightsError};

/// The end of an index file's name (`base.safetensors.index.json`).
pub const INDEX_SUFFIX: &str = ".safetensors.index.json";
/// The most shards an index may list (a 4G-parameter model in 64 MB shards needs 250).
pub const MAX_SHARDS: usize = 4096;

/// One shard's size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// The index of a sharded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    /// `total_size` (bytes of tensor data, as Hugging Face counts) and the model's metadata.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor name → shard file name.
    pub weight_map: BTreeMap<String, String>,
    /// Shard file name → size and digest, in file order.
    #[serde(default)]
    pub shards: BTreeMap<String, ShardInfo>,
}

fn bad(why: impl std::fmt::Display) -> WeightsError {
    WeightsError::Shards(why.to_string())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A shard name is a plain file name next to the index: no folders, no `..`, no hidden files.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl ShardIndex {
    /// Parses and checks an index: shard names are plain file names beside the index, every
    /// tensor's shard is listed with its size and digest, and there are at most [`MAX_SHARDS`].
    pub fn parse(bytes: &[u8]) -> Result<Self, WeightsError> {
        let index: Self = serde_json::from_slice(bytes)
            .map_err(|e| bad(format_args!("the index is not a shard index ({e})")))?;
        if index.shards.len() > MAX_SHARDS {
            return Err(bad(format_args!(
                "the index lists {} shards, more than the {MAX_SHARDS} we accept",
                index.shards.len()
            )));
        }
        for (name, info) in &index.shards {
            if !plain_file_name(name) {
                return Err(bad(format_args!(
                    "shard name {name:?} is not a plain file name beside the index"
                )));
            }
            if info.sha256.len() != 64 || !info.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format_args!("shard {name} has no valid sha256")));
            }
        }
        if let Some((tensor, file)) = index
            .weight_map
            .iter()
            .find(|(_, f)| !index.shards.contains_key(*f))
        {
            return Err(bad(format_args!(
                "tensor {tensor} is mapped to {file:?}, which the index's `shards` does not list"
            )));
        }
        if index.weight_map.is_empty() {
            return Err(bad("the index maps no tensors"));
        }
        Ok(index)
    }

    /// The shard file names in order.
    pub fn files(&self) -> Vec<&str> {
        self.shards.keys().map(String::as_str).collect()
    }

    /// Bytes of all shards together (what a download costs).
    pub fn download_bytes(&self) -> u64 {
        self.shards.values().map(|s| s.bytes).sum()
    }

    /// The model's metadata (the string entries: `options`, `vocab`, …).
    pub fn model_metadata(&self) -> HashMap<String, String> {
        self.metadata
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect()
    }

    /// The model's metadata as a state dict without tensors (enough to read its config).
    pub fn metadata_only(&self) -> StateDict {
        StateDict {
            tensors: BTreeMap::new(),
            metadata: self.model_metadata(),
        }
    }

    /// Checks one downloaded shard's size and SHA-256 against the index.
    pub fn verify_shard(&self, file: &str, bytes: &[u8]) -> Result<(), WeightsError> {
        let info = self
            .shards
            .get(file)
            .ok_or_else(|| bad(format_args!("{file} is not one of the index's shards")))?;
        if bytes.len() as u64 != info.bytes {
            return Err(bad(format_args!(
                "shard {file} has {} bytes, the index says {}; download it again",
                bytes.len(),
                info.bytes
            )));
        }
        if sha256_hex(bytes) != info.sha256 {
            return Err(bad(format_args!(
                "shard {file} does not match its SHA-256 in the index; download it again"
            )));
        }
        Ok(())
    }

    /// Checks one downloaded shard against the index ([`Self::verify_shard`], and that it holds
    /// exactly the tensors mapped to it) and reads it.
    pub fn read_shard(&self, file: &str, bytes: &[u8]) -> Result<StateDict, WeightsError> {
        self.read_shard_as(file, bytes, ParamStorage::F32)
    }

    /// [`Self::read_shard`] with the floats held as `storage` says.
    pub fn read_shard_as(
        &self,
        file: &str,
        bytes: &[u8],
        storage: ParamStorage,
    ) -> Result<StateDict, WeightsError> {
        self.verify_shard(file, bytes)?;
        let state = StateDict::from_safetensors_as(bytes, storage)?;
        let expected = self.weight_map.iter().filter(|(_, f)| *f == file).count();
        let stray = state
            .tensors
            .keys()
            .find(|k| self.weight_map.get(*k).map(String::as_str) != Some(file));
        if let Some(name) = stray {
            return Err(bad(format_args!(
                "shard {file} holds {name}, which the index maps elsewhere"
            )));
        }
        if state.tensors.len() != expected {
            return Err(bad(format_args!(
                "shard {file} holds {} tensors, the index maps {expected} to it",
                state.tensors.len()
            )));
        }
        Ok(state)
    }

    /// Reads a whole sharded model, fetching each shard's bytes with `read(file)`.
    pub fn read_all(
        &self,
        mut read: impl FnMut(&str) -> Result<Vec<u8>, WeightsError>,
    ) -> Result<StateDict, WeightsError> {
        let mut state = self.metadata_only();
        for file in self.files() {
            let bytes = read(file)?;
            state.merge(self.read_shard(file, &bytes)?)?;
        }
        Ok(state)
    }
}

/// Reads weights from a path: a safetensors file, or a shard index (`*.safetensors.index.json`)
/// with its shards beside it.
pub fn read_weights_file(path: &std::path::Path) -> Result<StateDict, WeightsError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            bad(format_args!(
                "cannot read {} ({e}); check the path",
                p.display()
            ))
        })
    };
    let bytes = read(path)?;
    if !path.to_string_lossy().ends_with(INDEX_SUFFIX) {
        return StateDict::from_safetensors(&bytes);
    }
    let index = ShardIndex::parse(&bytes)?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    index.read_all(|file| read(&dir.join(file)))
}

/// Writes `state` as a shard index at `index_path` (ending in [`INDEX_SUFFIX`]) and its shards
/// beside it, each written with `write(path, bytes)`. Returns the index.
pub fn write_shards(
    state: &StateDict,
    index_path: &std::path::Path,
    half: bool,
    max_shard_bytes: u64,
    mut write: impl FnMut(&std::path::Path, &[u8]) -> Result<(), WeightsError>,
) -> Result<ShardIndex, WeightsError> {
    let name = index_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let Some(stem) = name
        .strip_suffix(INDEX_SUFFIX)
        .filter(|s| plain_file_name(s))
    else {
        return Err(bad(format_args!(
            "the index must be named like base{INDEX_SUFFIX} (letters, digits, . _ -), not {name:?}"
        )));
    };
    let (index, files) = state.to_shards(half, max_shard_bytes, stem);
    let dir = index_path.parent().unwrap_or(std::path::Path::new("."));
    for (file, bytes) in &files {
        write(&dir.join(file), bytes)?;
    }
    let text = serde_json::to_vec_pretty(&index).expect("an index serialises");
    write(index_path, &text)?;
    Ok(index)
}

fn stored_bytes(dtype: DType, numel: usize, half: bool) -> u64 {
    let per = match dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 if half => 2,
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => 4,
        DType::I64 => 8,
        _ => 4,
    };
    (per * numel) as u64
}

impl StateDict {
    /// Adds `other`'s tensors; a tensor present in both is an error.
    pub fn merge(&mut self, other: StateDict) -> Result<(), WeightsError> {
        for (name, data) in other.tensors {
            if self.tensors.contains_key(&name) {
                return Err(bad(format_args!("tensor {name} is in two shards")));
            }
            self.tensors.insert(name, data);
        }
        for (k, v) in other.metadata {
            self.metadata.entry(k).or_insert(v);
        }
        Ok(())
    }

    /// Splits into shards of at most `max_shard_bytes` of tensor data each (a larger tensor gets
    /// a shard of its own), floats stored as f32 (or f16 when `half`). Returns the index and
    /// `(file name, bytes)` per shard, named `<stem>-00001-of-0000N.safetensors`.
    pub fn to_shards(
        &self,
        half: bool,
        max_shard_bytes: u64,
        stem: &str,
    ) -> (ShardIndex, Vec<(String, Vec<u8>)>) {
        let mut groups: Vec<StateDict> = Vec::new();
        let mut filled = u64::MAX;
        let mut total = 0;
        for (name, data) in &self.tensors {
            let size = stored_bytes(data.dtype, data.num_elements(), half);
            total += size;
            if filled.saturating_add(size) > max_shard_bytes {
                groups.push(StateDict {
                    tensors: BTreeMap::new(),
                    metadata: self.metadata.clone(),
                });
                filled = 0;
            }
            filled += size;
            let group = groups.last_mut().expect("a group was pushed");
            group.tensors.insert(name.clone(), data.clone());
        }
        let n = groups.len();
        let mut index = ShardIndex {
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
            weight_map: BTreeMap::new(),
            shards: BTreeMap::new(),
        };
        index
            .metadata
            .insert("total_size".into(), Value::from(total));
        let mut files = Vec::with_capacity(n);
        for (i, group) in groups.iter().enumerate() {
            let file = format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1);
            let bytes = group.to_safetensors(half);
            for name in group.tensors.keys() {
                index.weight_map.insert(name.clone(), file.clone());
            }
            index.shards.insert(
                file.clone(),
                ShardInfo {
                    bytes: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                },
            );
            files.push((file, bytes));
        }
        (index, files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn state() -> StateDict {
        let mut s = StateDict::default();
        for (name, n) in [("a", 100), ("b", 300), ("c", 10), ("d", 50)] {
            let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            s.tensors.insert(name.into(), TensorData::new(v, [n]));
        }
        s.metadata.insert("options".into(), "{\"x\": 1}".into());
        s
    }

    #[test]
    fn shards_round_trip_and_respect_the_size() {
        let s = state();
        let (index, files) = s.to_shards(false, 500, "m");
        // a (400 B) | b (1200 B, alone) | c + d (240 B)
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].0, "m-00001-of-00003.safetensors");
        let text = serde_json::to_vec(&index).unwrap();
        let parsed = ShardIndex::parse(&text).unwrap();
        assert_eq!(parsed, index);
        assert_eq!(parsed.metadata["total_size"], Value::from(1840));
        assert_eq!(parsed.model_metadata()["options"], "{\"x\": 1}");
        let map: HashMap<_, _> = files.iter().cloned().collect();
        let back = parsed.read_all(|f| Ok(map[f].clone())).unwrap();
        assert_eq!(back.tensors, s.tensors);
        assert_eq!(back.metadata, s.metadata);
        // f16 halves the data
        let (half, half_files) = s.to_shards(true, 1 << 20, "m");
        assert_eq!(half.metadata["total_size"], Value::from(920));
        assert_eq!(half.shards.len(), 1);
        // …and read as f16 it stays f16 (never widened), values intact
        let (file, bytes) = &half_files[0];
        let held = half.read_shard_as(file, bytes, ParamStorage::F16).unwrap();
        for (name, data) in &held.tensors {
            assert_eq!(data.dtype, DType::F16, "{name}");
            assert_eq!(data.clone().convert::<f32>(), s.tensors[name], "{name}");
        }
        let wide = half.read_shard(file, bytes).unwrap();
        assert!(wide.tensors.values().all(|d| d.dtype == DType::F32));
    }

    #[test]
    fn damaged_or_hostile_shards_are_refused() {
        let (index, files) = state().to_shards(false, 500, "m");
        let (name, bytes) = &files[1];
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let e = index.read_shard(name, &flipped).unwrap_err().to_string();
        assert!(e.contains("SHA-256"), "{e}");
        let e = index
            .read_shard(name, &bytes[..10])
            .unwrap_err()
            .to_string();
        assert!(e.contains("download it again"), "{e}");
        // a shard swapped for another: its digest is not the listed one
        assert!(index.read_shard(name, &files[0].1).is_err());
        for evil in [
            "../etc/passwd",
            "/abs.safetensors",
            ".hidden",
            "a/b.safetensors",
            "",
        ] {
            let mut i = index.clone();
            let info = i.shards.remove(name).unwrap();
            i.shards.insert(evil.into(), info);
            for f in i.weight_map.values_mut() {
                if f == name {
                    *f = evil.into();
                }
            }
            let e = ShardIndex::parse(&serde_json::to_vec(&i).unwrap()).unwrap_err();
            assert!(e.to_string().contains("plain file name"), "{evil}: {e}");
        }
        let mut i = index.clone();
        i.shards.remove(name);
        assert!(ShardIndex::parse(&serde_json::to_vec(&i).unwrap()).is_err());
        assert!(ShardIndex::parse(b"{\"weight_map\": 3}").is_err());
        // the same tensor twice
        let mut s = state();
        assert!(s.merge(state()).is_err());
    }

    #[test]
    fn sharded_files_read_back_from_disk() {
        let dir = std::env::temp_dir().join(format!("glide-shards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = state();
        let index_path = dir.join("m.safetensors.index.json");
        let write = |p: &std::path::Path, b: &[u8]| std::fs::write(p, b).map_err(bad);
        let index = write_shards(&s, &index_path, false, 500, write).unwrap();
        assert_eq!(index.files().len(), 3);
        assert_eq!(read_weights_file(&index_path).unwrap().tensors, s.tensors);
        std::fs::remove_file(dir.join(index.files()[2])).unwrap();
        let e = read_weights_file(&index_path).unwrap_err().to_string();
        assert!(
            e.contains("m-00003-of-00003.safetensors") && e.contains("check the path"),
            "{e}"
        );
        assert!(write_shards(&s, &dir.join("m.safetensors"), false, 500, write).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
