//! The emoji builder on the real npm packages, limited to the first emojibase entries.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use glide_data::emoji::DEFAULT_KEEP;
use glide_data::hexcode::base_key;
use glide_data::split::SplitPlan;
use glide_data::{BuildSummary, EmojiOptions, Sample, Style, read_shards, shard_paths};

/// The first 200 emojibase entries: smileys, then hands and people with skin tones and ZWJ
/// variants (345 emoji, about 1,400 images).
const LIMIT: usize = 200;
/// Kept in addition to the default list, spelled as skin-tone variants (thumbs up: medium skin
/// tone; crossed fingers: light skin tone). With seed 0 and only the default list kept, both groups
/// are held out (checked in `keep_list_is_never_held_out`).
const EXTRA_KEEP: [&str; 2] = ["1F44D-1F3FD", "1F91E-1F3FB"];

struct Built {
    out: PathBuf,
    summary: BuildSummary,
    samples: Vec<Sample>,
    samples_256: Vec<Sample>,
}

fn options(out: PathBuf, seed: u64, limit: usize) -> EmojiOptions {
    let mut opts = EmojiOptions::new(common::node_modules(), out);
    opts.seed = seed;
    opts.limit = Some(limit);
    opts.shard_size = 500;
    opts.keep.extend(EXTRA_KEEP.map(String::from));
    opts
}

/// One build shared by the structure and split tests.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = common::temp_dir("emoji");
        let summary = glide_data::build(&options(out.clone(), 0, LIMIT)).unwrap();
        let mut paths = shard_paths(&out, "train").unwrap();
        paths.extend(shard_paths(&out, "heldout").unwrap());
        let mut large = shard_paths(&out.join("256"), "train").unwrap();
        large.extend(shard_paths(&out.join("256"), "heldout").unwrap());
        Built {
            samples: read_shards(&paths).unwrap(),
            samples_256: read_shards(&large).unwrap(),
            out,
            summary,
        }
    })
}

fn meta_str<'a>(s: &'a Sample, field: &str) -> &'a str {
    s.meta[field]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no string field {field}: {}", s.key, s.meta))
}

#[test]
fn shards_hold_64px_rgb_captions_and_metadata() {
    let b = built();
    assert_eq!(b.samples.len(), b.summary.images);
    assert!(b.samples.len() > 1000, "{} samples", b.samples.len());
    let mut keys = BTreeSet::new();
    for s in &b.samples {
        assert!(keys.insert(s.key.clone()), "duplicate key {}", s.key);
        assert!(!s.key.contains('.'), "{}", s.key);
        assert_eq!(s.image.dimensions(), (64, 64), "{}", s.key);
        assert!(
            !s.captions.is_empty() && s.captions.iter().all(|c| !c.trim().is_empty()),
            "{}",
            s.key
        );
        for field in [
            "key", "hexcode", "emoji", "label", "group", "subgroup", "base", "style", "split",
            "source", "license",
        ] {
            assert!(
                !meta_str(s, field).is_empty(),
                "{} has an empty {field}",
                s.key
            );
        }
        assert!(s.meta["tags"].is_array(), "{}", s.key);
        assert_eq!(s.meta["flip"].as_bool(), Some(s.flip_ok), "{}", s.key);
        assert_eq!(meta_str(s, "key"), s.key);
        let style = Style::from_name(meta_str(s, "style")).unwrap();
        assert!(
            s.key.starts_with(&format!("{}_", style.name())),
            "{}",
            s.key
        );
        assert_eq!(meta_str(s, "license"), style.license());
        assert!(meta_str(s, "source").starts_with(&format!("{}@", style.package())));
    }
    for style in Style::ALL {
        let n = b
            .samples
            .iter()
            .filter(|s| meta_str(s, "style") == style.name())
            .count();
        assert!(n > 200, "{style}: {n} samples");
    }
    // Skin tones and ZWJ variants are in.
    assert!(
        keys.contains("noto_1f44b-1f3fb"),
        "waving hand: light skin tone"
    );
    // Symbols never flip; a plain face may.
    let by_key: BTreeMap<&str, &Sample> = b.samples.iter().map(|s| (s.key.as_str(), s)).collect();
    assert!(by_key["noto_1f600"].flip_ok);
    assert!(
        !by_key["noto_1f449"].flip_ok,
        "backhand index pointing right"
    );
}

