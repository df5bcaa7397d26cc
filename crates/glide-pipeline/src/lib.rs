//! GLIDE text-to-image, as the paper samples it: the caption encoded once, classifier-free guidance
//! in one batched forward of `[cond; uncond]`, and any sampler of `glide-diffusion`. The CLI and
//! the web worker both call [`Text2Im::generate`], so they compute the same thing.

pub mod cascade;
pub mod cascade_edit;
pub mod clip_guided;
pub mod edit;
pub mod image;
pub mod mask;
pub mod text2im;

pub use cascade::{Cascade, UpsampleOptions};
pub use edit::{EditInput, EditMethod, EditRequest};
pub use mask::{MaskError, UserMask};
pub use text2im::{GenerateRequest, PipelineError, STUDENT_GUIDANCE, Text2Im};
