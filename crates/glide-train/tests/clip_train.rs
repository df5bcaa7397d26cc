//! `glide train-clip` on the CPU: a tiny clean CLIP learns to match the shapes folder's
//! captions to its pictures, the file it writes loads as a `NoisedClip` that the pipeline's
//! tokens fit, and a resumed run equals an uninterrupted one bit for bit.

use std::io::Write;
use std::path::Path;

use burn::backend::{Autodiff, Flex};
use glide_diffusion::{GaussianDiffusion, NoiseSchedule};
use glide_model::clip::{ClipConfig, NoisedClip};
use glide_model::weights::StateDict;
use glide_tokenizer::{PrunedVocab, Tokenizer};
use glide_train::batch::{TrainData, eval_batch};
use glide_train::clip_train::hooks::retrieval_accuracy;
use glide_train::clip_train::{ClipTrainConfig, train_clip};
use glide_train::objective::contrastive::Contrastive;
use glide_train::{DataConfig, TrainOptions};

mod common;
use common::{scratch, shapes_folder};

type B = Autodiff<Flex>;

/// burn's backend RNG is process-wide: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tiny_config(name: &str) -> ClipTrainConfig {
    let dir = scratch(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    shapes_folder(&data);
    let clip = ClipConfig::new()
        .with_image_size(16)
        .with_patch_size(4)
        .with_max_text_len(8)
        .with_n_embd(32)
        .with_n_head_state_text(16)
        .with_n_head_text(2)
        .with_n_xf_blocks_text(1)
        .with_n_head_state_image(16)
        .with_n_head_image(2)
        .with_n_xf_blocks_image(1)
        .with_logit_scale(10.0);
    let data = DataConfig::new()
        .with_folder(Some(data.to_string_lossy().into_owned()))
        .with_heldout_fraction(0.0)
        .with_flip(false);
    ClipTrainConfig::new(clip, data)
        .with_noised(false)
        .with_batch_size(12)
        .with_steps(80)
        .with_lr(3e-3)
        .with_warmup_steps(10)
        .with_ema_decay(0.9)
        .with_checkpoint_every(40)
        .with_eval_every(1000)
        .with_log_every(1)
        .with_out_dir(dir.join("run").to_string_lossy().into_owned())
}

fn options(resume: bool, stop_after: Option<usize>) -> TrainOptions {
    TrainOptions {
        resume,
        stop_after,
        quiet: true,
        ..Default::default()
    }
}

fn saved(cfg: &ClipTrainConfig) -> StateDict {
    let bytes = std::fs::read(std::path::Path::new(&cfg.out_dir).join("clip.safetensors")).unwrap();
    StateDict::from_safetensors(&bytes).unwrap()
}

#[test]
fn a_tiny_clean_clip_learns_which_caption_is_whose() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = tiny_config("clip-learns");
    let out = train_clip::<B>(
        cfg.clone(),
        vec![Default::default(); 2],
        options(false, None),
    )
    .unwrap();
    assert_eq!(out.step, 80);
    let first: f64 = out.rows[..2].iter().map(|r| r.loss).sum::<f64>() / 2.0;
    let last: f64 = out.rows[out.rows.len() - 2..]
        .iter()
        .map(|r| r.loss)
        .sum::<f64>()
        / 2.0;
    // Chance over 6 pairs a worker is ln 6 ≈ 1.79.
    assert!(first > 1.5 && last < 0.5 * first, "loss {first} → {last}");

    // The written file loads with its config and vocabulary, and retrieves the captions of the
    // training pictures (chance: 1 in 12).
    let state = saved(&cfg);
    let vocab: PrunedVocab = serde_json::from_str(&state.metadata["vocab"]).unwrap();
    let clip = NoisedClip::<Flex>::from_states(&[state], &Default::default()).unwrap();
    assert_eq!(clip.config.n_vocab, vocab.ids.len());
    let tokenizer = Tokenizer::gpt2().with_pruned(&vocab).unwrap();
    let data = TrainData::load(&cfg.data, 16).unwrap();
    let batch = eval_batch(&data.train, 12, &tokenizer, 16, 8, 1000, 0, false).unwrap();
    let view = Contrastive {
        diffusion: GaussianDiffusion::from_schedule(NoiseSchedule::SquaredcosCapV2, 1000),
        noised: false,
    };
    let acc = retrieval_accuracy(&view, &clip, &batch, &Default::default());
    eprintln!("loss {first:.3} → {last:.3}, retrieval accuracy {acc}");
    assert!(
        acc >= 0.75,
        "retrieval accuracy {acc} on the training pictures"
    );
}

