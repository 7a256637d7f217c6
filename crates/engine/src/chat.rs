//! Chat templates: Hugging Face Jinja chat templates rendered with minijinja.
//!
//! Follows `transformers`' `apply_chat_template` (`utils/chat_template_utils.py`):
//! the same environment settings (`trim_blocks`, `lstrip_blocks`, loop
//! controls), the same globals (`raise_exception`, `strftime_now`), a
//! `tojson` filter that writes JSON as Python's `json.dumps` does (`", "` and
//! `": "` separators, keys in insertion order, no ASCII escaping), and the same
//! context: `messages`, `tools`, `add_generation_prompt`, the special tokens
//! (`bos_token`, `eos_token`, ...) and any extra keyword arguments (such as
//! `enable_thinking`). Python string methods (`.strip()`, `.startswith()`,
//! `.split()`, ...) come from `minijinja-contrib`'s pycompat layer.
//!
//! Message content given as a list of `{type: "text", text}` parts is joined
//! into one string before rendering, as mlx-lm's server does, since the
//! templates expect a string; missing or `null` content renders as `""`.
//!
//! A model without a template gets [`CHATML_TEMPLATE`], the ChatML format
//! (`<|im_start|>role\ncontent<|im_end|>\n`).

use std::fmt::Write as _;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// The template used when a model ships none: ChatML, as Qwen and SmolLM2 use.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat_template";

/// Errors from compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0}")]
    Compile(String),
    #[error("chat template failed to render: {0}")]
    Render(String),
    #[error("invalid chat message: {0}")]
    InvalidMessage(String),
}

/// Message content: a plain string or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part message content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A chat message as the templates see it. Fields other than `role` and
/// `content` (`tool_calls`, `tool_call_id`, `name`, `reasoning_content`, ...)
/// are passed to the template unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl ChatMessage {
    /// A message with plain text content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: Some(MessageContent::Text(content.into())),
            extra: Map::new(),
        }
    }

    /// The content as one string: text parts joined, `None` as `""`.
    pub fn text(&self) -> Result<String, TemplateError> {
        match &self.content {
            None => Ok(String::new()),
            Some(MessageContent::Text(s)) => Ok(s.clone()),
            Some(MessageContent::Parts(parts)) => {
                let mut out = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(text)) => out.push_str(text),
                        (kind, _) => {
                            return Err(TemplateError::InvalidMessage(format!(
                                "unsupported content part of type {kind:?}"
                            )));
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// The message as the JSON object handed to the template.
    fn to_template_json(&self) -> Result<Json, TemplateError> {
        let mut obj = Map::new();
        obj.insert("role".into(), Json::String(self.role.clone()));
        obj.insert("content".into(), Json::String(self.text()?));
        for (k, v) in &self.extra {
            obj.insert(k.clone(), v.clone());
        }
        Ok(Json::Object(obj))
    }
}

/// Per-render options.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Append the header that starts the assistant's turn.
    pub add_generation_prompt: bool,
    /// Tool (function) definitions, passed as `tools`; `None` renders as
    /// Python's `None`.
    pub tools: Option<Vec<Json>>,
    /// Extra template variables (`enable_thinking`, ...); they override the
    /// special tokens of the same name, as in `transformers`.
    pub kwargs: Map<String, Json>,
}

/// A compiled chat template plus the special tokens it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    special_tokens: Map<String, Json>,
}

impl ChatTemplate {
    /// Compiles `source`. `special_tokens` maps names such as `bos_token`
    /// to their text and becomes part of every render's context.
    pub fn new(source: &str, special_tokens: Map<String, Json>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| TemplateError::Compile(describe(&e)))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| TemplateError::Compile(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            special_tokens,
        })
    }

    /// The ChatML fallback for models without a template.
    pub fn chatml(special_tokens: Map<String, Json>) -> Self {
        Self::new(CHATML_TEMPLATE, special_tokens).expect("the built-in ChatML template compiles")
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` to the prompt text.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let messages = messages
            .iter()
            .map(ChatMessage::to_template_json)
            .collect::<Result<Vec<_>, _>>()?;
        let mut ctx = self.special_tokens.clone();
        ctx.insert("messages".into(), Json::Array(messages));
        ctx.insert(
            "tools".into(),
            options.tools.clone().map_or(Json::Null, Json::Array),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(options.add_generation_prompt),
        );
        for (k, v) in &options.kwargs {
            ctx.insert(k.clone(), v.clone());
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        template
            .render(Value::from(Serde(&ctx)))
            .map_err(|e| TemplateError::Render(describe(&e)))
    }
}

/// An error with its chain of causes, on one line.
fn describe(e: &Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

/// `raise_exception(message)`: fails the render with the template's message.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the local time, formatted like Python's
/// `datetime.now().strftime(format)`.
fn strftime_now(format: String) -> Result<Value, Error> {
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("invalid strftime format {format:?}"),
        )
    })?;
    Ok(Value::from(out))
}

/// `tojson` as `transformers` defines it: `json.dumps(value,
/// ensure_ascii=False, indent=indent, separators=separators,
/// sort_keys=sort_keys)`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_owned(),
            None => " ".repeat(usize::try_from(v).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson indent must be a number",
                )
            })?),
        }),
    };
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson separators must be a pair",
            ));
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let json = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(&mut out, &json, 0);
    Ok(Value::from_safe_string(out))
}

