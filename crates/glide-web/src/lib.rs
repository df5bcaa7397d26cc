//! Messages between the page (`bin/app.rs`) and its web worker (`bin/worker.rs`), as JSON. The
//! worker owns the model; the page only draws. Both binaries share this file, like candle's wasm
//! examples.

pub mod mask_canvas;

use glide_pipeline::{EditRequest, GenerateRequest, UserMask};
use serde::{Deserialize, Serialize};

/// Which backend the worker should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// WebGPU when the browser has an adapter, else the CPU.
    #[default]
    Auto,
    Webgpu,
    Cpu,
}

impl BackendChoice {
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Self::Cpu,
            "webgpu" | "gpu" | "wgpu" => Self::Webgpu,
            _ => Self::Auto,
        }
    }
}

/// Page → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ToWorker {
    /// Fetch weights (through Cache Storage) and set up a backend.
    /// `url` is a safetensors file or a shard index (`*.safetensors.index.json`); with
    /// `upsampler`, the two run as GLIDE's cascade.
    Load {
        url: String,
        backend: BackendChoice,
        #[serde(default)]
        upsampler: Option<String>,
        /// Treat the adapter as allowing buffers of at most this many bytes (`?gpu_max_buffer=`:
        /// to see what a smaller GPU would say).
        #[serde(default)]
        max_buffer: Option<u64>,
        /// `?weights_dtype=f16|f32`: hold the weights in this dtype (f16 only where the backend
        /// can: the CPU always, a GPU with `shader-f16`). Unset: f16 on a `shader-f16` GPU and,
        /// on the CPU, for models over 1 GB in f32.
        #[serde(default)]
        weights_dtype: Option<String>,
        /// Treat the CPU path as having at most this many bytes (`?cpu_memory=`: to see what a
        /// smaller tab would say).
        #[serde(default)]
        cpu_memory: Option<u64>,
    },
    Generate {
        id: u64,
        request: GenerateRequest,
        /// The upsampler's respacing in a cascade (default "fast27", the notebook's).
        #[serde(default)]
        upsample_respacing: Option<String>,
        /// CLIP guidance (GLIDE §2.4) with a noised CLIP, loaded on first use.
        #[serde(default)]
        clip: Option<ClipGuidance>,
    },
    /// Edit a picture (inpainting or image-to-image). The picture is RGB at the model's size;
    /// `mask` is what the visitor painted (any size; `None` = change everything). `weights` names
    /// the inpainting model to use (loaded on first use); `None` uses the base model with the
    /// replacement trick. With `upsampler` (an upsampling inpainting model) the two run as GLIDE's
    /// inpainting cascade, and the picture is at the upsampler's size.
    Edit {
        id: u64,
        request: EditRequest,
        image: Vec<u8>,
        mask: Option<EditMask>,
        weights: Option<String>,
        #[serde(default)]
        upsampler: Option<String>,
        /// The upsampler's respacing in a cascade (default "fast27").
        #[serde(default)]
        upsample_respacing: Option<String>,
    },
    Cancel {
        id: u64,
    },
    /// A test hook: the worker panics, as a crash would (the browser test checks that the page
    /// says so and can restart it).
    Crash,
    /// A test hook: the worker destroys its WebGPU device, which the browser then reports lost
    /// exactly as after a driver reset or a GPU process crash.
    LoseDevice,
}

/// CLIP guidance for one generation: the noised CLIP's weights (a safetensors file relative to
/// the page) and the guidance scale (the paper's s for CLIP; combines with classifier-free
/// guidance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipGuidance {
    pub url: String,
    pub scale: f64,
}

/// A painted mask on the wire: `regenerate` as one byte per pixel (1 = regenerate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditMask {
    pub width: usize,
    pub height: usize,
    pub regenerate: Vec<u8>,
}

impl From<&UserMask> for EditMask {
    fn from(m: &UserMask) -> Self {
        Self {
            width: m.width,
            height: m.height,
            regenerate: m.regenerate.iter().map(|&r| u8::from(r)).collect(),
        }
    }
}

impl EditMask {
    /// Back to a [`UserMask`]; `None` when the sizes do not add up.
    pub fn to_user_mask(&self) -> Option<UserMask> {
        (self.regenerate.len() == self.width * self.height).then(|| UserMask {
            width: self.width,
            height: self.height,
            regenerate: self.regenerate.iter().map(|&r| r != 0).collect(),
        })
    }
}

fn one() -> usize {
    1
}

