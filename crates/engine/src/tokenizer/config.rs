//! The JSON files of a Hugging Face model directory that shape tokenization:
//! `tokenizer_config.json` (special tokens, `add_bos_token`, `chat_template`),
//! `chat_template.jinja` / `chat_template.json`, `generation_config.json` and
//! `config.json` (end-of-sequence ids). Field handling follows
//! `transformers`' `PreTrainedTokenizerBase.from_pretrained` and
//! `GenerationConfig`, and mlx-lm's `tokenizer_utils.load`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;

use super::TokenizerError;

/// Name of the default template in a list of named templates.
pub const DEFAULT_TEMPLATE_NAME: &str = "default";

/// A special token as `tokenizer_config.json` writes it: a plain string or an
/// `AddedToken`-like object with a `content` field.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SpecialTokenSpec {
    Text(String),
    Object { content: String },
}

impl SpecialTokenSpec {
    pub fn content(&self) -> &str {
        match self {
            SpecialTokenSpec::Text(s) => s,
            SpecialTokenSpec::Object { content } => content,
        }
    }
}

/// `chat_template`: one template, or a list of `{name, template}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ChatTemplateSpec {
    Single(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedTemplate {
    pub name: String,
    pub template: String,
}

impl ChatTemplateSpec {
    /// The templates by name; a single template is named `default`.
    pub fn into_map(self) -> BTreeMap<String, String> {
        match self {
            ChatTemplateSpec::Single(t) => BTreeMap::from([(DEFAULT_TEMPLATE_NAME.to_owned(), t)]),
            ChatTemplateSpec::Named(list) => {
                list.into_iter().map(|t| (t.name, t.template)).collect()
            }
        }
    }
}

/// The parts of `tokenizer_config.json` the engine uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenizerConfig {
    #[serde(default)]
    pub bos_token: Option<SpecialTokenSpec>,
    #[serde(default)]
    pub eos_token: Option<SpecialTokenSpec>,
    #[serde(default)]
    pub pad_token: Option<SpecialTokenSpec>,
    #[serde(default)]
    pub unk_token: Option<SpecialTokenSpec>,
    #[serde(default)]
    pub additional_special_tokens: Option<Vec<SpecialTokenSpec>>,
    #[serde(default)]
    pub add_bos_token: Option<bool>,
    #[serde(default)]
    pub chat_template: Option<ChatTemplateSpec>,
}

/// An id or a list of ids, as `eos_token_id` is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdOrIds {
    One(u32),
    Many(Vec<u32>),
}

impl IdOrIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            IdOrIds::One(id) => vec![*id],
            IdOrIds::Many(ids) => ids.clone(),
        }
    }
}

/// The token-id fields of `generation_config.json` and `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenIdConfig {
    #[serde(default)]
    pub bos_token_id: Option<IdOrIds>,
    #[serde(default)]
    pub eos_token_id: Option<IdOrIds>,
}

/// Reads and parses a JSON file, or `None` when it does not exist.
pub fn read_json_opt<T: for<'de> Deserialize<'de>>(
    path: &Path,
) -> Result<Option<T>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TokenizerError::Io(path.to_owned(), e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::Config(path.to_owned(), e.to_string()))
}

/// The chat templates of a model directory, by name. As in `transformers`,
/// a `chat_template.jinja` file wins over `chat_template.json`, which wins
/// over `tokenizer_config.json`'s `chat_template`.
pub fn load_chat_templates(
    dir: &Path,
    config: &TokenizerConfig,
) -> Result<BTreeMap<String, String>, TokenizerError> {
    let jinja = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&jinja) {
        Ok(t) => return Ok(BTreeMap::from([(DEFAULT_TEMPLATE_NAME.to_owned(), t)])),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TokenizerError::Io(jinja, e)),
    }
    let json_path = dir.join("chat_template.json");
    if let Some(json) = read_json_opt::<Json>(&json_path)? {
        let spec = json
            .get("chat_template")
            .cloned()
            .map(serde_json::from_value::<ChatTemplateSpec>)
            .transpose()
            .map_err(|e| TokenizerError::Config(json_path.clone(), e.to_string()))?;
        if let Some(spec) = spec {
            return Ok(spec.into_map());
        }
    }
    Ok(config
        .chat_template
        .clone()
        .map(ChatTemplateSpec::into_map)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_tokens_may_be_strings_objects_or_null() {
        let c: TokenizerConfig = serde_json::from_str(
            r#"{"bos_token": {"content": "<s>", "lstrip": false, "__type": "AddedToken"},
                "eos_token": "</s>", "pad_token": null, "add_bos_token": true}"#,
        )
        .expect("valid config");
        assert_eq!(
            c.bos_token.as_ref().map(SpecialTokenSpec::content),
            Some("<s>")
        );
        assert_eq!(
            c.eos_token.as_ref().map(SpecialTokenSpec::content),
            Some("</s>")
        );
        assert!(c.pad_token.is_none());
        assert_eq!(c.add_bos_token, Some(true));
    }

    #[test]
    fn chat_template_may_be_a_list_of_named_templates() {
        let c: TokenizerConfig = serde_json::from_str(
            r#"{"chat_template": [{"name": "default", "template": "A"},
                                  {"name": "tool_use", "template": "B"}]}"#,
        )
        .expect("valid config");
        let map = c.chat_template.expect("present").into_map();
        assert_eq!(map.get("default").map(String::as_str), Some("A"));
        assert_eq!(map.get("tool_use").map(String::as_str), Some("B"));
    }

    #[test]
    fn eos_token_id_may_be_one_or_many() {
        let one: TokenIdConfig = serde_json::from_str(r#"{"eos_token_id": 2}"#).expect("valid");
        let many: TokenIdConfig =
            serde_json::from_str(r#"{"eos_token_id": [128001, 128009], "bos_token_id": 1}"#)
                .expect("valid");
        assert_eq!(one.eos_token_id.map(|e| e.to_vec()), Some(vec![2]));
        assert_eq!(
            many.eos_token_id.map(|e| e.to_vec()),
            Some(vec![128001, 128009])
        );
        assert_eq!(many.bos_token_id.map(|e| e.to_vec()), Some(vec![1]));
    }
}
