//! Emoji code point sequences ("hexcodes", as emojibase spells them: `1F469-200D-1F33E`).
//!
//! The image packages and emojibase spell the same emoji differently (case, with or without the
//! variation selector U+FE0F), so everything is matched on [`normalize`]. The held-out split groups
//! variants of one emoji together with [`base_key`].

/// Skin tone modifiers U+1F3FB..U+1F3FF (Fitzpatrick types 1-2 to 6).
const SKIN_TONES: [&str; 5] = ["1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"];
/// Emoji presentation selector: present in some spellings and absent in others.
const VARIATION_SELECTOR: &str = "FE0F";
/// Zero-width joiner, glue of every ZWJ sequence.
const ZWJ: &str = "200D";
/// Female and male signs, which turn `person X` into `woman X` / `man X` after a ZWJ.
const GENDER_SIGNS: [&str; 2] = ["2640", "2642"];
/// Man and woman, which ZWJ sequences use where the gender-neutral form has "person" U+1F9D1.
const MAN_WOMAN: [&str; 2] = ["1F468", "1F469"];
const PERSON: &str = "1F9D1";

/// Lower-case, `-`-separated, without U+FE0F: the spelling used to match files to emojibase and in
/// sample keys (`1F44B-1F3FB` and `1f44b-1f3fb.png` both give `1f44b-1f3fb`).
pub fn normalize(hexcode: &str) -> String {
    parts(hexcode)
        .filter(|p| !p.eq_ignore_ascii_case(VARIATION_SELECTOR))
        .map(|p| p.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("-")
}

/// The group an emoji belongs to for the held-out split (upper case, like emojibase): skin tones,
/// U+FE0F and ZWJ gender signs removed, and man/woman mapped to person inside ZWJ sequences, so
/// that "woman farmer: dark skin tone" (`1F469-1F3FF-200D-1F33E`) and "farmer" (`1F9D1-200D-1F33E`)
/// share the key `1F9D1-200D-1F33E` and land on the same side of the split.
pub fn base_key(hexcode: &str) -> String {
    let upper: Vec<String> = parts(hexcode).map(|p| p.to_ascii_uppercase()).collect();
    let has_zwj = upper.iter().any(|p| p == ZWJ);
    let mut out: Vec<&str> = Vec::with_capacity(upper.len());
    let mut i = 0;
    while i < upper.len() {
        let part = upper[i].as_str();
        let next = upper.get(i + 1).map(String::as_str);
        if part == ZWJ && next.is_some_and(|n| GENDER_SIGNS.contains(&n)) {
            i += 2;
            continue;
        }
        if part != VARIATION_SELECTOR && !SKIN_TONES.contains(&part) {
            out.push(if has_zwj && MAN_WOMAN.contains(&part) {
                PERSON
            } else {
                part
            });
        }
        i += 1;
    }
    // A sequence that was nothing but modifiers keeps its own spelling rather than an empty key.
    if out.is_empty() {
        return upper.join("-");
    }
    out.join("-")
}

fn parts(hexcode: &str) -> impl Iterator<Item = &str> {
    hexcode
        .split(['-', '_', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_matches_file_names_and_emojibase() {
        assert_eq!(normalize("0023-FE0F-20E3"), "0023-20e3");
        assert_eq!(normalize("0023-fe0f-20e3"), "0023-20e3");
        assert_eq!(normalize("1F44B-1F3FB"), "1f44b-1f3fb");
        assert_eq!(normalize("2764-FE0F"), "2764");
    }

    #[test]
    fn base_key_groups_skin_tone_and_gender_variants() {
        let farmer = "1F9D1-200D-1F33E";
        assert_eq!(base_key(farmer), farmer);
        assert_eq!(base_key("1F469-200D-1F33E"), farmer);
        assert_eq!(base_key("1F468-1F3FF-200D-1F33E"), farmer);
        assert_eq!(base_key("1F3C3-200D-2642-FE0F"), "1F3C3");
        assert_eq!(base_key("1F3C3-1F3FD-200D-2640-FE0F"), "1F3C3");
        assert_eq!(base_key("1F44B-1F3FB"), "1F44B");
        assert_eq!(base_key("2764-FE0F"), "2764");
    }

    #[test]
    fn base_key_keeps_man_and_woman_outside_zwj_sequences() {
        assert_eq!(base_key("1F468"), "1F468");
        assert_eq!(base_key("1F469-1F3FB"), "1F469");
        assert_eq!(base_key("1F3FB"), "1F3FB");
    }
}
