//! The generation form as kept in the URL (shareable) and in LocalStorage.

use glide_diffusion::sampling::Sampler;
use glide_pipeline::GenerateRequest;
use serde::{Deserialize, Serialize};
use web_sys::UrlSearchParams;

/// The form, as kept in the URL and LocalStorage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub prompt: String,
    pub negative: String,
    pub steps: usize,
    pub guidance: f64,
    /// Run the full base model with `steps` guided steps (the default) instead of the few-step
    /// distilled student.
    pub quality: bool,
    pub seed: u64,
    pub sampler: Sampler,
    pub batch: usize,
    /// CLIP guidance scale (0 = off); used when the model has a noised CLIP.
    pub clip_guidance: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prompt: "a red apple".into(),
            negative: String::new(),
            steps: 25,
            guidance: 3.0,
            quality: true,
            seed: 0,
            sampler: Sampler::Ddim,
            batch: 1,
            clip_guidance: 0.0,
        }
    }
}

impl Settings {
    pub fn from_query(q: &UrlSearchParams, mut s: Settings) -> Settings {
        if let Some(v) = q.get("prompt") {
            s.prompt = v;
        }
        if let Some(v) = q.get("negative") {
            s.negative = v;
        }
        if let Some(v) = q.get("steps").and_then(|v| v.parse().ok()) {
            s.steps = v;
        }
        if let Some(v) = q.get("guidance").and_then(|v| v.parse().ok()) {
            s.guidance = v;
        }
        if let Some(v) = q.get("seed").and_then(|v| v.parse().ok()) {
            s.seed = v;
        }
        if let Some(v) = q.get("sampler").and_then(|v| v.parse().ok()) {
            s.sampler = v;
        }
        if let Some(v) = q.get("batch").and_then(|v| v.parse().ok()) {
            s.batch = v;
        }
        if let Some(v) = q.get("clip_guidance").and_then(|v| v.parse::<f64>().ok()) {
            s.clip_guidance = v.max(0.0);
        }
        if let Some(v) = q.get("quality") {
            s.quality = v == "1" || v == "true";
        }
        s
    }

    pub fn write_query(&self, q: &UrlSearchParams) {
        q.set("prompt", &self.prompt);
        q.set("negative", &self.negative);
        q.set("steps", &self.steps.to_string());
        q.set("guidance", &self.guidance.to_string());
        q.set("seed", &self.seed.to_string());
        q.set("sampler", self.sampler.name());
        q.set("batch", &self.batch.to_string());
        q.set("quality", if self.quality { "1" } else { "0" });
        q.set("clip_guidance", &self.clip_guidance.to_string());
    }

    pub fn request(&self) -> GenerateRequest {
        GenerateRequest {
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            guidance_scale: self.guidance,
            steps: self.steps,
            sampler: self.sampler,
            seed: self.seed,
            batch_size: self.batch,
            ..Default::default()
        }
    }
}
