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
    Load {
        url: String,
        backend: BackendChoice,
    },
    Generate {
        id: u64,
        request: GenerateRequest,
    },
    /// Edit a picture (inpainting or image-to-image). The picture is RGB at the model's size;
    /// `mask` is what the visitor painted (any size; `None` = change everything). `weights` names
    /// the inpainting model to use (loaded on first use); `None` uses the base model with the
    /// replacement trick.
    Edit {
        id: u64,
        request: EditRequest,
        image: Vec<u8>,
        mask: Option<EditMask>,
        weights: Option<String>,
    },
    Cancel {
        id: u64,
    },
    /// A test hook: the worker panics, as a crash would (the browser test checks that the page
    /// says so and can restart it).
    Crash,
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
    },
    /// One step done; `previews` are RGB bytes of the predicted x₀ per image.
    Step {
        id: u64,
        step: usize,
        total: usize,
        previews: Vec<Vec<u8>>,
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
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains("\"type\":\"Generate\""));
        match serde_json::from_str::<ToWorker>(&s).unwrap() {
            ToWorker::Generate { id, request } => {
                assert_eq!(id, 3);
                assert_eq!(request.prompt, "a red apple");
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
}
