//! GLIDE (Nichol et al. 2021, arXiv 2112.10741) as burn modules: the text transformer (`xf.rs`)
//! and the ADM UNet (`unet.rs`, `resblock.rs`, `attention.rs`) whose attention layers see the text
//! through `encoder_kv`. The inpainting and super-resolution variants are config flags
//! ([`GlideConfig::inpaint`], [`GlideConfig::super_res`]), not copies.
//!
//! Parameter names follow the original `state_dict`, so original checkpoints map key for key
//! ([`weights`]); [`recognize`] tells which model a state_dict holds, and with the `pytorch`
//! feature [`pytorch`] converts OpenAI's `.pt` checkpoints without running their pickles.

pub mod attention;
#[cfg(not(target_arch = "wasm32"))]
mod cat_cpu;
pub mod check;
pub mod clip;
pub mod config;
pub mod conv;
#[cfg(not(target_arch = "wasm32"))]
mod conv_im2col;
#[cfg(not(target_arch = "wasm32"))]
mod cpu_ops;
pub mod group_norm;
#[cfg(not(target_arch = "wasm32"))]
mod group_norm_cpu;
pub mod half;
pub mod memory;
#[cfg(not(target_arch = "wasm32"))]
mod pointwise_cpu;
#[cfg(feature = "pytorch")]
pub mod pytorch;
#[cfg(not(target_arch = "wasm32"))]
mod qkv_attention;
pub mod recognize;
#[cfg(not(target_arch = "wasm32"))]
mod resample_cpu;
pub mod resblock;
pub mod shards;
pub mod silu;
pub mod unet;
pub mod weights;
pub mod xf;

pub use check::{CheckReport, check_fixture, check_fixture_with};
pub use config::GlideConfig;
pub use memory::{GpuFitError, GpuLimits, GpuNeeds, check_gpu_fit};
pub use shards::{ShardIndex, ShardInfo};
pub use unet::{ImageCond, Text2ImUNet, TextEmb, timestep_embedding};
pub use weights::{LoadReport, WeightsError};
