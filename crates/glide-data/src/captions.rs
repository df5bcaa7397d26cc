//! Captions and the horizontal-flip rule.
//!
//! Each image gets four differently worded captions built from its emojibase name, its keywords
//! and its style, so that the text encoder learns words ("red", "apple", "3d render") rather than
//! one fixed string per image. One caption names no style, so a prompt without a style still
//! matches the training distribution.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sources::Style;
use crate::split::stable_hash;

/// Captions per image.
pub const CAPTIONS_PER_IMAGE: usize = 4;
/// Upper bound on the estimated GPT-2 token count of a caption (see [`estimate_tokens`]).
pub const MAX_CAPTION_TOKENS: usize = 24;
/// Keywords kept in a caption at most.
const MAX_TAGS: usize = 3;

/// Caption shapes. `{a}` = label with article, `{l}` = label, `{t}` = keywords, `{s}` = style
/// phrase, `{S}` = style phrase as "... style".
const STYLELESS: [&str; 2] = ["{a}", "{l}, {t}"];
const STYLED: [&str; 5] = [
    "{a}, {s}",
    "{l} emoji, {s}",
    "{l}, {t}, {s}",
    "{a} in {S}",
    "an emoji of {a}, {s}",
];

/// The caption text of an emojibase label: lower case, `:` as `,`, typographic quotes as ASCII
/// (`flag: United States` → `flag, united states`).
pub fn caption_label(label: &str) -> String {
    label
        .to_lowercase()
        .replace(':', ",")
        .replace(['“', '”'], "\"")
        .replace(['‘', '’'], "'")
}

/// `label` with "a"/"an" in front, or bare where it reads as a plural or mass noun ("french
/// fries", "men holding hands, dark skin tone"). A heuristic on the spelling of the name before its
/// first comma, right for nearly all emoji names.
pub fn with_article(label: &str) -> String {
    const PLURAL_FIRST_WORDS: [&str; 5] = ["men", "women", "people", "children", "thumbs"];
    let head = label.split(',').next().unwrap_or("");
    let last = head.rsplit(' ').find(|w| !w.is_empty()).unwrap_or("");
    let plural_last = last.len() > 3
        && last.ends_with('s')
        && !["ss", "us", "is", "ys", "os"]
            .iter()
            .any(|e| last.ends_with(e));
    let plural_first = PLURAL_FIRST_WORDS.contains(&head.split(' ').next().unwrap_or(""));
    if plural_last || plural_first {
        return label.to_string();
    }
    let first = label.split([' ', '-', ',']).next().unwrap_or("");
    // Vowel letters that sound like "you"/"wun", and silent h.
    const CONSONANT_SOUND: [&str; 5] = ["uni", "use", "eu", "one", "ufo"];
    const VOWEL_SOUND: [&str; 3] = ["hour", "honest", "honor"];
    // Numbers read with a vowel sound: 8, 11, 18, 80...
    let vowel_number = first.starts_with('8') || first == "11" || first == "18";
    let vowel = if VOWEL_SOUND.iter().any(|p| first.starts_with(p)) || vowel_number {
        true
    } else if CONSONANT_SOUND.iter().any(|p| first.starts_with(p)) {
        false
    } else {
        first.starts_with(['a', 'e', 'i', 'o', 'u'])
    };
    format!("{} {label}", if vowel { "an" } else { "a" })
}

/// Style names that GPT-2 splits into several tokens (" twemoji" is " tw" "em" "oji").
const KNOWN_WORD_TOKENS: [(&str, usize); 3] = [("noto", 2), ("twemoji", 3), ("openmoji", 3)];

/// A cautious estimate of the GPT-2 BPE token count, without the vocabulary: a word of up to 5
/// letters is one token, up to 8 two, longer three; each digit triple and each punctuation mark one.
/// Checked against GPT-2's tokenizer on all 59,510 captions of a full build: a caption estimated at
/// 24 tokens or fewer is at most 25 real tokens (rare short words such as "xoxo" cost three).
pub fn estimate_tokens(text: &str) -> usize {
    let mut count = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphabetic() {
            let mut word = String::from(c);
            while let Some(c) = chars.next_if(|c| c.is_alphabetic()) {
                word.push(c);
            }
            let letters = word.chars().count();
            count += if let Some((_, n)) = KNOWN_WORD_TOKENS.iter().find(|(w, _)| *w == word) {
                *n
            } else if !word.is_ascii() {
                letters
            } else if letters <= 5 {
                1
            } else if letters <= 8 {
                2
            } else {
                3
            };
        } else if c.is_ascii_digit() {
            let mut len: usize = 1;
            while chars.next_if(char::is_ascii_digit).is_some() {
                len += 1;
            }
            count += len.div_ceil(3);
        } else if !c.is_whitespace() {
            count += if c.is_ascii() { 1 } else { 2 };
        }
    }
    count
}

