//! Grammar-constrained sampling with `llguidance`: which tokens a sequence
//! may sample next so that its text stays a prefix of the grammar's
//! language (a JSON schema, a Lark grammar, a regular expression).
//!
//! Follows how llguidance's own `sample_parser` and its server users
//! (llama.cpp, mistral.rs) drive it: a [`GrammarCompiler`] holds the
//! model's token trie (built once per model from its tokenizer) and the
//! parser factory; each constrained sequence owns a [`Constraint`] (an
//! llguidance `Matcher`) that is asked for the set of allowed tokens before
//! a token is sampled ([`Constraint::allowed`]) and told which token was
//! taken after ([`Constraint::commit`]). The trie's vocabulary is the
//! model's output width: ids the tokenizer does not know (padding rows of
//! the embedding) are special tokens no grammar allows.
//!
//! This module calls no MLX, so the front-end compiles a request's grammar
//! with it (a bad schema is refused before a worker sees it) and the
//! worker's scheduler computes masks with it; the masks are applied to the
//! logits on the device by the sampler ([`crate::sampler::mask_logits`]).

use std::sync::Arc;

use llguidance::api::{GrammarInit, TopLevelGrammar, ValidationResult};
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value as Json;

use crate::tokenizer::Tokenizer;

/// What can go wrong building a grammar or following it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The model's tokenizer cannot be turned into a token trie.
    #[error("tokenizer unsupported for grammars: {0}")]
    Tokenizer(String),
    /// The grammar (or JSON schema) does not compile.
    #[error("{0}")]
    Grammar(String),
    /// The matcher failed while following a sequence (a token it refused,
    /// an internal limit).
    #[error("grammar: {0}")]
    Matcher(String),
}

/// A grammar as a request states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grammar {
    /// A JSON schema, as JSON text. llguidance's `x-guidance` options may
    /// be set inside it.
    JsonSchema(String),
    /// A grammar in llguidance's Lark dialect (which may embed JSON
    /// schemas with `%json { ... }`).
    Lark(String),
    /// A regular expression the whole output must match.
    Regex(String),
}

impl Grammar {
    fn top_level(&self) -> Result<TopLevelGrammar, ConstraintError> {
        Ok(match self {
            Grammar::JsonSchema(text) => {
                let schema: Json = serde_json::from_str(text)
                    .map_err(|e| ConstraintError::Grammar(format!("schema is not JSON: {e}")))?;
                TopLevelGrammar::from_json_schema(schema)
            }
            Grammar::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            Grammar::Regex(text) => TopLevelGrammar::from_regex(text),
        })
    }
}

/// A model's token trie and grammar compiler (built once per model).
#[derive(Clone)]
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    vocab: usize,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("vocab", &self.vocab)
            .finish_non_exhaustive()
    }
}

impl GrammarCompiler {
    /// The compiler for a model whose logits are `vocab_size` wide and
    /// whose text is `tokenizer`'s.
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Self, ConstraintError> {
        let env = TrieEnv::new(tokenizer, vocab_size)?;
        let env: TokEnv = Arc::new(env);
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Tokenizer(e.to_string()))?;
        // Warnings and errors come back as values; nothing on stderr.
        factory.quiet();
        Ok(GrammarCompiler {
            factory: Arc::new(factory),
            vocab: vocab_size,
        })
    }

    /// The width of the masks (the model's vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Checks that `grammar` compiles, without starting a matcher.
    pub fn check(&self, grammar: &Grammar) -> Result<(), ConstraintError> {
        let init = GrammarInit::Serialized(grammar.top_level()?);
        match init.validate(
            Some(self.factory.tok_env().clone()),
            self.factory.limits().clone(),
        ) {
            ValidationResult::Error(e) => Err(ConstraintError::Grammar(e)),
            _ => Ok(()),
        }
    }

    /// A fresh matcher for one sequence.
    pub fn constraint(&self, grammar: &Grammar) -> Result<Constraint, ConstraintError> {
        let parser = self
            .factory
            .create_parser(grammar.top_level()?)
            .map_err(|e| ConstraintError::Grammar(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Grammar(e));
        }
        Ok(Constraint {
            matcher,
            vocab: self.vocab,
        })
    }
}

/// One sequence's position in its grammar.
pub struct Constraint {
    matcher: Matcher,
    vocab: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("done", &self.is_done())
            .finish_non_exhaustive()
    }
}

/// What committing a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More tokens may follow.
    Continue,
    /// The grammar is complete and allows nothing more (or the token was
    /// an end-of-sequence token it accepted): the sequence ends here.
    Done,
}

