//! Tokenizer of a model: the Hugging Face `tokenizers` model plus what the
//! surrounding config files say (special tokens, end-of-sequence ids, BOS
//! handling, chat templates).
//!
//! Loading follows mlx-lm's `tokenizer_utils.load` and `transformers`'
//! `AutoTokenizer`: `tokenizer.json` holds the model, `tokenizer_config.json`
//! the special tokens and chat template, `generation_config.json` and
//! `config.json` extra end-of-sequence ids; the EOS set is the union of all of
//! them. A GGUF file can stand in for the directory (see [`gguf`]).
//!
//! BOS handling follows mlx-lm and `transformers`: a rendered chat template
//! already holds its BOS text, so [`Tokenizer::encode_chat`] encodes without
//! special tokens; a raw prompt gets them unless it already starts with the
//! BOS text ([`Tokenizer::encode_prompt`]).

pub mod config;
pub mod gguf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use crate::chat::{ChatMessage, ChatTemplate, RenderOptions, TemplateError};
use crate::gguf::GgufError;
use config::{DEFAULT_TEMPLATE_NAME, TokenIdConfig, TokenizerConfig, read_json_opt};

/// Name of the template `transformers` prefers when tools are given.
const TOOL_USE_TEMPLATE_NAME: &str = "tool_use";

/// Errors from loading a tokenizer or from encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("invalid {0}: {1}")]
    Config(PathBuf, String),
    #[error("cannot load tokenizer: {0}")]
    Load(String),
    #[error("GGUF tokenizer: {0}")]
    Gguf(#[from] GgufError),
    #[error("unsupported GGUF tokenizer: {0}")]
    GgufVocab(String),
    #[error("encode failed: {0}")]
    Encode(String),
    #[error("decode failed: {0}")]
    Decode(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// The special tokens by role, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
    pub additional: Vec<String>,
}

impl SpecialTokens {
    /// The template variables `transformers` derives from them
    /// (`bos_token`, `eos_token`, ..., `additional_special_tokens`).
    fn template_context(&self) -> Map<String, Json> {
        let mut m = Map::new();
        let named = [
            ("bos_token", &self.bos),
            ("eos_token", &self.eos),
            ("unk_token", &self.unk),
            ("pad_token", &self.pad),
        ];
        for (name, value) in named {
            if let Some(v) = value {
                m.insert(name.to_owned(), Json::String(v.clone()));
            }
        }
        if !self.additional.is_empty() {
            let list = self.additional.iter().cloned().map(Json::String).collect();
            m.insert("additional_special_tokens".to_owned(), Json::Array(list));
        }
        m
    }
}

/// What both loaders (directory and GGUF) gather before assembling.
struct Parts {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    /// Ids from configs other than the special-token text, in priority order.
    extra_bos_ids: Vec<u32>,
    extra_eos_ids: Vec<u32>,
    add_bos_token: Option<bool>,
    templates: BTreeMap<String, String>,
}

/// A model's tokenizer, special tokens and chat templates.
#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
    add_bos_token: Option<bool>,
    templates: BTreeMap<String, ChatTemplate>,
    fallback_template: ChatTemplate,
}

