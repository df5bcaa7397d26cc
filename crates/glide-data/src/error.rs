//! One error type for the whole crate. Every message is a sentence that says what went wrong and
//! what to do about it, because most of these end up printed by `glide data emoji` or the trainer.

use std::path::PathBuf;

/// Everything that can go wrong while building or reading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An npm package the emoji builder reads is not installed.
    #[error(
        "the npm package `{package}` is missing (looked for {}); run `make setup` (or `npm ci` in the repository root) to install it",
        path.display()
    )]
    MissingPackage { package: String, path: PathBuf },

    /// A package file exists but is not what this crate expects (damaged or a different version).
    #[error(
        "{} could not be read as {what} ({detail}); run `make setup` (or `npm ci`) to reinstall the pinned npm packages",
        path.display()
    )]
    BadPackageFile {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },

    /// A full build found fewer images than the pinned packages provide.
    #[error(
        "only {found} emoji images were found ({per_style}), but a full build needs at least 12,000 in all and 2,000 per style; the npm packages are incomplete, so run `make setup` (or `npm ci`) to reinstall them"
    )]
    TooFewImages { found: usize, per_style: String },

    /// A shard is cut short, is not a tar file, or holds an entry that cannot be decoded.
    #[error(
        "shard {} is truncated or corrupt at entry {entry} ({detail}); rebuild it with `glide data emoji` or remove it",
        path.display()
    )]
    CorruptShard {
        path: PathBuf,
        entry: String,
        detail: String,
    },

    /// No shard matched the requested split.
    #[error(
        "no shards named {prefix}-NNNNNN.tar were found at {}; build them with `glide data emoji --out DIR` or point at the folder that holds them",
        path.display()
    )]
    NoShards { path: PathBuf, prefix: String },

    /// A caption folder holds no image files at all.
    #[error(
        "no images (png, jpg, jpeg or webp) were found under {}; put the images there, each with a caption in a .txt file of the same name beside it",
        path.display()
    )]
    EmptyFolder { path: PathBuf },

    /// A caption folder holds image files, but none of them decodes.
    #[error(
        "none of the {skipped} images under {} could be decoded; check that they are valid png, jpeg or webp files",
        path.display()
    )]
    NoReadableImages { path: PathBuf, skipped: usize },

    /// Writing a file (through a temporary file) failed: the disk is full, the folder is not
    /// writable, ...; the file's previous version is untouched.
    #[error(
        "could not write {}: {source}; its previous version, if any, is unchanged. Free some disk \
         space or make the folder writable, then run again",
        path.display()
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),

    /// A file system operation failed.
    #[error(
        "could not {action} {}: {source}; check that the path exists and that you may {action} it",
        path.display()
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    /// Wraps an I/O error with the operation (`"read"`, `"write"`, `"create"`, ...) and the path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DataError::Io {
            action,
            path,
            source,
        }
    }
}
