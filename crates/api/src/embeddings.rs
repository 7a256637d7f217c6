//! Embedding requests and responses: OpenAI's `POST /v1/embeddings`
//! (OpenAI API reference, "Embeddings") and Ollama's `POST /api/embed` and
//! legacy `POST /api/embeddings` (Ollama's `docs/api.md`), validated into one
//! [`EmbedRequest`]; and what both do to the worker's vectors: `dimensions`
//! keeps the first values and scales them back to unit length, OpenAI's
//! `encoding_format: "base64"` writes the f32 values little-endian in
//! base64, as OpenAI's servers do.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::keep_alive::KeepAlive;
use crate::request::Prompt;
use crate::validate::{decode, require_model};

/// Most inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// One input, as text or token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// How OpenAI's response writes each vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian f32 bytes in base64.
    Base64,
}

/// What an input longer than the model's context becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// A 400 naming `input` (OpenAI; Ollama's `truncate: false`).
    Refuse,
    /// Its first tokens, as many as the context holds (Ollama's default).
    Truncate,
}

/// A validated embedding request of either API.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<EmbedInput>,
    pub encoding_format: EncodingFormat,
    /// Keep this many leading values (then scale to unit length).
    pub dimensions: Option<u32>,
    /// Scale each vector to unit length.
    pub normalize: bool,
    pub overflow: Overflow,
    pub keep_alive: Option<KeepAlive>,
}

/// `POST /v1/embeddings`, as sent.
#[derive(Debug, Deserialize)]
struct OpenAiBody {
    model: Option<String>,
    input: Option<Prompt>,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
    #[serde(rename = "user")]
    _user: Option<String>,
}

/// Parses and validates an OpenAI embedding request; a request without
/// `model` gets `default_model`.
pub fn parse_openai(body: &[u8], default_model: Option<&str>) -> Result<EmbedRequest, ApiError> {
    let req: OpenAiBody = decode(body)?;
    let model = require_model(req.model, default_model)?;
    let input = req
        .input
        .ok_or_else(|| ApiError::invalid("input", "Missing required parameter: 'input'."))?;
    let inputs = match input {
        Prompt::Text(t) => vec![EmbedInput::Text(t)],
        Prompt::Texts(ts) => ts.into_iter().map(EmbedInput::Text).collect(),
        Prompt::Tokens(ids) => vec![EmbedInput::Tokens(ids)],
        Prompt::TokenBatches(batches) => batches.into_iter().map(EmbedInput::Tokens).collect(),
    };
    let encoding_format = match req.encoding_format.as_deref() {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format must be \"float\" or \"base64\", got {other:?}"),
            ));
        }
    };
    Ok(EmbedRequest {
        model,
        inputs: check_inputs(inputs)?,
        encoding_format,
        dimensions: dimensions(req.dimensions)?,
        normalize: true,
        overflow: Overflow::Refuse,
        keep_alive: None,
    })
}

/// `input` of Ollama's `/api/embed`: a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OllamaInput {
    One(String),
    Many(Vec<String>),
}

