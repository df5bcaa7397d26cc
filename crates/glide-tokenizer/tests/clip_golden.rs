//! CLIP's BPE against `clip_cases.json`: ids from CLIP's own `simple_tokenizer.py` (made by
//! `scripts/clip-tokenizer-cases.py`), and GLIDE's `padded_tokens_and_len(tokens, 77)`.
use glide_tokenizer::ClipTokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    start_token: u32,
    end_token: u32,
    n_vocab: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    padded_77: Vec<u32>,
    len_77: usize,
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::load().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn clip_bpe_matches_clip_simple_tokenizer() {
    let cases: Cases = serde_json::from_str(include_str!("clip_cases.json")).unwrap();
    let tok = tokenizer();
    assert_eq!(cases.n_vocab, ClipTokenizer::N_VOCAB);
    assert_eq!(
        (tok.start_token(), tok.end_token()),
        (cases.start_token, cases.end_token)
    );
    for c in &cases.cases {
        assert_eq!(tok.encode(&c.text), c.ids, "{:?}", c.text);
        assert_eq!(
            tok.padded_tokens_and_len(&c.text, 77),
            (c.padded_77.clone(), c.len_77),
            "{:?}",
            c.text
        );
    }
}

#[test]
fn clip_bpe_round_trips_and_bounds_huge_prompts() {
    let tok = tokenizer();
    let ids = tok.encode("A Red Apple, glossy 3D render");
    assert_eq!(tok.decode(&ids), "a red apple , glossy 3 d render ");
    let huge = "a red apple ".repeat(100_000);
    let (padded, len) = tok.padded_tokens_and_len(&huge, 77);
    assert_eq!((padded.len(), len), (77, 77));
    assert_eq!(padded[1..76], tok.encode(&huge[..2000])[..75]);
}