/// Worker → page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum FromWorker {
    /// The worker's wasm is running and listening (messages sent before this are lost).
    Started,
    /// Weight download progress (`total` 0 when unknown).
    Progress {
        loaded: u64,
        total: u64,
        cached: bool,
    },
    /// What the model will ask of the GPU, before its weights are downloaded (MB).
    Needs {
        weights_mb: f64,
        total_mb: f64,
        largest_buffer_mb: f64,
        /// The adapter's largest buffer, when running on WebGPU (`None` on the CPU).
        limit_mb: Option<f64>,
        /// Stages counted: 2 for a cascade (both held, run one after the other).
        #[serde(default = "one")]
        stages: usize,
        /// The weights are held in f16 (on a `shader-f16` GPU; on the CPU for models over 1 GB
        /// or when asked); else f32.
        #[serde(default)]
        f16: bool,
    },
    /// Ready to generate. `backend` is "webgpu" or "cpu"; `note` explains a fallback.
    Ready {
        backend: String,
        note: Option<String>,
        image_size: usize,
        params: usize,
        model: String,
        /// A distilled student's own step count (it ignores the steps setting).
        #[serde(default)]
        student_steps: Option<usize>,
        /// Side of the finished images (the upsampler's in a cascade; else `image_size`).
        #[serde(default)]
        output_size: usize,
        /// The dtypes the loaded parameters are held in, read back from the model ("f16",
        /// "f32"; both in a cascade whose stages differ).
        #[serde(default)]
        weights_dtype: String,
    },
    /// One step done; `previews` are RGB bytes of the predicted x₀ per image.
    Step {
        id: u64,
        step: usize,
        total: usize,
        previews: Vec<Vec<u8>>,
        /// 0 = the base model, 1 = the upsampler of a cascade.
        #[serde(default)]
        stage: usize,
        /// Side of the previews.
        #[serde(default)]
        size: usize,
    },
    /// Finished: PNG files (with parameters) and the raw samples in [-1, 1] (`[B, 3, H, W]`).
    Done {
        id: u64,
        pngs: Vec<Vec<u8>>,
        raw: Vec<f32>,
        ms_per_step: f64,
        evaluations: usize,
    },
    Cancelled {
        id: u64,
        step: usize,
    },
    Error {
        message: String,
    },
    /// The WebGPU device was lost (driver reset, GPU process crash): the worker cannot go on and
    /// must be restarted (on the same GPU, or the CPU).
    DeviceLost {
        message: String,
    },
}

/// The message the page sends for weights picked from the visitor's disk. It is a JS object, not
/// JSON, because it carries `File` handles (read in the worker; nothing is uploaded):
/// `{ type: "LoadFiles", files: File[], backend: "auto" | "webgpu" | "cpu" }`.
pub const LOAD_FILES: &str = "LoadFiles";

/// One entry of the page's model picker (`www/models/models.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    pub label: String,
    /// The base model: a safetensors file or a shard index, relative to the page.
    pub weights: String,
    /// A distilled few-step student of `weights` (the Quality switch).
    #[serde(default)]
    pub student: Option<String>,
    /// The inpainting model the editor uses.
    #[serde(default)]
    pub inpaint: Option<String>,
    /// With `upsampler` and `inpaint`: the upsampling inpainting model. The editor then works at
    /// the upsampler's size and runs GLIDE's inpainting cascade.
    #[serde(default)]
    pub upsample_inpaint: Option<String>,
    /// A super-resolution model: the entry runs as a cascade.
    #[serde(default)]
    pub upsampler: Option<String>,
    /// A noised CLIP trained for `weights` (CLIP guidance).
    #[serde(default)]
    pub clip: Option<String>,
    /// Default respacing of the base model ("fast27" for the released ones).
    #[serde(default)]
    pub respacing: Option<String>,
    /// Default respacing of the upsampler.
    #[serde(default)]
    pub upsample_respacing: Option<String>,
}

/// The model picker's entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub models: Vec<ModelEntry>,
}

impl ModelList {
    /// The bundled emoji model: the picker's only entry when `models.json` cannot be read.
    pub fn bundled() -> Self {
        Self {
            models: vec![ModelEntry {
                id: "emoji".into(),
                label: "emoji: food, animals, hearts (bundled)".into(),
                weights: "www/models/base.safetensors".into(),
                student: Some("www/models/student.safetensors".into()),
                inpaint: Some("www/models/inpaint.safetensors".into()),
                upsample_inpaint: None,
                upsampler: None,
                clip: Some("www/models/clip-noised.safetensors".into()),
                respacing: None,
                upsample_respacing: None,
            }],
        }
    }

    pub fn find(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let m = ToWorker::Generate {
            id: 3,
            request: GenerateRequest {
                prompt: "a red apple".into(),
                ..Default::default()
            },
            upsample_respacing: None,
            clip: Some(ClipGuidance {
                url: "www/models/clip-noised.safetensors".into(),
                scale: 8.0,
            }),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains("\"type\":\"Generate\""));
        match serde_json::from_str::<ToWorker>(&s).unwrap() {
            ToWorker::Generate {
                id, request, clip, ..
            } => {
                assert_eq!(id, 3);
                assert_eq!(request.prompt, "a red apple");
                assert_eq!(clip.unwrap().scale, 8.0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(BackendChoice::parse("CPU"), BackendChoice::Cpu);
        let mut mask = UserMask::filled(3, 2, false);
        mask.regenerate[4] = true;
        let edit = ToWorker::Edit {
            id: 4,
            request: EditRequest::default(),
            image: vec![1, 2, 3],
            mask: Some(EditMask::from(&mask)),
            weights: Some("www/models/inpaint.safetensors".into()),
            upsampler: None,
            upsample_respacing: None,
        };
        let s = serde_json::to_string(&edit).unwrap();
        match serde_json::from_str::<ToWorker>(&s).unwrap() {
            ToWorker::Edit {
                request, mask: m, ..
            } => {
                assert_eq!(request, EditRequest::default());
                assert_eq!(m.unwrap().to_user_mask().unwrap(), mask);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(BackendChoice::parse("webgpu"), BackendChoice::Webgpu);
    }

    #[test]
    fn the_committed_model_list_parses_and_starts_with_the_bundled_model() {
        let text = include_str!("../../../www/models/models.json");
        let list: ModelList = serde_json::from_str(text).unwrap();
        assert_eq!(list.models[0], ModelList::bundled().models[0]);
        // an old page's Load message (no upsampler, no limit) still parses
        let old = r#"{"type":"Load","url":"a.safetensors","backend":"cpu"}"#;
        assert!(matches!(
            serde_json::from_str::<ToWorker>(old).unwrap(),
            ToWorker::Load {
                upsampler: None,
                max_buffer: None,
                weights_dtype: None,
                cpu_memory: None,
                ..
            }
        ));
    }
}