/// `POST /api/embed`, as sent.
#[derive(Debug, Deserialize)]
struct OllamaEmbedBody {
    model: Option<String>,
    input: Option<OllamaInput>,
    truncate: Option<bool>,
    dimensions: Option<i64>,
    keep_alive: Option<KeepAlive>,
    options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /api/embeddings` (legacy), as sent.
#[derive(Debug, Deserialize)]
struct OllamaLegacyBody {
    model: Option<String>,
    prompt: Option<String>,
    keep_alive: Option<KeepAlive>,
    options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Parses Ollama's `/api/embed`: vectors normalized, inputs longer than
/// the context truncated unless `truncate` is false.
pub fn parse_ollama_embed(body: &[u8]) -> Result<EmbedRequest, ApiError> {
    let req: OllamaEmbedBody = decode(body)?;
    let model = require_model(req.model, None)?;
    no_options(req.options.as_ref())?;
    let inputs = match req.input {
        None => return Err(ApiError::invalid("input", "input is required")),
        Some(OllamaInput::One(t)) => vec![EmbedInput::Text(t)],
        Some(OllamaInput::Many(ts)) => ts.into_iter().map(EmbedInput::Text).collect(),
    };
    Ok(EmbedRequest {
        model,
        inputs: check_inputs(inputs)?,
        encoding_format: EncodingFormat::Float,
        dimensions: dimensions(req.dimensions)?,
        normalize: true,
        overflow: if req.truncate.unwrap_or(true) {
            Overflow::Truncate
        } else {
            Overflow::Refuse
        },
        keep_alive: req.keep_alive,
    })
}

/// Parses Ollama's legacy `/api/embeddings`: one `prompt`, its vector not
/// normalized (as Ollama answers it). `None` inputs: an empty prompt, which
/// Ollama answers with an empty vector.
pub fn parse_ollama_legacy(body: &[u8]) -> Result<EmbedRequest, ApiError> {
    let req: OllamaLegacyBody = decode(body)?;
    let model = require_model(req.model, None)?;
    no_options(req.options.as_ref())?;
    let prompt = req.prompt.unwrap_or_default();
    Ok(EmbedRequest {
        model,
        inputs: if prompt.is_empty() {
            Vec::new()
        } else {
            vec![EmbedInput::Text(prompt)]
        },
        encoding_format: EncodingFormat::Float,
        dimensions: None,
        normalize: false,
        overflow: Overflow::Truncate,
        keep_alive: req.keep_alive,
    })
}

/// Ollama's runner `options` (`num_ctx`, sampling...) change nothing an
/// embedding does here: any one is refused rather than ignored.
fn no_options(
    options: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), ApiError> {
    match options.and_then(|o| o.keys().next()) {
        None => Ok(()),
        Some(key) => Err(ApiError::invalid(
            format!("options.{key}"),
            format!("options.{key} is not supported for embeddings"),
        )),
    }
}

/// At least one input, at most [`MAX_INPUTS`], none empty.
fn check_inputs(inputs: Vec<EmbedInput>) -> Result<Vec<EmbedInput>, ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::invalid("input", "input must not be empty"));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!(
                "input has {} items; at most {MAX_INPUTS} are allowed",
                inputs.len()
            ),
        ));
    }
    let empty = |i: &EmbedInput| match i {
        EmbedInput::Text(t) => t.is_empty(),
        EmbedInput::Tokens(ids) => ids.is_empty(),
    };
    if let Some(i) = inputs.iter().position(empty) {
        let param = if inputs.len() == 1 {
            "input".to_owned()
        } else {
            format!("input[{i}]")
        };
        return Err(ApiError::invalid(param, "an input must not be empty"));
    }
    Ok(inputs)
}

fn dimensions(value: Option<i64>) -> Result<Option<u32>, ApiError> {
    match value {
        None => Ok(None),
        Some(d) if d >= 1 && d <= i64::from(u32::MAX) => Ok(Some(d as u32)),
        Some(d) => Err(ApiError::invalid(
            "dimensions",
            format!("dimensions must be at least 1, got {d}"),
        )),
    }
}

/// Applies `dimensions` to the worker's vectors: the first that many values,
/// scaled back to unit length when the vectors are normalized; more than
/// the model's width is a 400 naming `dimensions`.
pub fn shape(
    vectors: Vec<Vec<f32>>,
    dimensions: Option<u32>,
    normalize: bool,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let Some(d) = dimensions else {
        return Ok(vectors);
    };
    let width = vectors.first().map_or(0, Vec::len);
    if d as usize > width {
        return Err(ApiError::invalid(
            "dimensions",
            format!("dimensions must be at most {width} for this model, got {d}"),
        ));
    }
    Ok(vectors
        .into_iter()
        .map(|mut v| {
            v.truncate(d as usize);
            if normalize {
                let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                let scale = 1.0 / norm.max(1e-12);
                v.iter_mut()
                    .for_each(|x| *x = (f64::from(*x) * scale) as f32);
            }
            v
        })
        .collect())
}

/// One vector in OpenAI's response.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingValue {
    /// `v` written as `format` asks.
    pub fn new(v: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => Self::Float(v),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// An element of OpenAI's `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingObject {
    pub object: &'static str,
    pub index: u32,
    pub embedding: EmbeddingValue,
}

/// OpenAI's `usage` of an embedding request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

/// OpenAI's response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<EmbeddingObject>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

impl EmbeddingList {
    /// The body for `vectors` in input order.
    pub fn new(
        model: String,
        vectors: Vec<Vec<f32>>,
        format: EncodingFormat,
        prompt_tokens: u32,
    ) -> Self {
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| EmbeddingObject {
                object: "embedding",
                index: i as u32,
                embedding: EmbeddingValue::new(v, format),
            })
            .collect();
        Self {
            object: "list",
            data,
            model,
            usage: EmbeddingUsage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        }
    }
}

/// Ollama's `/api/embed` response body (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OllamaEmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u32,
}