#[test]
fn large_copies_exist_for_openmoji_and_fluent() {
    let b = built();
    let large: BTreeMap<&str, &Sample> =
        b.samples_256.iter().map(|s| (s.key.as_str(), s)).collect();
    assert_eq!(large.len(), b.summary.images_256);
    for s in &b.samples {
        let style = meta_str(s, "style");
        let expected = style == "openmoji" || style == "fluent-3d";
        assert_eq!(large.contains_key(s.key.as_str()), expected, "{}", s.key);
        if let Some(l) = large.get(s.key.as_str()) {
            assert_eq!(l.image.dimensions(), (256, 256), "{}", s.key);
            assert_eq!(l.captions, s.captions);
            assert_eq!(l.meta, s.meta);
        }
    }
}

#[test]
fn manifest_and_licences_are_written() {
    let b = built();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.out.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["seed"], 0);
    assert_eq!(manifest["packages"]["openmoji"], "17.0.0");
    assert_eq!(manifest["images"], b.samples.len());
    assert!(!manifest["caption_examples"].as_array().unwrap().is_empty());
    let licenses = std::fs::read_to_string(b.out.join("LICENSES.md")).unwrap();
    for needle in [
        "Apache-2.0",
        "CC-BY-4.0",
        "CC-BY-SA-4.0",
        "MIT",
        glide_data::ATTRIBUTION,
    ] {
        assert!(licenses.contains(needle), "LICENSES.md lacks {needle}");
    }
}

#[test]
fn heldout_emoji_are_unseen_and_heldout_pairs_are_compositional() {
    let b = built();
    let split_of = |s: &Sample| meta_str(s, "split").to_string();
    let train: Vec<&Sample> = b
        .samples
        .iter()
        .filter(|s| split_of(s) == "train")
        .collect();
    let train_bases: BTreeSet<&str> = train.iter().map(|s| meta_str(s, "base")).collect();
    let train_styles: BTreeSet<&str> = train.iter().map(|s| meta_str(s, "style")).collect();
    let (mut emoji, mut pairs) = (0, BTreeMap::new());
    for s in &b.samples {
        let base = meta_str(s, "base");
        assert_eq!(base, base_key(meta_str(s, "hexcode")));
        match split_of(s).as_str() {
            "train" => {}
            "heldout_emoji" => {
                emoji += 1;
                assert!(
                    !train_bases.contains(base),
                    "{} is held out but {base} is trained",
                    s.key
                );
            }
            "heldout_pair" => {
                assert!(
                    train_bases.contains(base),
                    "{}: {base} is not trained in any style",
                    s.key
                );
                assert!(train_styles.contains(meta_str(s, "style")));
                pairs
                    .entry(base.to_string())
                    .or_insert_with(BTreeSet::new)
                    .insert(meta_str(s, "style").to_string());
            }
            other => panic!("{}: unknown split {other}", s.key),
        }
    }
    assert!(
        emoji > 0 && !pairs.is_empty(),
        "nothing held out: {emoji} emoji, {} pairs",
        pairs.len()
    );
    assert!(
        pairs.values().all(|styles| styles.len() == 1),
        "two styles of one emoji held out: {pairs:?}"
    );
    // Variants share their group's fate: every base is on one side per style.
    let mut side: BTreeMap<(&str, &str), String> = BTreeMap::new();
    for s in &b.samples {
        let previous = side.insert((meta_str(s, "base"), meta_str(s, "style")), split_of(s));
        assert!(
            previous.is_none_or(|p| p == split_of(s)),
            "{} is split from its group",
            s.key
        );
    }
    // The shards are named for their split.
    for path in &b.summary.shards {
        let name = path.file_name().unwrap().to_str().unwrap();
        let held = read_shards(std::slice::from_ref(path))
            .unwrap()
            .iter()
            .all(|s| split_of(s) != "train");
        assert_eq!(name.starts_with("heldout-"), held, "{name}");
    }
}

