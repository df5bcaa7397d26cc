//! Hostile prompts: a megabyte of text, one enormous "word", odd Unicode. The model reads only
//! `text_ctx` tokens, so encoding must cost no more than those (a quadratic BPE over a 1 MB word
//! would never return), and nothing may be lost or panic on the way.
use glide_tokenizer::Tokenizer;

#[test]
fn a_megabyte_prompt_encodes_to_the_tokens_of_its_beginning() {
    let tok = Tokenizer::gpt2();
    let words = "a red apple on a white plate, glossy 3d render ".repeat(1 << 15);
    assert!(words.len() > 1 << 20);
    let (ids, mask) = tok.tokens_and_mask(&words, 128);
    assert!(mask.iter().all(|&m| m));
    assert_eq!(ids, tok.encode(&words[..2000])[..128]);

    // One 1 MB "word" has no spaces for the pre-tokeniser to cut at.
    let word = "ab".repeat(1 << 19);
    let (ids, _) = tok.tokens_and_mask(&word, 128);
    assert_eq!(ids, tok.encode(&word[..40_000])[..128]);
}

#[test]
fn prefix_encoding_equals_the_start_of_the_full_encoding() {
    let tok = Tokenizer::gpt2();
    let texts = [
        "grinning face with big eyes",
        &format!("{}   b", " ".repeat(700)),
        &format!("x{}Σ tail", "σ".repeat(600)),
        &"🦊 ünïcödé ∑ 3.14159 ".repeat(80),
        &"z".repeat(5000),
    ];
    for text in texts {
        let full = tok.encode(text);
        for n in [0, 1, 2, 3, 7, 16, 64] {
            let want = &full[..n.min(full.len())];
            assert_eq!(
                tok.encode_prefix(text, n),
                want,
                "{n} tokens of {text:.40?}"
            );
        }
    }
}

#[test]
fn long_words_keep_every_byte() {
    let tok = Tokenizer::gpt2();
    for text in [
        "y".repeat(3000),
        "ΣΑΣ".repeat(500),
        format!("{}!{}", "0".repeat(900), "\u{1F600}".repeat(300)),
        "\t \n ".repeat(400),
    ] {
        assert_eq!(tok.decode(&tok.encode(&text)), text.to_lowercase());
    }
}
