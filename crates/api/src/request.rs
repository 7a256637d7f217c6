//! OpenAI request bodies as they arrive on the wire, before validation.
//!
//! Follows the OpenAI API reference for `POST /v1/chat/completions` and
//! `POST /v1/completions`: every parameter is optional on the wire (a `null`
//! reads as absent, as OpenAI's server treats it), unknown keys are ignored,
//! and the union-typed parameters (`content`, `prompt`, `stop`, `seed`) have
//! deserializers that name the accepted forms in their error messages.
//! Integers are read as `i64` and floats as `f64` so that range errors say
//! "must be at least 1, got -3" rather than a type error; the ranges are
//! checked in [`crate::validate`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::keep_alive::KeepAlive;

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/completions`
    Completion,
    /// `POST /v1/responses`
    Responses,
}

impl Endpoint {
    /// The request parameter that holds the prompt: `messages`, `prompt`
    /// or `input`.
    pub fn prompt_param(self) -> &'static str {
        match self {
            Endpoint::Chat => "messages",
            Endpoint::Completion => "prompt",
            Endpoint::Responses => "input",
        }
    }
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub reasoning_effort: Option<String>,
    pub response_format: Option<Value>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<BTreeMap<String, f64>>,
    pub seed: Option<Seed>,
    pub stop: Option<Stop>,
    pub n: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub keep_alive: Option<KeepAlive>,
    pub chat_template_kwargs: Option<Map<String, Value>>,
    pub ignore_eos: Option<bool>,
}

/// The body of `POST /v1/completions`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<Prompt>,
    pub suffix: Option<String>,
    pub best_of: Option<i64>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<BTreeMap<String, f64>>,
    pub seed: Option<Seed>,
    pub stop: Option<Stop>,
    pub n: Option<i64>,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub response_format: Option<Value>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub keep_alive: Option<KeepAlive>,
    pub ignore_eos: Option<bool>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// A message's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// One chat message. Keys other than the named ones (`name`,
/// `reasoning_content`, ...) are kept in `extra` and reach the template.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Message content: a string or an array of typed parts.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of an array content: `{"type": "text", "text": "..."}`, or a
/// part of another type (`image_url`, `input_audio`, ...) that validation
/// rejects with the part's position.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// `prompt`: each string or token array is one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

/// `stop`: one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `seed`: any JSON integer; a negative one keeps its two's-complement bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub u64);

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = MessageContent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessageContent, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(MessageContent::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StopVisitor;
        impl<'de> Visitor<'de> for StopVisitor {
            type Value = Stop;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stop, E> {
                Ok(Stop::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stop, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element()? {
                    all.push(s);
                }
                Ok(Stop::Many(all))
            }
        }
        deserializer.deserialize_any(StopVisitor)
    }
}

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeedVisitor;
        impl Visitor<'_> for SeedVisitor {
            type Value = Seed;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seed, E> {
                Ok(Seed(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seed, E> {
                Ok(Seed(v as u64))
            }
        }
        deserializer.deserialize_any(SeedVisitor)
    }
}

/// One element of a `prompt` array, before the array's form is known.
enum PromptItem {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

/// A token id: a JSON integer from 0 to `u32::MAX`.
struct TokenId(u32);

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(PromptItemVisitor { nested: true })
            .and_then(|item| match item {
                PromptItem::Token(id) => Ok(TokenId(id)),
                _ => Err(de::Error::custom(
                    "expected a token id (a non-negative integer)",
                )),
            })
    }
}

impl<'de> Deserialize<'de> for PromptItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PromptItemVisitor { nested: false })
    }
}

/// Reads a prompt array element; `nested` is true inside a token array,
/// where only token ids are allowed.
struct PromptItemVisitor {
    nested: bool,
}

impl<'de> Visitor<'de> for PromptItemVisitor {
    type Value = PromptItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nested {
            f.write_str("a token id (a non-negative integer)")
        } else {
            f.write_str("a string, a token id or an array of token ids")
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PromptItem, E> {
        u32::try_from(v)
            .map(PromptItem::Token)
            .map_err(|_| E::custom(format!("token id {v} is out of range")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PromptItem, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(format!("token id {v} is negative")))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PromptItem, E> {
        if self.nested {
            return Err(E::invalid_type(de::Unexpected::Str(v), &self));
        }
        Ok(PromptItem::Text(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptItem, A::Error> {
        if self.nested {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut ids = Vec::new();
        while let Some(TokenId(id)) = seq.next_element()? {
            ids.push(id);
        }
        Ok(PromptItem::Tokens(ids))
    }
}

const PROMPT_FORMS: &str = "a string, an array of strings, an array of token ids or an array of \
                            arrays of token ids";

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PromptVisitor;
        impl<'de> Visitor<'de> for PromptVisitor {
            type Value = Prompt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PROMPT_FORMS)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prompt, E> {
                Ok(Prompt::Text(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<PromptItem>()? {
                    items.push(item);
                }
                prompt_from_items(items).ok_or_else(|| {
                    de::Error::custom(format!("mixed array: expected {PROMPT_FORMS}"))
                })
            }
        }
        deserializer.deserialize_any(PromptVisitor)
    }
}

/// The array's form, or `None` when its elements are of different kinds.
fn prompt_from_items(items: Vec<PromptItem>) -> Option<Prompt> {
    match items.first() {
        None => Some(Prompt::Texts(Vec::new())),
        Some(PromptItem::Text(_)) => items
            .into_iter()
            .map(|i| match i {
                PromptItem::Text(s) => Some(s),
                _ => None,
            })
            .collect::<Option<_>>()
            .map(Prompt::Texts),
        Some(PromptItem::Token(_)) => items
            .into_iter()
            .map(|i| match i {
                PromptItem::Token(t) => Some(t),
                _ => None,
            })
            .collect::<Option<_>>()
            .map(Prompt::Tokens),
        Some(PromptItem::Tokens(_)) => items
            .into_iter()
            .map(|i| match i {
                PromptItem::Tokens(t) => Some(t),
                _ => None,
            })
            .collect::<Option<_>>()
            .map(Prompt::TokenBatches),
    }
}
