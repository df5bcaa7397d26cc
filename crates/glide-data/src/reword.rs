//! Captions reworded the way visitors type prompts: the training captions are built from
//! emojibase names in a handful of fixed shapes, while a visitor writes "apple icon", "a cute
//! fox", "emoji of a penguin" or leaves words out. [`reword`] draws one such variation of a
//! caption; the trainer applies it to a share of the captions it draws (`data.reword`), so the
//! text encoder meets those shapes without the dataset changing.
//!
//! Each change keeps what the image shows: wrappers that name the medium ("… icon", "an emoji
//! of …"), adjectives that do not contradict an emoji ("cute", "little", "simple"), dropping the
//! article or one inner word of a long caption, and swapping the comma-separated parts
//! ("noto style, a red apple"). Colours, counts and plurals are left alone (they would describe
//! another picture).

use rand::Rng;

/// Wrappers around the caption (`{}`); the caption's own article is kept.
const WRAPPERS: [&str; 7] = [
    "{} icon",
    "{} emoji",
    "an emoji of {}",
    "a picture of {}",
    "{} clipart",
    "emoji: {}",
    "{}, emoji art",
];

/// Adjectives true of any emoji picture.
const ADJECTIVES: [&str; 5] = ["cute", "little", "simple", "small", "nice"];

/// A visitor's wording of `caption`: one to three of the changes in the module docs, drawn from
/// `rng`. An empty caption stays empty.
pub fn reword(caption: &str, rng: &mut impl Rng) -> String {
    if caption.trim().is_empty() {
        return caption.to_string();
    }
    let mut text = caption.to_string();
    let mut changed = false;
    while !changed {
        if rng.random_bool(0.3) {
            changed |= swap_parts(&mut text);
        }
        if rng.random_bool(0.3) {
            changed |= drop_inner_word(&mut text, rng);
        }
        if rng.random_bool(0.3) {
            changed |= add_adjective(&mut text, rng);
        } else if rng.random_bool(0.2) {
            changed |= drop_article(&mut text);
        }
        if rng.random_bool(0.4) {
            let wrapper = WRAPPERS[rng.random_range(0..WRAPPERS.len())];
            text = wrapper.replace("{}", &text);
            changed = true;
        }
    }
    text
}

/// "a, b" → "b, a" (for captions with exactly two comma-separated parts).
fn swap_parts(text: &mut String) -> bool {
    let parts: Vec<&str> = text.split(", ").collect();
    if parts.len() != 2 {
        return false;
    }
    *text = format!("{}, {}", parts[1], parts[0]);
    true
}

/// Drops one word that is neither the first nor the last of a caption of five words or more
/// (never a word of one letter or a style name, which would change what is asked for).
fn drop_inner_word(text: &mut String, rng: &mut impl Rng) -> bool {
    let words: Vec<&str> = text.split(' ').collect();
    if words.len() < 5 {
        return false;
    }
    let i = rng.random_range(1..words.len() - 1);
    let w = words[i].trim_end_matches(',');
    if w.len() < 2 || w.contains("moji") || w == "noto" || w == "style" || words[i].ends_with(',') {
        return false;
    }
    let kept: Vec<&str> = words
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, w)| *w)
        .collect();
    *text = kept.join(" ");
    true
}

/// "a red apple" → "a cute red apple"; "red apple" → "cute red apple".
fn add_adjective(text: &mut String, rng: &mut impl Rng) -> bool {
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    *text = match text.split_once(' ') {
        Some(("a" | "an", rest)) => format!("a {adjective} {rest}"),
        _ => format!("{adjective} {text}"),
    };
    true
}

/// "a red apple, noto style" → "red apple, noto style".
fn drop_article(text: &mut String) -> bool {
    match text.split_once(' ') {
        Some(("a" | "an", rest)) if !rest.is_empty() => {
            *text = rest.to_string();
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn rewordings_differ_keep_the_name_and_are_seeded() {
        let caption = "a red apple, noto style";
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let r = reword(caption, &mut rng);
            assert_ne!(r, caption, "every rewording changes something");
            assert!(r.contains("apple"), "{r:?} lost the name");
            assert!(
                !r.contains("  ") && !r.starts_with(' ') && !r.ends_with(' '),
                "{r:?}"
            );
            assert!(!r.contains(" an cute") && !r.contains("a a "), "{r:?}");
            seen.insert(r);
        }
        assert!(seen.len() > 30, "only {} distinct rewordings", seen.len());
        let again: Vec<String> = {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            (0..5).map(|_| reword(caption, &mut rng)).collect()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            again,
            (0..5)
                .map(|_| reword(caption, &mut rng))
                .collect::<Vec<_>>()
        );
        assert_eq!(reword("", &mut rng), "");
    }

    #[test]
    fn each_change_does_what_it_says() {
        let mut t = "a red apple, noto style".to_string();
        assert!(swap_parts(&mut t));
        assert_eq!(t, "noto style, a red apple");
        let mut t = "an owl".to_string();
        assert!(drop_article(&mut t));
        assert_eq!(t, "owl");
        let mut t = "an owl".to_string();
        add_adjective(&mut t, &mut ChaCha8Rng::seed_from_u64(0));
        assert!(
            t.starts_with("a ") && t.ends_with(" owl") && t.split(' ').count() == 3,
            "{t}"
        );
        let mut t = "smiling face with heart eyes".to_string();
        assert!(drop_inner_word(&mut t, &mut ChaCha8Rng::seed_from_u64(1)));
        assert_eq!(t.split(' ').count(), 4);
        assert!(t.starts_with("smiling") && t.ends_with("eyes"));
        let mut short = "a fox".to_string();
        assert!(!drop_inner_word(
            &mut short,
            &mut ChaCha8Rng::seed_from_u64(1)
        ));
    }
}
