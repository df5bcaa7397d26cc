//! CLIP's BPE tokenizer, as `glide_text2im/tokenizer/simple_tokenizer.py` (a copy of CLIP's
//! `simple_tokenizer.py`) runs it for GLIDE's noised CLIP: text cleaned, white space collapsed,
//! lower-cased, split by CLIP's pattern, byte-level BPE with `</w>` word ends, then
//! `[<|startoftext|>] + tokens[:ctx - 2] + [<|endoftext|>]` padded with 0
//! (`padded_tokens_and_len`).
//!
//! The merges file (`bpe_simple_vocab_16e6.txt`, 49,152 lines) ships in the PyPI package
//! `clip-anytorch` (MIT); `scripts/setup.sh` fetches it into `vendor/clip/`. Not ported: ftfy's
//! mojibake repair (`fix_text`) beyond what [`basic_clean`] does (HTML entities, curly quotes);
//! ordinary prompts are unaffected.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fancy_regex::Regex;

use crate::{TokenizerError, byte_pieces, bytes_to_unicode, merge_pairs, text_head};

/// CLIP's pre-tokenisation pattern.
const PATTERN: &str = r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const START: &str = "<|startoftext|>";
const END: &str = "<|endoftext|>";

/// CLIP's byte-level BPE (49,408 tokens).
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    decoder: HashMap<u32, String>,
    bpe_ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    byte_decoder: HashMap<char, u8>,
    pat: Regex,
    cache: RefCell<HashMap<String, Vec<String>>>,
}

impl ClipTokenizer {
    /// The vocabulary size of CLIP's tokenizer (and of the released noised CLIP's text tower).
    pub const N_VOCAB: usize = 49_408;