/// How Python's `json.dumps` lays out a document.
struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonStyle {
    fn write(&self, out: &mut String, value: &Json, depth: usize) {
        match value {
            Json::Array(items) if !items.is_empty() => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    self.separator(out, i, depth + 1);
                    self.write(out, item, depth + 1);
                }
                self.newline(out, depth);
                out.push(']');
            }
            Json::Object(map) if !map.is_empty() => {
                let mut entries: Vec<_> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    self.separator(out, i, depth + 1);
                    out.push_str(&Json::String(k.clone()).to_string());
                    out.push_str(&self.key_sep);
                    self.write(out, v, depth + 1);
                }
                self.newline(out, depth);
                out.push('}');
            }
            Json::Number(n) => out.push_str(&python_number(n)),
            other => out.push_str(&other.to_string()),
        }
    }

    fn separator(&self, out: &mut String, index: usize, depth: usize) {
        if index > 0 {
            out.push_str(&self.item_sep);
        }
        self.newline(out, depth);
    }

    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    }
}

/// A number as Python prints it: integers plainly, floats with `repr`'s
/// shortest round-trip digits (`1.0`, `1e-07`, `1e+20`).
fn python_number(n: &serde_json::Number) -> String {
    let Some(f) = n.as_f64().filter(|_| n.is_f64()) else {
        return n.to_string();
    };
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        return format!("{f:.1}");
    }
    let s = format!("{f:e}");
    // Rust writes `1e-7` / `1.5e20`; Python writes `1e-07` / `1.5e+20`.
    let Some((mantissa, exp)) = s.split_once('e') else {
        return s;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        return f.to_string();
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specials() -> Map<String, Json> {
        let mut m = Map::new();
        m.insert("bos_token".into(), json!("<s>"));
        m.insert("eos_token".into(), json!("</s>"));
        m
    }

    fn render(src: &str, messages: &[ChatMessage], opts: &RenderOptions) -> String {
        ChatTemplate::new(src, specials())
            .expect("compiles")
            .render(messages, opts)
            .expect("renders")
    }

    #[test]
    fn chatml_fallback_renders_the_documented_format() {
        let t = ChatTemplate::chatml(specials());
        let opts = RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let out = t
            .render(&[ChatMessage::new("user", "Hi")], &opts)
            .expect("renders");
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let src = "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'a<b' | tojson }}";
        let mut kwargs = Map::new();
        kwargs.insert(
            "x".into(),
            json!({"b": [1, 2.5, 3.0, "é\n"], "a": {}, "c": [], "d": null, "e": true}),
        );
        let opts = RenderOptions {
            kwargs,
            ..Default::default()
        };
        let out = render(src, &[], &opts);
        assert_eq!(
            out,
            "{\"b\": [1, 2.5, 3.0, \"é\\n\"], \"a\": {}, \"c\": [], \"d\": null, \"e\": true}|\
{\n  \"b\": [\n    1,\n    2.5,\n    3.0,\n    \"é\\n\"\n  ],\n  \"a\": {},\n  \"c\": [],\n  \"d\": null,\n  \"e\": true\n}|\"a<b\""
        );
    }

    #[test]
    fn python_numbers_use_repr_formatting() {
        let cases = [
            (1e-7, "1e-07"),
            (1e20, "1e+20"),
            (0.001, "0.001"),
            (2.0, "2.0"),
        ];
        for (f, want) in cases {
            let n = serde_json::Number::from_f64(f).expect("finite");
            assert_eq!(python_number(&n), want, "{f}");
        }
    }

    #[test]
    fn python_string_methods_and_namespace_work() {
        let src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}\
{{ m.content.strip().split(',')[-1] }}{{ m.content.startswith(' a') }}{% endfor %}{{ ns.n }}";
        let out = render(
            src,
            &[ChatMessage::new("user", " a,b ")],
            &RenderOptions::default(),
        );
        // Booleans print as Python does.
        assert_eq!(out, "bTrue1");
    }

    #[test]
    fn raise_exception_becomes_a_render_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", specials())
            .expect("compiles");
        let err = t
            .render(&[], &RenderOptions::default())
            .expect_err("must fail");
        assert!(matches!(&err, TemplateError::Render(m) if m.contains("roles must alternate")));
    }

    #[test]
    fn syntax_errors_are_compile_errors() {
        let err = ChatTemplate::new("{% for %}", specials()).expect_err("must fail");
        assert!(matches!(err, TemplateError::Compile(_)));
    }

    #[test]
    fn generation_blocks_are_not_supported() {
        let src = "{% generation %}{{ m }}{% endgeneration %}";
        assert!(matches!(
            ChatTemplate::new(src, specials()),
            Err(TemplateError::Compile(_))
        ));
    }

    #[test]
    fn content_parts_are_joined_and_null_is_empty() {
        let msg: ChatMessage = serde_json::from_value(json!({
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "name": "x"
        }))
        .expect("valid message");
        let null: ChatMessage =
            serde_json::from_value(json!({"role": "assistant", "content": null})).expect("valid");
        let out = render(
            "{% for m in messages %}[{{ m.content }}|{{ m.name }}]{% endfor %}{{ bos_token }}",
            &[msg, null],
            &RenderOptions::default(),
        );
        assert_eq!(out, "[ab|x][|]<s>");
        let image: ChatMessage = serde_json::from_value(json!({
            "role": "user", "content": [{"type": "image_url"}]
        }))
        .expect("valid message");
        assert!(matches!(
            image.text(),
            Err(TemplateError::InvalidMessage(_))
        ));
    }

    #[test]
    fn strftime_now_formats_the_date() {
        let out = render("{{ strftime_now('%Y') }}", &[], &RenderOptions::default());
        assert_eq!(out.len(), 4);
        assert!(out.chars().all(|c| c.is_ascii_digit()));
    }
}
