//! Training data for glide-rs.
//!
//! * [`emoji::build`] turns four emoji art styles (Noto, Twemoji, OpenMoji, Fluent 3D, installed
//!   by `npm ci`) into a captioned WebDataset with a generalisation split (held-out emoji and
//!   held-out emoji×style pairs), 64 px for the base model and 256 px for an upsampler.
//! * [`read_shards`] / [`shard_paths`] read such shards back; [`read_folder`] reads any folder of
//!   images with `.txt` captions beside them.
//!
//! Every error is a [`DataError`] whose message says what to do.

pub mod captions;
pub mod emoji;
pub mod emojibase;
mod error;
pub mod hexcode;
pub mod imaging;
pub mod licenses;
pub mod pack;
mod parallel;
pub mod reader;
pub mod reword;
pub mod shard;
pub mod sources;
pub mod split;

pub use emoji::{BuildSummary, EmojiOptions, Progress, build, build_with_progress};
pub use error::DataError;
pub use licenses::{ATTRIBUTION, licenses_markdown};
pub use reader::{
    FolderSummary, Sample, read_folder, read_shard, read_shard_lenient, read_shards,
    read_shards_lenient, shard_paths,
};
pub use sources::Style;
pub use split::Split;