/// Four distinct captions, one per line in `key.txt`, drawn with ChaCha8 seeded by `seed` and the
/// sample key, so a rebuild with the same seed writes the same text.
pub fn captions(label: &str, tags: &[String], style: Style, seed: u64, key: &str) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(&[
        &seed.to_le_bytes(),
        b"captions",
        key.as_bytes(),
    ]));
    let label = caption_label(label);
    let label_words: Vec<&str> = label.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let mut keywords: Vec<String> = tags
        .iter()
        .map(|t| caption_label(t))
        .filter(|t| !t.is_empty() && !repeats_label(t, &label_words))
        .collect();
    keywords.shuffle(&mut rng);
    keywords.truncate(MAX_TAGS);

    let mut styleless = STYLELESS.to_vec();
    let mut styled = STYLED.to_vec();
    styleless.shuffle(&mut rng);
    styled.shuffle(&mut rng);
    let phrases = style.phrases();

    let mut out: Vec<String> = Vec::with_capacity(CAPTIONS_PER_IMAGE);
    let mut add = |template: &str, wanted: usize, rng: &mut ChaCha8Rng| {
        if out.len() >= wanted {
            return;
        }
        let phrase = phrases[rng.random_range(0..phrases.len())];
        if let Some(caption) = fill(template, &label, &keywords, phrase)
            && !out.contains(&caption)
        {
            out.push(caption);
        }
    };
    // One caption without a style, then styled ones; the other style-free shape is the fallback
    // for captions that came out too long or identical to an earlier one.
    for template in &styleless {
        add(template, 1, &mut rng);
    }
    for template in styled.iter().chain(&styleless) {
        add(template, CAPTIONS_PER_IMAGE, &mut rng);
    }
    if out.is_empty() {
        // Only for names longer than the token budget: keep the leading words.
        let mut words: Vec<&str> = label.split_whitespace().collect();
        while words.len() > 1 && estimate_tokens(&words.join(" ")) > MAX_CAPTION_TOKENS {
            words.pop();
        }
        out.push(words.join(" ").trim_end_matches(',').to_string());
    }
    out.shuffle(&mut rng);
    out
}

/// Whether a keyword only repeats a word of the name or an inflection of it ("rockets" for
/// "rocket", "star" for "stars").
fn repeats_label(tag: &str, label_words: &[&str]) -> bool {
    label_words.iter().any(|w| {
        tag == *w || (w.len() >= 3 && tag.len() >= 3 && (tag.starts_with(w) || w.starts_with(tag)))
    })
}

/// Fills a template, shortening it until it fits the token budget: first dropping keywords, then
/// trailing parts of a long name ("couple with heart, man, man, medium skin tone, dark skin tone"
/// → "couple with heart, man, man"; less specific, still true). `None` when the template needs
/// keywords and there are none, or cannot be made short enough.
fn fill(template: &str, label: &str, keywords: &[String], phrase: &str) -> Option<String> {
    let needs_tags = template.contains("{t}");
    let min_tags = usize::from(needs_tags);
    let styled_phrase = if phrase.ends_with("style") {
        phrase.to_string()
    } else {
        format!("{phrase} style")
    };
    let parts: Vec<&str> = label.split(", ").collect();
    for kept in (1..=parts.len()).rev() {
        let label = parts[..kept].join(", ");
        let article = with_article(&label);
        for n in (min_tags..=keywords.len()).rev() {
            let caption = template
                .replace("{a}", &article)
                .replace("{l}", &label)
                .replace("{t}", &keywords[..n].join(", "))
                .replace("{S}", &styled_phrase)
                .replace("{s}", phrase);
            if estimate_tokens(&caption) <= MAX_CAPTION_TOKENS {
                return Some(caption);
            }
        }
    }
    None
}

/// Groups whose pictures carry direction or writing: all symbols and flags.
const NO_FLIP_GROUPS: [&str; 2] = ["symbols", "flags"];
/// Name fragments (matched anywhere in the lower-case label) that mean a mirror image would show a
/// different emoji, or mirrored writing.
#[rustfmt::skip]
const NO_FLIP_FRAGMENTS: [&str; 28] = [
    // Direction.
    "left", "right", "arrow", "pointing", "facing",
    // Letters, text and signs.
    "keycap", "letter", "button", "sign", "input", "abc", "newspaper", "memo", "calendar", "ledger",
    "receipt", "scroll", "page", "bookmark", "label", "ticket",
    // Printed money.
    "banknote", "money", "dollar",
    // Clock faces ("one o'clock", "stopwatch").
    "clock", "watch",
    // Handedness, and charts (rising would read as falling).
    "writing", "chart",
];
/// Currency and lettering words matched as whole words only (as fragments they would hit
/// "european castle", "rabbit", "squid", ...).
const NO_FLIP_WORDS: [&str; 7] = ["yen", "euro", "pound", "ab", "atm", "sos", "id"];