impl Constraint {
    /// The tokens allowed next, one flag per vocabulary entry. Errors when
    /// nothing is allowed (the grammar cannot go on).
    pub fn allowed(&mut self) -> Result<Vec<bool>, ConstraintError> {
        let set = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| ConstraintError::Matcher(e.to_string()))?;
        if set.is_zero() {
            return Err(ConstraintError::Matcher("no token can continue".into()));
        }
        Ok(expand(&set, self.vocab))
    }

    /// Records the token the sequence took.
    pub fn commit(&mut self, token: u32) -> Result<Progress, ConstraintError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstraintError::Matcher(e.to_string()))?;
        Ok(if self.matcher.is_stopped() {
            Progress::Done
        } else {
            Progress::Continue
        })
    }

    /// Whether the grammar has ended.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// The set's bits as flags, `vocab` of them.
fn expand(set: &SimpleVob, vocab: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(vocab);
    for &word in set.as_slice() {
        for bit in 0..32 {
            if out.len() == vocab {
                return out;
            }
            out.push(word >> bit & 1 == 1);
        }
    }
    out.resize(vocab, false);
    out
}

/// The token trie of a model plus its tokenizer for the text llguidance
/// tokenizes itself (forced strings).
struct TrieEnv {
    trie: TokTrie,
    tokenizer: tokenizers::Tokenizer,
}

impl TrieEnv {
    fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Self, ConstraintError> {
        let words = token_bytes(tokenizer.inner(), vocab_size)?;
        let vocab = u32::try_from(vocab_size)
            .map_err(|_| ConstraintError::Tokenizer(format!("{vocab_size} tokens")))?;
        let eos: Vec<u32> = tokenizer
            .eos_token_ids()
            .iter()
            .copied()
            .filter(|&id| id < vocab)
            .collect();
        let Some(&first_eos) = eos.first() else {
            return Err(ConstraintError::Tokenizer(
                "the model has no end-of-sequence token".into(),
            ));
        };
        let mut info = TokRxInfo::new(vocab, first_eos);
        info.tok_bos = tokenizer.bos_token_id().filter(|&id| id < vocab);
        let mut trie = TokTrie::from(&info, &words);
        if eos.len() > 1 {
            trie = trie.with_eos_tokens(&eos);
        }
        Ok(TrieEnv {
            trie,
            tokenizer: without_added_space(tokenizer.inner()),
        })
    }
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}

/// `tok` without what makes SentencePiece-style tokenizers put a space in
/// front of the text (a `Prepend` normalizer, a `Metaspace` pre-tokenizer
/// prepending its `▁`): llguidance tokenizes pieces of the output, not a
/// fresh text, and a piece's tokens must spell exactly its bytes.
fn without_added_space(tok: &tokenizers::Tokenizer) -> tokenizers::Tokenizer {
    use tokenizers::normalizers::{NormalizerWrapper, Sequence as Normalizers};
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    use tokenizers::pre_tokenizers::metaspace::PrependScheme;
    use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;

    fn normalizer(n: &NormalizerWrapper) -> Option<NormalizerWrapper> {
        match n {
            NormalizerWrapper::Prepend(_) => None,
            NormalizerWrapper::Sequence(seq) => {
                let kept: Vec<_> = seq.as_ref().iter().filter_map(normalizer).collect();
                (!kept.is_empty()).then(|| NormalizerWrapper::Sequence(Normalizers::new(kept)))
            }
            other => Some(other.clone()),
        }
    }
    fn pre_tokenizer(p: &PreTokenizerWrapper) -> PreTokenizerWrapper {
        match p {
            PreTokenizerWrapper::Metaspace(m) => {
                let mut m = m.clone();
                m.set_prepend_scheme(PrependScheme::Never);
                PreTokenizerWrapper::Metaspace(m)
            }
            PreTokenizerWrapper::Sequence(seq) => PreTokenizerWrapper::Sequence(
                PreTokenizers::new(seq.as_ref().iter().map(pre_tokenizer).collect()),
            ),
            other => other.clone(),
        }
    }
    let mut out = tok.clone();
    let n = tok.get_normalizer().and_then(normalizer);
    out.with_normalizer(n);
    let p = tok.get_pre_tokenizer().map(pre_tokenizer);
    out.with_pre_tokenizer(p);
    out
}

/// How a tokenizer's vocabulary entries spell bytes.
#[derive(Debug, Default)]
struct Spelling {
    /// GPT-2 byte-to-unicode map (`ByteLevel`).
    byte_level: bool,
    /// `<0xAB>` entries are raw bytes (`ByteFallback`).
    byte_fallback: bool,
    /// The character standing for a space (SentencePiece's `▁`).
    space: Option<char>,
}