#[test]
fn keep_list_is_never_held_out() {
    let b = built();
    let kept: BTreeSet<String> = DEFAULT_KEEP
        .iter()
        .chain(EXTRA_KEEP.iter())
        .map(|h| base_key(h))
        .collect();
    let mut seen = BTreeSet::new();
    for s in &b.samples {
        if kept.contains(meta_str(s, "base")) {
            seen.insert(meta_str(s, "base").to_string());
            assert_eq!(
                meta_str(s, "split"),
                "train",
                "{} is kept but held out",
                s.key
            );
        }
    }
    assert!(
        seen.len() >= 3,
        "kept groups present in this build: {seen:?}"
    );
    // Without the extra keep entries, seed 0 would hold these groups out: the keep list is what
    // protects them.
    let mut groups: BTreeMap<String, BTreeSet<Style>> = BTreeMap::new();
    for s in &b.samples {
        let style = Style::from_name(meta_str(s, "style")).unwrap();
        groups
            .entry(meta_str(s, "base").to_string())
            .or_default()
            .insert(style);
    }
    let defaults: BTreeSet<String> = DEFAULT_KEEP.iter().map(|h| base_key(h)).collect();
    let unprotected = SplitPlan::new(&groups, &defaults, 0);
    let pair_bases: BTreeSet<&String> = unprotected.heldout_pairs.iter().map(|(b, _)| b).collect();
    for extra in EXTRA_KEEP {
        let base = base_key(extra);
        assert!(
            unprotected.heldout_emoji.contains(&base) || pair_bases.contains(&base),
            "{base} would not be held out anyway; pick another EXTRA_KEEP entry"
        );
    }
}

#[test]
fn same_seed_gives_identical_shards_and_another_seed_differs() {
    let builds: Vec<(PathBuf, BuildSummary)> = [0, 0, 1]
        .into_iter()
        .map(|seed| {
            let out = common::temp_dir("determinism");
            let summary = glide_data::build(&options(out.clone(), seed, 60)).unwrap();
            (out, summary)
        })
        .collect();
    let files = |(out, summary): &(PathBuf, BuildSummary)| -> BTreeMap<PathBuf, Vec<u8>> {
        summary
            .shards
            .iter()
            .chain(&summary.shards_256)
            .chain([&out.join("manifest.json")])
            .map(|p| {
                (
                    p.strip_prefix(out).unwrap().to_path_buf(),
                    std::fs::read(p).unwrap(),
                )
            })
            .collect()
    };
    let (a, b, c) = (files(&builds[0]), files(&builds[1]), files(&builds[2]));
    assert!(a.len() >= 4, "{:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{} differs between two builds with seed 0",
            name.display()
        );
    }
    assert_ne!(a, c, "seed 1 wrote the same files as seed 0");
    let read = |(_, summary): &(PathBuf, BuildSummary)| -> BTreeMap<String, (Vec<String>, String)> {
        read_shards(&summary.shards)
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.key.clone(),
                    (s.captions.clone(), meta_str(&s, "split").to_string()),
                )
            })
            .collect()
    };
    let (seed0, seed1) = (read(&builds[0]), read(&builds[2]));
    assert_eq!(
        seed0.keys().collect::<Vec<_>>(),
        seed1.keys().collect::<Vec<_>>()
    );
    let differing = seed0.iter().filter(|(k, v)| &seed1[*k] != *v).count();
    assert!(
        differing > seed0.len() / 2,
        "only {differing} samples changed captions or split"
    );
    for (out, _) in &builds {
        std::fs::remove_dir_all(out).unwrap();
    }
}

#[test]
fn a_smaller_rebuild_removes_stale_shards() {
    let out = common::temp_dir("stale");
    let mut opts = options(out.clone(), 0, 20);
    opts.shard_size = 10;
    let first = glide_data::build(&opts).unwrap();
    opts.shard_size = 1000;
    let second = glide_data::build(&opts).unwrap();
    assert!(first.shards.len() > second.shards.len());
    assert_eq!(
        shard_paths(&out, "train").unwrap(),
        second.shards[..1].to_vec()
    );
    std::fs::remove_dir_all(out).unwrap();
}