impl Tokenizer {
    /// Loads a Hugging Face / mlx-community model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let tokenizer_json = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&tokenizer_json)
            .map_err(|e| TokenizerError::Load(format!("{}: {e}", tokenizer_json.display())))?;
        let config: TokenizerConfig =
            read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let generation: TokenIdConfig =
            read_json_opt(&dir.join("generation_config.json"))?.unwrap_or_default();
        let model: TokenIdConfig = read_json_opt(&dir.join("config.json"))?.unwrap_or_default();
        let templates = config::load_chat_templates(dir, &config)?;
        let content =
            |s: &Option<config::SpecialTokenSpec>| s.as_ref().map(|t| t.content().to_owned());
        let special = SpecialTokens {
            bos: content(&config.bos_token),
            eos: content(&config.eos_token),
            pad: content(&config.pad_token),
            unk: content(&config.unk_token),
            additional: config
                .additional_special_tokens
                .iter()
                .flatten()
                .map(|t| t.content().to_owned())
                .collect(),
        };
        let ids = |c: &TokenIdConfig, f: fn(&TokenIdConfig) -> &Option<config::IdOrIds>| {
            f(c).as_ref()
                .map(config::IdOrIds::to_vec)
                .unwrap_or_default()
        };
        let mut extra_eos_ids = ids(&generation, |c| &c.eos_token_id);
        extra_eos_ids.extend(ids(&model, |c| &c.eos_token_id));
        let mut extra_bos_ids = ids(&generation, |c| &c.bos_token_id);
        extra_bos_ids.extend(ids(&model, |c| &c.bos_token_id));
        Self::assemble(Parts {
            inner,
            special,
            extra_bos_ids,
            extra_eos_ids,
            add_bos_token: config.add_bos_token,
            templates,
        })
    }

    /// Builds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Result<Self, TokenizerError> {
        Self::assemble(gguf::parts_from_gguf(file)?)
    }

    /// Reads the GGUF file at `path` (metadata only) and builds its tokenizer.
    pub fn from_gguf_path(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        Self::from_gguf(&crate::gguf::GgufFile::open(path)?)
    }

    fn assemble(parts: Parts) -> Result<Self, TokenizerError> {
        let Parts {
            inner,
            special,
            extra_bos_ids,
            extra_eos_ids,
            add_bos_token,
            templates,
        } = parts;
        let text_id = |t: &Option<String>| t.as_deref().and_then(|t| inner.token_to_id(t));
        let bos_token_id = text_id(&special.bos).or(extra_bos_ids.first().copied());
        let mut eos_token_ids: Vec<u32> = Vec::new();
        for id in text_id(&special.eos).into_iter().chain(extra_eos_ids) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let context = special.template_context();
        let templates = templates
            .into_iter()
            .map(|(name, src)| Ok((name, ChatTemplate::new(&src, context.clone())?)))
            .collect::<Result<BTreeMap<_, _>, TemplateError>>()?;
        Ok(Tokenizer {
            inner,
            special,
            bos_token_id,
            eos_token_ids,
            add_bos_token,
            templates,
            fallback_template: ChatTemplate::chatml(context),
        })
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes `text`; `add_special_tokens` applies the tokenizer's
    /// post-processor (which adds BOS for Llama-style tokenizers).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Encodes a raw (completion) prompt as mlx-lm does: special tokens are
    /// added unless the text already starts with the BOS text.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let has_bos = self
            .special
            .bos
            .as_deref()
            .is_some_and(|bos| !bos.is_empty() && text.starts_with(bos));
        self.encode(text, !has_bos)
    }

    /// Decodes ids to text with the tokenizer's decoder chain.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// All end-of-sequence ids: the tokenizer's EOS token first, then those
    /// of `generation_config.json` and `config.json`, without duplicates.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_token_ids.contains(&id)
    }

    /// `add_bos_token` as configured, if it was.
    pub fn add_bos_token(&self) -> Option<bool> {
        self.add_bos_token
    }

    /// Whether the model ships a chat template (otherwise ChatML is used).
    pub fn has_chat_template(&self) -> bool {
        !self.templates.is_empty()
    }

    /// The template with this name (`"default"` for a single template).
    pub fn chat_template(&self, name: &str) -> Option<&ChatTemplate> {
        self.templates.get(name)
    }

    /// The template a render uses: `tool_use` when tools are given and the
    /// model has one, else `default`, else the only one, else ChatML.
    pub fn select_chat_template(&self, options: &RenderOptions) -> &ChatTemplate {
        let tool_use = options
            .tools
            .as_ref()
            .and_then(|_| self.templates.get(TOOL_USE_TEMPLATE_NAME));
        tool_use
            .or_else(|| self.templates.get(DEFAULT_TEMPLATE_NAME))
            .or_else(|| self.templates.values().next())
            .unwrap_or(&self.fallback_template)
    }

    /// Renders the chat prompt text.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        self.select_chat_template(options).render(messages, options)
    }

    /// Renders the chat prompt and encodes it without adding special tokens
    /// (the template writes them), as `apply_chat_template(tokenize=True)`.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<Vec<u32>, TokenizerError> {
        let text = self.apply_chat_template(messages, options)?;
        self.encode(&text, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn tokenizer_and_streams_can_be_shared_across_tasks() {
        assert_send_sync::<Tokenizer>();
        assert_send_sync::<crate::stop::TextStream>();
        assert_send_sync::<crate::detokenizer::StreamingDetokenizer>();
    }
}
