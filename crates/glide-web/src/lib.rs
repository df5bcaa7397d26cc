//! Messages between the page (`bin/app.rs`) and its web worker (`bin/worker.rs`), as JSON. The
//! worker owns the model; the page only draws. Both binaries share this file, like candle's wasm
//! examples.

use glide_pipeline::GenerateRequest;
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
    Cancel {
        id: u64,
    },
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
        assert_eq!(BackendChoice::parse("webgpu"), BackendChoice::Webgpu);
    }
}
