//! Restoring a run's state before its first step: the checkpoint (`--resume`) or starting weights
//! (`--init`), the architecture they imply, the vocabulary, the teacher, and the model, EMA and
//! optimiser.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use glide_model::weights::{StateDict, apply_state_dict, config_from_metadata, inpaint_from_base};
use glide_model::{GlideConfig, Text2ImUNet};
use glide_tokenizer::{PrunedVocab, Tokenizer};

use crate::TrainError;
use crate::batch::{TrainData, mix};
use crate::checkpoint::Checkpoint;
use crate::checkpoint::checkpoint_path;
use crate::config::TrainConfig;
use crate::config::TrainOptions;
use crate::distill::{DistillStage, student_config};
use crate::ema::Ema;
use crate::objective::{self, Objective};
use crate::optim::{Adam, load_optimizer_state};

/// What the optimiser changes: the model (the UNet by default), its AdamW state and its EMA.
pub struct Learner<B: AutodiffBackend, M: AutodiffModule<B> = Text2ImUNet<B>> {
    pub model: M,
    pub optim: Adam<B, M>,
    pub ema: Ema<B::InnerBackend, M::InnerModule>,
}

/// A run's state at its first step.
pub struct RunState<B: AutodiffBackend> {
    /// The run's config, its model options as the checkpoint or starting weights say.
    pub cfg: TrainConfig,
    pub vocab: Option<PrunedVocab>,
    /// The diffusion loss, or a distillation stage with its teacher.
    pub objective: Box<dyn Objective<B>>,
    pub learner: Learner<B>,
    /// Steps already done (0 for a new run).
    pub step: usize,
    /// Training wall time of earlier invocations, in seconds.
    pub elapsed_before: f64,
}

impl<B: AutodiffBackend> RunState<B> {
    /// The state `cfg` and `opts` ask for, and the run's data.
    pub fn restore(
        mut cfg: TrainConfig,
        device: &B::Device,
        opts: &TrainOptions,
    ) -> Result<(Self, TrainData), TrainError> {
        let ckpt_path = checkpoint_path(Path::new(&cfg.out_dir));
        let resume = Checkpoint::for_resume(Path::new(&cfg.out_dir), opts.resume)?;
        let mut init = match &opts.init {
            Some(p) if resume.is_none() => {
                let bytes = std::fs::read(p).map_err(|e| TrainError::Io(p.clone(), e))?;
                Some(StateDict::from_safetensors(&bytes)?)
            }
            _ => None,
        };
        if let Some(state) = &mut init {
            adopt_init_architecture(&mut cfg, state)?;
        }
        let data = TrainData::load(&cfg.data, cfg.model.image_size)?;
        let vocab = run_vocab(
            &cfg,
            &data,
            resume.as_ref(),
            init.as_ref(),
            opts,
            &ckpt_path,
        )?;
        if let Some(v) = &vocab {
            cfg.model.n_vocab = v.ids.len();
        }
        if let Some(ck) = &resume {
            check_resume_options(&mut cfg, ck, &ckpt_path)?;
        }
        let tokenizer = tokenizer(vocab.as_ref())?;
        let objective = objective::for_run(&cfg, &data, &tokenizer, device)?;
        let learner = Learner::restore(&cfg, device, init.as_ref(), resume.as_ref())?;
        let state = Self {
            step: resume.as_ref().map_or(0, |c| c.step),
            elapsed_before: resume.as_ref().map_or(0.0, |c| c.elapsed_s),
            cfg,
            vocab,
            objective,
            learner,
        };
        Ok((state, data))
    }

    /// The GPT-2 tokenizer, pruned to the run's vocabulary if it has one.
    pub fn tokenizer(&self) -> Result<Tokenizer, TrainError> {
        tokenizer(self.vocab.as_ref())
    }
}

fn tokenizer(vocab: Option<&PrunedVocab>) -> Result<Tokenizer, TrainError> {
    let t = Tokenizer::gpt2();
    Ok(match vocab {
        Some(v) => t.with_pruned(v)?,
        None => t,
    })
}