#[test]
fn a_resumed_clip_run_equals_an_uninterrupted_one() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = tiny_config("clip-resume-a")
        .with_steps(12)
        .with_checkpoint_every(6)
        .with_eval_every(2);
    a.noised = true;
    // Retrieval is measured on held-out pictures.
    a.data.heldout_fraction = 0.25;
    let b = ClipTrainConfig {
        out_dir: scratch("clip-resume-b").to_string_lossy().into_owned(),
        ..a.clone()
    };
    let devices = || vec![Default::default(); 2];
    train_clip::<B>(a.clone(), devices(), options(false, None)).unwrap();
    // A fresh run drops an old run's rows; a resumed one those written after its checkpoint.
    let retrieval = |c: &ClipTrainConfig| Path::new(&c.out_dir).join("retrieval.csv");
    std::fs::create_dir_all(&b.out_dir).unwrap();
    std::fs::write(retrieval(&b), "step,a,b\n99,0.1,0.1\n").unwrap();
    let stopped = train_clip::<B>(b.clone(), devices(), options(false, Some(5))).unwrap();
    assert!(stopped.interrupted && stopped.step == 5);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(retrieval(&b))
        .unwrap();
    writeln!(f, "8,0.5,0.5").unwrap();
    let resumed = train_clip::<B>(b.clone(), devices(), options(true, None)).unwrap();
    assert_eq!(resumed.step, 12);
    let text = |c| std::fs::read_to_string(retrieval(c)).unwrap();
    // The interrupted invocation also evaluated the step it stopped on (5); otherwise the rows agree.
    let b_text = text(&b);
    let (stop_rows, b_rows): (Vec<&str>, Vec<&str>) =
        b_text.lines().partition(|l| l.starts_with("5,"));
    assert_eq!(stop_rows.len(), 1, "{b_text}");
    assert_eq!(
        text(&a).lines().collect::<Vec<_>>(),
        b_rows,
        "retrieval.csv differs after resuming"
    );
    assert_eq!(text(&a).lines().count(), 7, "{}", text(&a));
    let (sa, sb) = (saved(&a), saved(&b));
    assert_eq!(sa.tensors.len(), sb.tensors.len());
    for (k, v) in &sa.tensors {
        assert_eq!(
            v.as_bytes(),
            sb.tensors[k].as_bytes(),
            "{k} differs after resuming"
        );
    }
    // A resumed run keeps its towers: another width is refused with a sentence.
    let mut wider = b.clone();
    wider.clip.n_embd = 48;
    let err = train_clip::<B>(wider, devices(), options(true, None)).unwrap_err();
    assert!(err.to_string().contains("other model options"), "{err}");
}

#[test]
fn shipped_clip_configs_parse_validate_and_stay_small() {
    use burn::module::Module;
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (name, noised) in [
        ("clip-emoji32.json", true),
        ("clip-emoji32-eval.json", false),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs")
            .join(name);
        let mut cfg = ClipTrainConfig::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.validate(2).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cfg.noised, noised, "{name}");
        // The emoji captions prune GPT-2 to ~6,000 rows.
        cfg.clip.n_vocab = 6_000;
        let n = NoisedClip::<Flex>::init(cfg.clip.clone(), &Default::default()).num_params();
        assert!(n <= 2_000_000, "{name}: {n} parameters");
    }
    let mut odd = tiny_config("clip-odd");
    odd.batch_size = 3;
    assert!(odd.validate(2).unwrap_err().to_string().contains("2 pairs"));
}
