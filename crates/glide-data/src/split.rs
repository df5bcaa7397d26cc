//! The train / held-out split, chosen to test generalisation rather than memorisation.
//!
//! * `heldout_emoji`: about 5% of emoji groups (see [`crate::hexcode::base_key`]) in every style;
//!   the model never sees that emoji, so its captions test composition of known words.
//! * `heldout_pair`: about 5% of (group, style) pairs among the remaining groups drawn in at least
//!   two styles, at most one style per group; the emoji and the style are both seen in training,
//!   just never together.
//!
//! Everything is ranked by a stable hash ([`stable_hash`]: FNV-1a, then a finaliser) of the seed
//! and the name (never std's
//! `DefaultHasher`, whose output may change between Rust releases), so a seed fixes the split on
//! every machine and for every subset built with `limit`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::sources::Style;

/// Share of emoji groups held out in every style.
pub const HELDOUT_EMOJI_FRACTION: f64 = 0.05;
/// Share of (group, style) pairs held out among groups with two or more styles.
pub const HELDOUT_PAIR_FRACTION: f64 = 0.05;

/// 64-bit FNV-1a over the parts, each followed by a 0xFF byte (which UTF-8 never contains) so that
/// `["ab", "c"]` and `["a", "bc"]` hash differently.
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// [`fnv1a64`] followed by the SplitMix64 finaliser. FNV-1a alone mixes its last input bytes into
/// the high bits poorly, so ranking by it would hold out runs of neighbouring code points (all
/// flags starting with A); the finaliser spreads every input bit over the whole word.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut z = fnv1a64(parts);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which side of the split a sample is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    HeldoutEmoji,
    HeldoutPair,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::HeldoutEmoji, Split::HeldoutPair];

    /// The name stored in each sample's json (`train`, `heldout_emoji`, `heldout_pair`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::HeldoutEmoji => "heldout_emoji",
            Split::HeldoutPair => "heldout_pair",
        }
    }

    /// The shard file prefix: both held-out kinds share the `heldout-` shards.
    pub fn shard_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::HeldoutEmoji | Split::HeldoutPair => "heldout",
        }
    }
}

/// The held-out emoji groups and (group, style) pairs of one build.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplitPlan {
    pub heldout_emoji: BTreeSet<String>,
    pub heldout_pairs: BTreeSet<(String, Style)>,
}

impl SplitPlan {
    /// Chooses the held-out groups and pairs. `groups` maps each base key to the styles it is drawn
    /// in; groups in `keep` are never held out (in either way).
    pub fn new(
        groups: &BTreeMap<String, BTreeSet<Style>>,
        keep: &BTreeSet<String>,
        seed: u64,
    ) -> Self {
        let rank = |parts: &[&[u8]]| stable_hash(&[&[&seed.to_le_bytes()[..]], parts].concat());

        let mut eligible: Vec<&String> = groups.keys().filter(|b| !keep.contains(*b)).collect();
        eligible.sort_by_key(|b| (rank(&[b"heldout_emoji", b.as_bytes()]), *b));
        let n_emoji = share(eligible.len(), HELDOUT_EMOJI_FRACTION);
        let heldout_emoji: BTreeSet<String> =
            eligible[..n_emoji].iter().map(|b| (*b).clone()).collect();

        // Groups per style left in training, so that no pair takes a style's last training group.
        let mut train_groups: BTreeMap<Style, usize> = BTreeMap::new();
        for (base, styles) in groups {
            if !heldout_emoji.contains(base) {
                for style in styles {
                    *train_groups.entry(*style).or_default() += 1;
                }
            }
        }
        let mut candidates: Vec<(&String, Style)> = groups
            .iter()
            .filter(|(b, styles)| {
                styles.len() >= 2 && !keep.contains(*b) && !heldout_emoji.contains(*b)
            })
            .flat_map(|(b, styles)| styles.iter().map(move |s| (b, *s)))
            .collect();
        let n_pairs = share(candidates.len(), HELDOUT_PAIR_FRACTION);
        candidates.sort_by_key(|(b, s)| {
            (
                rank(&[b"heldout_pair", b.as_bytes(), s.name().as_bytes()]),
                *b,
                *s,
            )
        });
        let mut heldout_pairs = BTreeSet::new();
        let mut taken_groups = BTreeSet::new();
        for (base, style) in candidates {
            if heldout_pairs.len() == n_pairs {
                break;
            }
            let left = train_groups.get_mut(&style).expect("counted above");
            if *left <= 1 || taken_groups.contains(base) {
                continue;
            }
            *left -= 1;
            taken_groups.insert(base);
            heldout_pairs.insert((base.clone(), style));
        }
        SplitPlan {
            heldout_emoji,
            heldout_pairs,
        }
    }

    /// The split of a sample of group `base` in `style`.
    pub fn split_of(&self, base: &str, style: Style) -> Split {
        if self.heldout_emoji.contains(base) {
            Split::HeldoutEmoji
        } else if self.heldout_pairs.contains(&(base.to_string(), style)) {
            Split::HeldoutPair
        } else {
            Split::Train
        }
    }
}

/// `fraction` of `n`, rounded, and at least one when there are 20 or more to choose from (so that
/// small test builds still hold something out).
fn share(n: usize, fraction: f64) -> usize {
    let k = (n as f64 * fraction).round() as usize;
    if n >= 20 { k.max(1) } else { k }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(n: usize) -> BTreeMap<String, BTreeSet<Style>> {
        (0..n)
            .map(|i| {
                let styles = Style::ALL.iter().copied().take(1 + i % 4).collect();
                (format!("{:X}", 0x1F300 + i), styles)
            })
            .collect()
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; ours appends 0xFF, so check the plain form too.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        h ^= u64::from(b'a');
        h = h.wrapping_mul(0x100_0000_01b3);
        assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a64(&[b"ab", b"c"]), fnv1a64(&[b"a", b"bc"]));
    }

    #[test]
    fn neighbouring_code_points_are_not_held_out_together() {
        let groups = groups(400);
        let plan = SplitPlan::new(&groups, &BTreeSet::new(), 0);
        let keys: Vec<&String> = groups.keys().collect();
        let adjacent = keys
            .windows(2)
            .filter(|w| plan.heldout_emoji.contains(w[0]) && plan.heldout_emoji.contains(w[1]))
            .count();
        assert!(
            adjacent <= 2,
            "{adjacent} adjacent pairs held out: {:?}",
            plan.heldout_emoji
        );
    }

    #[test]
    fn plan_holds_out_about_five_percent_and_respects_keep() {
        let groups = groups(1000);
        let keep: BTreeSet<String> = groups.keys().take(50).cloned().collect();
        let plan = SplitPlan::new(&groups, &keep, 7);
        assert_eq!(plan.heldout_emoji.len(), 48); // 5% of 950
        assert!(plan.heldout_emoji.is_disjoint(&keep));
        let per_group: BTreeSet<&String> = plan.heldout_pairs.iter().map(|(b, _)| b).collect();
        assert_eq!(
            per_group.len(),
            plan.heldout_pairs.len(),
            "one style per group at most"
        );
        for (base, _) in &plan.heldout_pairs {
            assert!(!keep.contains(base) && !plan.heldout_emoji.contains(base));
            assert!(groups[base].len() >= 2);
        }
        assert!(plan.heldout_pairs.len() > 50);
        assert_eq!(plan, SplitPlan::new(&groups, &keep, 7));
        assert_ne!(plan, SplitPlan::new(&groups, &keep, 8));
    }
}