/// Whether a horizontal flip keeps an emoji's meaning (see [`NO_FLIP_FRAGMENTS`]). Labels with
/// digits also keep their orientation (medals, "8 ball", keycaps).
pub fn flip_allowed(group: &str, label: &str) -> bool {
    if NO_FLIP_GROUPS.contains(&group) {
        return false;
    }
    let label = label.to_lowercase();
    if label.chars().any(|c| c.is_ascii_digit()) {
        return false;
    }
    if NO_FLIP_FRAGMENTS.iter().any(|f| label.contains(f)) {
        return false;
    }
    !label
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| NO_FLIP_WORDS.contains(&w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_articles_read_naturally() {
        assert_eq!(caption_label("flag: United States"), "flag, united states");
        assert_eq!(with_article("red apple"), "a red apple");
        assert_eq!(with_article("orange"), "an orange");
        assert_eq!(with_article("unicorn"), "a unicorn");
        assert_eq!(with_article("8 ball"), "an 8 ball");
        assert_eq!(with_article("french fries"), "french fries");
        assert_eq!(with_article("bus"), "a bus");
        assert_eq!(
            with_article("men holding hands, dark skin tone"),
            "men holding hands, dark skin tone"
        );
        assert_eq!(with_article("thumbs up"), "thumbs up");
        assert_eq!(
            with_article("face with tears of joy"),
            "a face with tears of joy"
        );
        assert_eq!(with_article("woman, blond hair"), "a woman, blond hair");
        assert_eq!(with_article("hourglass done"), "an hourglass done");
    }

    #[test]
    fn captions_are_four_distinct_short_and_seeded() {
        let tags: Vec<String> = ["apple", "fruit", "red"].map(String::from).to_vec();
        let a = captions("red apple", &tags, Style::Noto, 0, "noto_1f34e");
        assert!(a.iter().all(|c| !c.contains("apple, apple")), "{a:?}");
        assert_eq!(
            a,
            captions("red apple", &tags, Style::Noto, 0, "noto_1f34e")
        );
        assert_eq!(a.len(), CAPTIONS_PER_IMAGE);
        for (i, c) in a.iter().enumerate() {
            assert!(c.contains("red apple") || c.contains("fruit"), "{c}");
            assert!(!a[..i].contains(c), "duplicate caption {c}");
            assert!(estimate_tokens(c) <= MAX_CAPTION_TOKENS, "{c}");
        }
        let styled = a
            .iter()
            .filter(|c| Style::Noto.phrases().iter().any(|p| c.contains(p)));
        assert_eq!(styled.count(), 3, "{a:?}");
        let other_seeds =
            (1..20).map(|s| captions("red apple", &tags, Style::Noto, s, "noto_1f34e"));
        assert!(other_seeds.into_iter().any(|b| b != a));
    }

    #[test]
    fn token_estimate_is_cautious() {
        // GPT-2: "red apple, twemoji style" is 7 tokens (" twemoji" alone is 3).
        assert_eq!(estimate_tokens("red apple, twemoji style"), 7);
        assert_eq!(estimate_tokens("medium-light skin tone"), 6); // GPT-2: 5
        assert_eq!(estimate_tokens("1st place medal"), 4);
    }

    #[test]
    fn long_names_stay_within_the_budget() {
        let label = "couple with heart: man, man, medium-dark skin tone, medium-light skin tone";
        let tags: Vec<String> = ["couple", "kiss", "romance", "love"]
            .map(String::from)
            .to_vec();
        for seed in 0..20 {
            let c = captions(label, &tags, Style::Fluent3d, seed, "k");
            assert_eq!(c.len(), CAPTIONS_PER_IMAGE, "{c:?}");
            assert!(
                c.iter().any(|c| c.contains("medium-dark skin tone")),
                "{c:?}"
            );
            assert!(
                c.iter().all(|c| estimate_tokens(c) <= MAX_CAPTION_TOKENS),
                "{c:?}"
            );
        }
    }

    #[test]
    fn flip_rule() {
        assert!(flip_allowed("food-drink", "red apple"));
        assert!(flip_allowed("smileys-emotion", "grinning face"));
        assert!(!flip_allowed("symbols", "red heart"));
        assert!(!flip_allowed("flags", "flag: Japan"));
        assert!(!flip_allowed("people-body", "backhand index pointing left"));
        assert!(!flip_allowed("objects", "one o’clock"));
        assert!(!flip_allowed("activities", "1st place medal"));
        assert!(!flip_allowed("objects", "chart increasing"));
        assert!(!flip_allowed("people-body", "writing hand"));
        assert!(
            flip_allowed("animals-nature", "rabbit"),
            "no whole-word 'ab' inside 'rabbit'"
        );
    }
}
