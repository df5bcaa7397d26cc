//! Deterministic WebDataset shards: plain tar files whose entries `KEY.png`, `KEY.txt`,
//! `KEY.json` are consecutive per sample, with every header field that could vary between runs
//! (mtime, owner, mode) fixed, so the same inputs give byte-identical files.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::DataError;

/// One sample's files: `(extension, bytes)`, written in the given order.
pub struct ShardSample {
    pub key: String,
    pub files: Vec<(&'static str, Vec<u8>)>,
}

/// File name of shard `index` of a split: `train-000000.tar`.
pub fn shard_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:06}.tar")
}

/// Whether `name` is a shard file name this crate writes (`train-000012.tar`, `heldout-…`).
pub fn is_shard_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(".tar"))
        .is_some_and(|digits| digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The tar bytes of one shard.
pub fn tar_bytes(samples: &[ShardSample]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for sample in samples {
        debug_assert!(
            !sample.key.contains('.'),
            "WebDataset keys must not contain '.'"
        );
        for (ext, data) in &sample.files {
            let mut header = tar::Header::new_ustar();
            header
                .set_path(format!("{}.{ext}", sample.key))
                .expect("keys are short ASCII names");
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder
                .append(&header, data.as_slice())
                .expect("writing a tar into memory cannot fail");
        }
    }
    builder
        .into_inner()
        .expect("writing a tar into memory cannot fail")
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so readers
/// never see half a file: a process killed mid-write (even `kill -9`) or a full disk leaves the
/// old file in place. A failed write removes its temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        file.write_all(first)?;
        pause_mid_write();
        file.write_all(rest)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        DataError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// A test hook: `GLIDE_TEST_PAUSE_MID_WRITE_MS` holds every atomic write half-way for that long,
/// so a test can `kill -9` a training run while its checkpoint is being written.
fn pause_mid_write() {
    if let Some(ms) = std::env::var("GLIDE_TEST_PAUSE_MID_WRITE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Deletes shard files of `prefixes` in `dir` that are not in `keep`: leftovers of an earlier,
/// larger build that a reader would otherwise pick up.
pub fn remove_stale_shards(
    dir: &Path,
    prefixes: &[&str],
    keep: &BTreeSet<PathBuf>,
) -> Result<(), DataError> {
    let listing = std::fs::read_dir(dir).map_err(DataError::io("list", dir))?;
    for entry in listing {
        let path = entry.map_err(DataError::io("list", dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if prefixes.iter().any(|p| is_shard_name(name, p)) && !keep.contains(&path) {
            std::fs::remove_file(&path).map_err(DataError::io("remove", &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert_eq!(shard_name("train", 3), "train-000003.tar");
        assert!(is_shard_name("heldout-000000.tar", "heldout"));
        assert!(!is_shard_name("heldout-0.tar", "heldout"));
        assert!(!is_shard_name("train-000000.tar.tmp", "train"));
    }

    #[test]
    fn tar_is_deterministic_with_fixed_headers() {
        let sample = || ShardSample {
            key: "noto_1f34e".into(),
            files: vec![("txt", b"a red apple".to_vec())],
        };
        let a = tar_bytes(&[sample()]);
        assert_eq!(a, tar_bytes(&[sample()]));
        let mut archive = tar::Archive::new(a.as_slice());
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        let header = entry.header();
        assert_eq!(header.mtime().unwrap(), 0);
        assert_eq!(header.mode().unwrap(), 0o644);
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(&*entry.path().unwrap(), Path::new("noto_1f34e.txt"));
    }

    /// A full disk, for real: the temporary file is a link to Linux's `/dev/full`, whose every
    /// write fails with ENOSPC. The old file stays, the temporary one goes, the error says what to do.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_keeps_the_previous_file() {
        let dir = std::env::temp_dir().join(format!("glide-full-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.safetensors");
        write_atomic(&path, b"the previous checkpoint").unwrap();
        let tmp = dir.join("checkpoint.safetensors.tmp");
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let err = write_atomic(&path, &[7u8; 1 << 16]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Write { .. }), "{msg}");
        assert!(msg.contains("checkpoint.safetensors") && msg.contains("Free some disk space"));
        assert_eq!(std::fs::read(&path).unwrap(), b"the previous checkpoint");
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "the temporary file is left behind"
        );
        // A folder that is not there (or not a folder) is the same kind of sentence.
        let err = write_atomic(&dir.join("checkpoint.safetensors/x"), b"x").unwrap_err();
        assert!(matches!(err, DataError::Write { .. }), "{err}");
        write_atomic(&path, b"next").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"next");
    }
}
