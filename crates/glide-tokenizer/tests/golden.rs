//! Token ids against `../shared/fixtures/glide-reference/tokenizer_cases.json`, produced by
//! GLIDE's own `bpe.py` (`encode` and `padded_tokens_and_mask(tokens, 128)`).
use glide_tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    end_token: u32,
    n_vocab: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    padded_128: (Vec<u32>, Vec<bool>),
}

#[test]
fn tokenizer_matches_glide_bpe() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/glide-reference/tokenizer_cases.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "The GLIDE reference fixtures are expected at {path} (the project's ../shared folder): {e}. \
             Check out the repository beside shared/ as the project lays it out."
        )
    });
    let cases: Cases = serde_json::from_str(&text).expect("tokenizer_cases.json parses");
    let tok = Tokenizer::gpt2();
    assert_eq!(tok.n_vocab(), cases.n_vocab);
    assert_eq!(tok.end_token(), cases.end_token);
    assert!(!cases.cases.is_empty());
    for case in &cases.cases {
        assert_eq!(tok.encode(&case.text), case.ids, "ids of {:?}", case.text);
        let (p, m) = tok.padded_tokens_and_mask(&case.ids, 128);
        assert_eq!((p, m), case.padded_128, "padded_128 of {:?}", case.text);
    }
}
