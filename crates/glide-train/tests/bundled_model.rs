//! The bundled model (`www/models/base.safetensors`) loads, carries a pruned vocabulary made from
//! its training captions, and every training caption encodes identically with the full and the
//! pruned merge list.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use glide_model::weights::StateDict;
use glide_pipeline::Text2Im;
use glide_tokenizer::{PrunedVocab, Tokenizer};
use glide_train::TrainConfig;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The emoji shards: `data/emoji` if `glide data emoji` made them, else built once under target/.
fn shards() -> PathBuf {
    let made = root().join("data/emoji");
    if made.join("manifest.json").exists() {
        return made;
    }
    let out = root().join("target/test-data/emoji");
    if !out.join("manifest.json").exists() {
        let opts = glide_data::EmojiOptions::new(root().join("node_modules"), &out);
        glide_data::build(&opts).expect("the emoji shards build (run `make setup` first)");
    }
    out
}

#[test]
fn bundled_model_loads_and_its_vocabulary_covers_its_training_captions() {
    let path = root().join("www/models/base.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): it is committed; restore it",
            path.display()
        )
    });
    let pipe = Text2Im::<Flex>::from_safetensors(&bytes, &Default::default()).unwrap();
    let state = StateDict::from_safetensors(&bytes).unwrap();
    let vocab: PrunedVocab = serde_json::from_str(&state.metadata["vocab"]).unwrap();
    assert_eq!(pipe.config.n_vocab, vocab.ids.len());
    assert!(
        vocab.ids.len() < 10_000,
        "{} rows: not pruned",
        vocab.ids.len()
    );
    let cfg = TrainConfig::parse(&state.metadata["training_config"]).unwrap();

    let train =
        glide_data::read_shards(&glide_data::shard_paths(&shards(), "train").unwrap()).unwrap();
    let captions: Vec<&str> = train
        .iter()
        .flat_map(|s| s.captions.iter().map(String::as_str))
        .collect();
    assert!(captions.len() > 40_000, "{} captions", captions.len());
    let full = Tokenizer::gpt2();
    let prompts = cfg.sample_prompts.iter().map(String::as_str);
    assert_eq!(
        full.prune(captions.iter().copied().chain(prompts)),
        vocab,
        "the vocabulary is not the one of these training captions (data version changed?)"
    );
    let pruned = Tokenizer::gpt2().with_pruned(&vocab).unwrap();
    for c in &captions {
        assert_eq!(pruned.encode(c), full.encode(c), "{c}");
    }
    // A visitor's unseen words still encode, to rows the model has.
    let rows = pruned.to_rows(&pruned.encode("a purple octopus playing the zither"));
    assert!(rows.iter().all(|&r| (r as usize) < vocab.ids.len()));
}