    /// `GLIDE_CLIP_BPE`, else `vendor/clip/bpe_simple_vocab_16e6.txt` in the repository.
    pub fn default_path() -> PathBuf {
        std::env::var_os("GLIDE_CLIP_BPE").map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../vendor/clip/bpe_simple_vocab_16e6.txt")
            },
            PathBuf::from,
        )
    }

    /// Reads the merges file at [`Self::default_path`].
    pub fn load() -> Result<Self, TokenizerError> {
        let path = Self::default_path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TokenizerError::ClipMerges(path.display().to_string(), e.to_string()))?;
        Self::from_merges(&text)
    }

    /// Builds the tokenizer from the text of `bpe_simple_vocab_16e6.txt` (as `SimpleTokenizer`).
    pub fn from_merges(text: &str) -> Result<Self, TokenizerError> {
        let lines: Vec<&str> = text.split('\n').collect();
        let n_merges = 49_152 - 256 - 2;
        if lines.len() < n_merges + 1 {
            return Err(TokenizerError::Merges(lines.len()));
        }
        let merges: Vec<(String, String)> = lines[1..=n_merges]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut parts = l.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                    _ => Err(TokenizerError::Merges(i + 2)),
                }
            })
            .collect::<Result<_, _>>()?;
        let byte_encoder = bytes_to_unicode();
        // Python's `bytes_to_unicode().values()` order: the printable bytes' own characters,
        // then chr(256 + n) for the rest; that is ascending code points.
        let mut symbols = byte_encoder;
        symbols.sort_unstable();
        let mut vocab: Vec<String> = symbols.iter().map(|c| c.to_string()).collect();
        vocab.extend(symbols.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.extend([START.to_string(), END.to_string()]);
        let encoder: HashMap<String, u32> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        let decoder = encoder.iter().map(|(k, v)| (*v, k.clone())).collect();
        let bpe_ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        let byte_decoder = byte_encoder
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u8))
            .collect();
        Ok(Self {
            encoder,
            decoder,
            bpe_ranks,
            byte_encoder,
            byte_decoder,
            pat: Regex::new(PATTERN).expect("CLIP's pattern compiles"),
            cache: RefCell::new(HashMap::new()),
        })
    }

    pub fn start_token(&self) -> u32 {
        self.encoder[START]
    }

    pub fn end_token(&self) -> u32 {
        self.encoder[END]
    }

    /// Token ids of `text` (no start or end token).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_prefix(text, usize::MAX)
    }

    /// The first `max_tokens` ids of [`Self::encode`], reading only as much text as they need
    /// (a bound, as [`crate::Tokenizer::encode_prefix`]).
    pub fn encode_prefix(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let text = whitespace_clean(&basic_clean(text_head(text, max_tokens))).to_lowercase();
        let mut ids = Vec::new();
        for m in self.pat.find_iter(&text).flatten() {
            let s = m.as_str();
            if s == START || s == END {
                ids.push(self.encoder[s]);
                continue;
            }
            for piece in byte_pieces(&self.byte_encoder, s) {
                ids.extend(self.bpe(&piece).iter().map(|t| self.encoder[t]));
            }
            if ids.len() > max_tokens {
                break;
            }
        }
        ids.truncate(max_tokens);
        ids
    }

    /// Text of `ids`, `</w>` as a space (as `SimpleTokenizer.decode`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let text: String = ids
            .iter()
            .filter_map(|id| self.decoder.get(id))
            .map(String::as_str)
            .collect();
        let bytes: Vec<u8> = text
            .replace("</w>", "\u{0}")
            .chars()
            .filter_map(|c| match c {
                '\u{0}' => Some(b' '),
                c => self.byte_decoder.get(&c).copied(),
            })
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// GLIDE's `padded_tokens_and_len`: start token, at most `text_ctx - 2` tokens, end token,
    /// zeros; and the length with both markers.
    pub fn padded_tokens_and_len(&self, text: &str, text_ctx: usize) -> (Vec<u32>, usize) {
        let keep = text_ctx.saturating_sub(2);
        let mut tokens = vec![self.start_token()];
        tokens.extend(self.encode_prefix(text, keep));
        tokens.push(self.end_token());
        let len = tokens.len();
        tokens.resize(text_ctx.max(len), 0);
        (tokens, len)
    }

    /// BPE of one piece with CLIP's `</w>` on its last symbol.
    fn bpe(&self, token: &str) -> Vec<String> {
        if let Some(hit) = self.cache.borrow().get(token) {
            return hit.clone();
        }
        let mut word: Vec<String> = token.chars().map(String::from).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        let word = merge_pairs(word, &self.bpe_ranks, None);
        self.cache
            .borrow_mut()
            .insert(token.to_string(), word.clone());
        word
    }
}

/// `basic_clean` without ftfy's mojibake repair: curly quotes made straight (ftfy's
/// `uncurl_quotes`), HTML entities decoded twice (`html.unescape` twice), ends trimmed.
fn basic_clean(text: &str) -> String {
    let straight: String = text
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => '"',
            c => c,
        })
        .collect();
    unescape_html(&unescape_html(&straight)).trim().to_string()
}

/// `\s+` → one space, ends trimmed.
fn whitespace_clean(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// HTML character references: the common named ones and every numeric one (`&#39;`, `&#x27;`).
fn unescape_html(text: &str) -> String {
    const NAMED: [(&str, &str); 7] = [
        ("amp", "&"),
        ("lt", "<"),
        ("gt", ">"),
        ("quot", "\""),
        ("apos", "'"),
        ("nbsp", "\u{a0}"),
        ("copy", "©"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest[1..].find(';').map(|i| i + 1).filter(|&i| i <= 12);
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let num = match name.strip_prefix('#') {
                Some(n) => match n.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => n.parse().ok(),
                },
                None => None,
            };
            let c = num.and_then(char::from_u32).map(String::from);
            c.or_else(|| {
                NAMED
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            })
            .map(|s| (s, end + 1))
        });
        match decoded {
            Some((s, used)) => {
                out.push_str(&s);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