/// Ollama's legacy `/api/embeddings` response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OllamaLegacyResponse {
    pub embedding: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(body: &str) -> Result<EmbedRequest, ApiError> {
        parse_openai(body.as_bytes(), Some("default"))
    }

    fn param(e: ApiError) -> Option<String> {
        match e {
            ApiError::InvalidRequest { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_input_form_of_openai_is_read() {
        let inputs = |body| openai(body).unwrap().inputs;
        let text = |s: &str| EmbedInput::Text(s.into());
        assert_eq!(inputs(r#"{"input":"a"}"#), vec![text("a")]);
        assert_eq!(inputs(r#"{"input":["a","b"]}"#), vec![text("a"), text("b")]);
        assert_eq!(
            inputs(r#"{"input":[1,2]}"#),
            vec![EmbedInput::Tokens(vec![1, 2])]
        );
        assert_eq!(
            inputs(r#"{"input":[[1],[2,3]]}"#),
            vec![EmbedInput::Tokens(vec![1]), EmbedInput::Tokens(vec![2, 3])]
        );
        let req = openai(
            r#"{"model":"m","input":"a","encoding_format":"base64","dimensions":3,"user":"u"}"#,
        )
        .unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(req.encoding_format, EncodingFormat::Base64);
        assert_eq!(req.dimensions, Some(3));
        assert!(req.normalize);
    }

    #[test]
    fn bad_openai_requests_name_their_parameter() {
        let p = |body| param(openai(body).unwrap_err());
        assert_eq!(p(r#"{}"#).as_deref(), Some("input"));
        assert_eq!(p(r#"{"input":""}"#).as_deref(), Some("input"));
        assert_eq!(p(r#"{"input":[]}"#).as_deref(), Some("input"));
        assert_eq!(p(r#"{"input":["a",""]}"#).as_deref(), Some("input[1]"));
        assert_eq!(p(r#"{"input":[[1],[]]}"#).as_deref(), Some("input[1]"));
        assert_eq!(p(r#"{"input":["a",1]}"#).as_deref(), Some("input"));
        assert_eq!(
            p(r#"{"input":"a","dimensions":0}"#).as_deref(),
            Some("dimensions")
        );
        assert_eq!(
            p(r#"{"input":"a","dimensions":-2}"#).as_deref(),
            Some("dimensions")
        );
        assert_eq!(
            p(r#"{"input":"a","encoding_format":"int8"}"#).as_deref(),
            Some("encoding_format")
        );
        assert_eq!(p(r#"{"input":"a","model":""}"#).as_deref(), Some("model"));
        let many = format!(r#"{{"input":[{}]}}"#, vec!["\"a\""; 2049].join(","));
        assert_eq!(p(&many).as_deref(), Some("input"));
        assert!(parse_openai(br#"{"input":"a"}"#, None).is_err());
    }

    #[test]
    fn ollama_requests_are_read_with_ollamas_defaults() {
        let req =
            parse_ollama_embed(br#"{"model":"m","input":["a","b"],"keep_alive":"5m"}"#).unwrap();
        assert_eq!(req.inputs.len(), 2);
        assert_eq!(req.overflow, Overflow::Truncate);
        assert!(req.normalize && req.keep_alive.is_some());
        let req =
            parse_ollama_embed(br#"{"model":"m","input":"a","truncate":false,"dimensions":2}"#)
                .unwrap();
        assert_eq!((req.overflow, req.dimensions), (Overflow::Refuse, Some(2)));
        let p = |body: &[u8]| param(parse_ollama_embed(body).unwrap_err());
        assert_eq!(p(br#"{"input":"a"}"#).as_deref(), Some("model"));
        assert_eq!(p(br#"{"model":"m"}"#).as_deref(), Some("input"));
        assert_eq!(
            p(br#"{"model":"m","input":"a","options":{"num_ctx":8}}"#).as_deref(),
            Some("options.num_ctx")
        );
        let legacy = parse_ollama_legacy(br#"{"model":"m","prompt":"hi"}"#).unwrap();
        assert!(!legacy.normalize);
        assert_eq!(legacy.inputs, vec![EmbedInput::Text("hi".into())]);
        assert!(
            parse_ollama_legacy(br#"{"model":"m"}"#)
                .unwrap()
                .inputs
                .is_empty()
        );
    }

    #[test]
    fn dimensions_truncate_and_renormalize() {
        let v = vec![vec![0.6, 0.0, 0.8], vec![0.0, 1.0, 0.0]];
        let got = shape(v.clone(), Some(2), true).unwrap();
        assert_eq!(got, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(
            shape(v.clone(), Some(1), false).unwrap(),
            vec![vec![0.6], vec![0.0]]
        );
        assert_eq!(shape(v.clone(), None, true).unwrap(), v);
        assert_eq!(
            param(shape(v, Some(4), true).unwrap_err()).as_deref(),
            Some("dimensions")
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let EmbeddingValue::Base64(text) =
            EmbeddingValue::new(vec![1.0, -2.5], EncodingFormat::Base64)
        else {
            panic!("not base64");
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }
}