/// Fine-tuning keeps the architecture (and vocabulary) of the weights it starts from. An
/// inpainting config turns base weights into an inpainting model (zero extra channels), a
/// `predict_v` config an ε model into a v model (its output layer relearns what it means; weights
/// that predict v keep doing so), and a distillation run the teacher into a student.
fn adopt_init_architecture(cfg: &mut TrainConfig, state: &mut StateDict) -> Result<(), TrainError> {
    let dropout = cfg.model.dropout;
    let inpaint = cfg.model.inpaint;
    let predict_v = cfg.model.predict_v;
    cfg.model = config_from_metadata(state)?.with_dropout(dropout);
    cfg.model.predict_v |= predict_v;
    if inpaint && !cfg.model.inpaint {
        *state = inpaint_from_base(state)?;
        cfg.model.inpaint = true;
    }
    if let Some(spec) = &cfg.distill {
        // Weights that already are a guidance-distilled student (an earlier run's, `glide
        // distill guidance --init`) keep their options.
        let m = &cfg.model;
        let stage_one_student = m.guidance_embed && m.predict_v && m.student_steps.is_none();
        if !(spec.stage == DistillStage::Guidance && stage_one_student) {
            cfg.model = student_config(&cfg.model, spec.stage)?;
        }
    }
    Ok(())
}

/// The run's vocabulary: the checkpoint's, the starting weights', or (with `prune_vocab`) GPT-2's
/// pruned to the training captions and sample prompts; `None` is GPT-2's full vocabulary.
fn run_vocab(
    cfg: &TrainConfig,
    data: &TrainData,
    resume: Option<&Checkpoint>,
    init: Option<&StateDict>,
    opts: &TrainOptions,
    ckpt_path: &Path,
) -> Result<Option<PrunedVocab>, TrainError> {
    let parse = |json: &str, from: PathBuf| {
        serde_json::from_str(json).map_err(|e| TrainError::BadCheckpoint(from, e.to_string()))
    };
    if let Some(ck) = resume {
        return ck
            .vocab
            .as_deref()
            .map(|j| parse(j, ckpt_path.to_path_buf()))
            .transpose();
    }
    if let Some(init) = init {
        let from = opts.init.clone().unwrap_or_default();
        return init
            .metadata
            .get("vocab")
            .map(|j| parse(j, from.clone()))
            .transpose();
    }
    Ok(cfg.prune_vocab.then(|| {
        let prompts = cfg.sample_prompts.iter().map(String::as_str);
        Tokenizer::gpt2().prune(data.captions().chain(prompts))
    }))
}

/// A resumed run keeps its model options: a distillation run's come from its teacher, so they
/// are taken from the checkpoint; any other run's must equal the config's.
fn check_resume_options(
    cfg: &mut TrainConfig,
    ck: &Checkpoint,
    ckpt_path: &Path,
) -> Result<(), TrainError> {
    let stored: serde_json::Value = serde_json::from_str(&ck.options)
        .map_err(|e| TrainError::BadCheckpoint(ckpt_path.to_path_buf(), e.to_string()))?;
    if cfg.distill.is_some() {
        cfg.model = GlideConfig::from_glide_options(&stored)?.with_dropout(cfg.model.dropout);
    }
    if stored != cfg.model.to_glide_options() {
        return Err(TrainError::OptionsChanged);
    }
    Ok(())
}

impl<B: AutodiffBackend> Learner<B> {
    /// A seeded initialisation (burn's initialisers draw from the backend RNG), then the starting
    /// weights or the checkpoint's model, EMA and optimiser state.
    fn restore(
        cfg: &TrainConfig,
        device: &B::Device,
        init: Option<&StateDict>,
        resume: Option<&Checkpoint>,
    ) -> Result<Self, TrainError> {
        B::seed(device, mix(cfg.seed, 0x1a17));
        let mut model: Text2ImUNet<B> = cfg.model.init::<B>(device);
        let apply = |m: Text2ImUNet<B>, sd: &StateDict| -> Result<Text2ImUNet<B>, TrainError> {
            let (m, report) = apply_state_dict(m, sd);
            // A new student keeps its fresh guidance embedding (its last layer is zero).
            let only_new_student_layers = report.unexpected.is_empty()
                && report.mismatched.is_empty()
                && cfg.model.guidance_embed
                && report
                    .missing
                    .iter()
                    .all(|k| k.starts_with("guidance_embed."));
            if report.is_clean() || only_new_student_layers {
                Ok(m)
            } else {
                Err(glide_model::WeightsError::Incompatible(report).into())
            }
        };
        if let Some(init) = init {
            model = apply(model, init)?;
        }
        if let Some(ck) = resume {
            model = apply(model, &ck.model)?;
        }
        let mut ema = Ema::new(model.valid());
        let mut optim = cfg.step_settings().adamw::<B, Text2ImUNet<B>>();
        if let Some(ck) = resume {
            let (m, report) = apply_state_dict(ema.model, &ck.ema);
            if !report.is_clean() {
                return Err(glide_model::WeightsError::Incompatible(report).into());
            }
            ema.model = m;
            optim = load_optimizer_state(optim, &model, &ck.optim, &ck.optim_times)?;
        }
        Ok(Self { model, optim, ema })
    }
}
