//! The emojibase catalogue (`emojibase-data/en/data.json`, MIT): names, tags, groups and skin-tone
//! variants, the source of every caption.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::DataError;

/// One emoji, a base entry or one of its skin-tone variants, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct EmojiEntry {
    /// As emojibase spells it (`1F44B-1F3FB`).
    pub hexcode: String,
    /// The emoji itself (`👋🏻`).
    pub emoji: String,
    /// The CLDR name (`waving hand: light skin tone`).
    pub label: String,
    /// Keywords; skin-tone variants inherit their base entry's.
    pub tags: Vec<String>,
    /// Group name from `meta/groups.json` (`people-body`).
    pub group: String,
    /// Subgroup name (`hand-fingers-open`).
    pub subgroup: String,
}

/// emojibase groups that are not pictures of their own: skin-tone swatches and hair components.
const SKIPPED_GROUPS: &[&str] = &["component"];

#[derive(Deserialize)]
struct RawEntry {
    label: String,
    hexcode: String,
    emoji: String,
    #[serde(default)]
    tags: Vec<String>,
    group: Option<u32>,
    subgroup: Option<u32>,
    #[serde(default)]
    skins: Vec<RawEntry>,
}

#[derive(Deserialize)]
struct RawGroups {
    groups: BTreeMap<String, String>,
    subgroups: BTreeMap<String, String>,
}

/// Reads `data.json` and `meta/groups.json` from the `emojibase-data` package folder and returns
/// the entries in emojibase order, each base entry followed by its skin-tone variants.
///
/// Entries without a group (regional indicator letters) and the `component` group are left out.
/// `limit` keeps only the first N base entries (with their variants), for fast tests.
pub fn load(package_dir: &Path, limit: Option<usize>) -> Result<Vec<EmojiEntry>, DataError> {
    let data_path = package_dir.join("en").join("data.json");
    let groups_path = package_dir.join("meta").join("groups.json");
    let raw: Vec<RawEntry> = read_json(&data_path, "the emojibase English data")?;
    let groups: RawGroups = read_json(&groups_path, "the emojibase group names")?;
    let name = |table: &BTreeMap<String, String>, id: u32| -> String {
        table
            .get(&id.to_string())
            .cloned()
            .unwrap_or_else(|| format!("group-{id}"))
    };

    let mut entries = Vec::new();
    let mut bases = 0;
    for base in raw {
        let (Some(group), Some(subgroup)) = (base.group, base.subgroup) else {
            continue;
        };
        let group = name(&groups.groups, group);
        if SKIPPED_GROUPS.contains(&group.as_str()) {
            continue;
        }
        if limit.is_some_and(|n| bases >= n) {
            break;
        }
        bases += 1;
        let subgroup = name(&groups.subgroups, subgroup);
        let variants = std::iter::once((base.hexcode, base.emoji, base.label)).chain(
            base.skins
                .into_iter()
                .map(|skin| (skin.hexcode, skin.emoji, skin.label)),
        );
        for (hexcode, emoji, label) in variants {
            entries.push(EmojiEntry {
                hexcode,
                emoji,
                label,
                tags: base.tags.clone(),
                group: group.clone(),
                subgroup: subgroup.clone(),
            });
        }
    }
    Ok(entries)
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::BadPackageFile {
        path: path.to_path_buf(),
        what,
        detail: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| DataError::BadPackageFile {
        path: path.to_path_buf(),
        what,
        detail: e.to_string(),
    })
}
