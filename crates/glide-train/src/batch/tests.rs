use std::collections::BTreeMap;
use std::sync::Arc;

use glide_model::GlideConfig;
use glide_tokenizer::Tokenizer;
use serde_json::json;

use super::{BatchMaker, Example};
use crate::config::{DataConfig, TrainConfig};

fn example(key: &str, base: &str) -> Example {
    Example {
        key: key.to_string(),
        pixels: vec![0; 4 * 4 * 3],
        captions: vec![key.to_string()],
        flip_ok: true,
        meta: json!({ "base": base, "group": "food-drink", "subgroup": "food-fruit" }),
    }
}

fn maker(data: Vec<Example>, balance: bool) -> BatchMaker {
    let cfg = TrainConfig::new(
        GlideConfig::tiny().with_image_size(4),
        DataConfig::new().with_balance(balance),
    );
    BatchMaker::new(Arc::new(data), Tokenizer::gpt2(), &cfg, 1000)
}

/// Six images of one emoji (skin tones), one each of two others.
fn skewed() -> Vec<Example> {
    let mut data: Vec<Example> = (0..6).map(|i| example(&format!("a{i}"), "A")).collect();
    data.push(example("b", "B"));
    data.push(example("c", "C"));
    data
}

fn counts(m: &mut BatchMaker, draws: usize) -> BTreeMap<String, usize> {
    let mut by_base = BTreeMap::new();
    for i in 0..draws {
        let idx = m.index(i);
        *by_base.entry(m.data[idx].base()).or_insert(0) += 1;
    }
    by_base
}

#[test]
fn balance_draws_every_emoji_once_per_epoch() {
    let mut m = maker(skewed(), true);
    // Three groups, so an epoch is three draws; ten epochs.
    let c = counts(&mut m, 30);
    assert_eq!(c.values().copied().collect::<Vec<_>>(), vec![10, 10, 10]);
    // Every variant of the big group still gets drawn.
    let keys: std::collections::BTreeSet<usize> = (0..300).map(|i| m.index(i)).collect();
    assert_eq!(keys.len(), 8);
    // The same draw for the same position, whatever was asked before (resume).
    let mut fresh = maker(skewed(), true);
    assert_eq!(fresh.index(29), m.index(29));
}

#[test]
fn without_balance_images_are_drawn_equally() {
    let mut m = maker(skewed(), false);
    let c = counts(&mut m, 80);
    assert_eq!(c["A"], 60);
    assert_eq!(c["B"], 10);
}

#[test]
fn groups_keep_by_group_or_subgroup() {
    let meta = json!({ "group": "food-drink", "subgroup": "food-fruit" });
    assert!(DataConfig::new().keeps(&meta));
    assert!(DataConfig::new().keeps(&serde_json::Value::Null));
    let by_group = DataConfig::new().with_groups(Some(vec!["food-drink".into()]));
    let by_sub = DataConfig::new().with_groups(Some(vec!["heart".into(), "food-fruit".into()]));
    let other = DataConfig::new().with_groups(Some(vec!["flags".into()]));
    assert!(by_group.keeps(&meta));
    assert!(by_sub.keeps(&meta));
    assert!(!other.keeps(&meta));
    assert!(!other.keeps(&serde_json::Value::Null));
}

#[test]
fn configs_written_before_the_data_options_still_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("configs/emoji32-cpu-v.json")).unwrap();
    assert!(!text.contains("balance") && !text.contains("groups"));
    let cfg = TrainConfig::parse(&text).unwrap();
    assert!(!cfg.data.balance);
    assert_eq!(cfg.data.groups, None);
    let gpu = TrainConfig::read(&root.join("configs/emoji32-gpu.json")).unwrap();
    assert!(gpu.data.balance);
}

#[test]
fn a_config_missing_top_level_options_takes_their_defaults() {
    let mut v: serde_json::Value = serde_json::to_value(TrainConfig::new(
        glide_model::GlideConfig::new(),
        DataConfig::new().with_shards(Some("data/emoji".into())),
    ))
    .unwrap();
    let o = v.as_object_mut().unwrap();
    for k in [
        "min_snr_gamma",
        "max_nonfinite_steps",
        "distill",
        "sample_prompts",
        "lr",
    ] {
        o.remove(k).unwrap();
    }
    o.get_mut("model")
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("predict_v");
    let cfg = TrainConfig::parse(&v.to_string()).unwrap();
    let d = TrainConfig::new(glide_model::GlideConfig::new(), DataConfig::new());
    assert_eq!(cfg.lr, d.lr);
    assert_eq!(cfg.sample_prompts, d.sample_prompts);
    assert_eq!(cfg.min_snr_gamma, None);
    assert!(cfg.distill.is_none());
    assert_eq!(cfg.model.predict_v, d.model.predict_v);
    assert_eq!(cfg.data.shards.as_deref(), Some("data/emoji"));
    let err = TrainConfig::parse("{\"lr\": \"fast\"}").unwrap_err();
    assert!(err.contains("lr") || err.contains("invalid type"), "{err}");
}