impl Spelling {
    fn of(decoder: &Json, out: &mut Spelling) {
        match decoder.get("type").and_then(Json::as_str) {
            Some("ByteLevel") => out.byte_level = true,
            Some("ByteFallback") => out.byte_fallback = true,
            Some("Metaspace") => out.space = Some(metaspace_char(decoder)),
            Some("Replace") if decoder.get("content").and_then(Json::as_str) == Some(" ") => {
                let pattern = decoder.pointer("/pattern/String").and_then(Json::as_str);
                let mut chars = pattern.unwrap_or_default().chars();
                if let (Some(c), None) = (chars.next(), chars.next()) {
                    out.space = Some(c);
                }
            }
            Some("Sequence") => {
                for d in decoder
                    .get("decoders")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    Spelling::of(d, out);
                }
            }
            _ => {}
        }
    }
}

fn metaspace_char(decoder: &Json) -> char {
    decoder
        .get("replacement")
        .and_then(Json::as_str)
        .and_then(|s| s.chars().next())
        .unwrap_or('\u{2581}')
}

/// The bytes of every token id below `vocab`, special tokens marked with
/// [`TokTrie::SPECIAL_TOKEN_MARKER`] (so no grammar produces them as text).
fn token_bytes(tok: &tokenizers::Tokenizer, vocab: usize) -> Result<Vec<Vec<u8>>, ConstraintError> {
    let mut spelling = Spelling::default();
    let decoder = match tok.get_decoder() {
        Some(decoder) => serde_json::to_value(decoder)
            .map_err(|e| ConstraintError::Tokenizer(format!("decoder: {e}")))?,
        None => Json::Null,
    };
    Spelling::of(&decoder, &mut spelling);
    if !spelling.byte_level && !spelling.byte_fallback && spelling.space.is_none() {
        return Err(ConstraintError::Tokenizer(format!(
            "the decoder {decoder} is neither byte-level nor SentencePiece"
        )));
    }
    let byte_of = gpt2_unicode_to_byte();
    let added = tok.get_added_tokens_decoder();
    let special = |name: &str| {
        let mut bytes = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        bytes.extend_from_slice(name.as_bytes());
        bytes
    };
    let mut words = Vec::with_capacity(vocab);
    for id in 0..vocab as u32 {
        if let Some(token) = added.get(&id) {
            words.push(if token.special {
                special(&token.content)
            } else {
                token.content.as_bytes().to_vec()
            });
            continue;
        }
        let Some(name) = tok.id_to_token(id) else {
            words.push(special(&format!("<[{id}]>")));
            continue;
        };
        let bytes = if spelling.byte_level {
            name.chars().map(|c| byte_of.get(&c).copied()).collect()
        } else if let Some(byte) = fallback_byte(&name).filter(|_| spelling.byte_fallback) {
            Some(vec![byte])
        } else {
            let text = match spelling.space {
                Some(space) => name.replace(space, " "),
                None => name,
            };
            Some(text.into_bytes())
        };
        // An entry that spells no bytes (not in the byte map) can never be
        // produced by a grammar.
        words.push(bytes.unwrap_or_else(|| special(&format!("<[{id}]>"))));
    }
    Ok(words)
}

/// `<0xAB>` → 0xAB.
fn fallback_byte(name: &str) -> Option<u8> {
    let hex = name.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand
/// for themselves, the others for U+0100 onwards in byte order.
fn gpt2_unicode_to_byte() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    let mut map = std::collections::HashMap::with_capacity(256);
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are chars");
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_bytes_parse_only_their_form() {
        assert_eq!(fallback_byte("<0x0A>"), Some(10));
        assert_eq!(fallback_byte("<0xFF>"), Some(255));
        assert_eq!(fallback_byte("<0x0>"), None);
        assert_eq!(fallback_byte("<s>"), None);
    }

    #[test]
    fn the_gpt2_map_covers_every_byte_once() {
        let map = gpt2_unicode_to_byte();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'a'], b'a');
    }

    #[test]
    fn a_mask_expands_to_the_vocabulary_width() {
        let mut set = SimpleVob::alloc(40);
        set.allow_token(0);
        set.allow_token(33);
        let flags = expand(&set, 40);
        assert_eq!(flags.len(), 40);
        assert!(flags[0] && flags[33]);
        assert_eq!(flags.iter().filter(|&&f| f).count(), 2);
    }
}
