//! Chat prompts with tools, and how to read the reply: the model's tool
//! format (from its chat template), its reasoning markers, and the parser
//! state of each choice, which turns the text the stop strings let through
//! into content, reasoning and tool calls (`engine::output`).
//!
//! Tools reach the template as `tools` unless `tool_choice` is `"none"`; a
//! template without a tool format of its own gets them described in a
//! system message (`engine::output::json_call::generic_tools_prompt`), or
//! at the head of the first user message when the template refuses a
//! system role. For gpt-oss, an assistant message's `reasoning_content`
//! reaches the template as `thinking`, the key its template reads.

use std::sync::Arc;

use api::response::{ToolCall, tool_call_id};
use api::{ApiError, ToolChoice};
use engine::output::json_call::generic_tools_prompt;
use engine::output::{OutputOptions, OutputParser, Piece, ThinkMarkers, ToolFormat, ToolSyntax};
use engine::{ChatMessage, MessageContent, RenderOptions, Tokenizer};
use serde_json::{Map, Value};

/// A chat request's tools and template arguments, as validated.
pub struct ChatTools {
    pub tools: Option<Vec<Value>>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    pub template_kwargs: Map<String, Value>,
}

/// Renders the prompt of `messages`; returns it and how to read the reply.
pub fn render_chat(
    tokenizer: &Tokenizer,
    messages: Vec<Value>,
    chat: ChatTools,
) -> Result<(String, Arc<OutputOptions>), ApiError> {
    let mut messages: Vec<ChatMessage> = serde_json::from_value(Value::Array(messages))
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let syntax = ToolSyntax::of_tokenizer(tokenizer);
    if syntax.format == ToolFormat::Harmony {
        // gpt-oss's template reads an assistant turn's reasoning from
        // `thinking`; clients send back the `reasoning_content` they got.
        for message in messages.iter_mut().filter(|m| m.role == "assistant") {
            if let Some(reasoning) = message.extra.get("reasoning_content").cloned() {
                message.extra.entry("thinking").or_insert(reasoning);
            }
        }
    }
    let tools = chat
        .tools
        .filter(|t| !t.is_empty() && chat.tool_choice.offers_tools());
    let mut options = RenderOptions {
        add_generation_prompt: true,
        tools: None,
        kwargs: chat.template_kwargs,
    };
    let render = |messages: &[ChatMessage], options: &RenderOptions| {
        tokenizer
            .apply_chat_template(messages, options)
            .map_err(|e| ApiError::invalid("messages", format!("chat template: {e}")))
    };
    let text = match &tools {
        Some(tools) if syntax.format == ToolFormat::Generic => {
            let described = generic_tools_prompt(tools);
            let mut with_system = messages.clone();
            add_to_system(&mut with_system, &described)?;
            match render(&with_system, &options) {
                Ok(text) => text,
                // A template that refuses system messages.
                Err(_) => {
                    prepend_to_first_user(&mut messages, &described)?;
                    render(&messages, &options)?
                }
            }
        }
        Some(tools) => {
            options.tools = Some(tools.clone());
            render(&messages, &options)?
        }
        None => render(&messages, &options)?,
    };
    let reasoning = ThinkMarkers::of_tokenizer(tokenizer);
    let output = OutputOptions {
        tools: tools.is_some().then_some(syntax),
        tool_definitions: tools.unwrap_or_default(),
        template: tokenizer.select_chat_template(&options).source().to_owned(),
        starts_in_reasoning: reasoning.as_ref().is_some_and(|m| m.prompt_opens(&text)),
        reasoning,
        harmony: syntax.format == ToolFormat::Harmony,
        single_call: !chat.parallel_tool_calls,
    };
    Ok((text, Arc::new(output)))
}

fn message_text(message: &ChatMessage) -> Result<String, ApiError> {
    message
        .text()
        .map_err(|e| ApiError::invalid("messages", e.to_string()))
}

/// Appends `text` to the leading system message, or inserts one.
fn add_to_system(messages: &mut Vec<ChatMessage>, text: &str) -> Result<(), ApiError> {
    match messages.first_mut() {
        Some(first) if first.role == "system" => {
            let joined = format!("{}\n\n{text}", message_text(first)?);
            first.content = Some(MessageContent::Text(joined));
        }
        _ => messages.insert(0, ChatMessage::new("system", text)),
    }
    Ok(())
}

fn prepend_to_first_user(messages: &mut [ChatMessage], text: &str) -> Result<(), ApiError> {
    if let Some(user) = messages.iter_mut().find(|m| m.role == "user") {
        let joined = format!("{text}\n\n{}", message_text(user)?);
        user.content = Some(MessageContent::Text(joined));
    }
    Ok(())
}

/// What one step of a choice's reply adds.
#[derive(Debug, Default)]
pub struct ReplyStep {
    pub content: String,
    pub reasoning: String,
    pub calls: Vec<ToolCall>,
}

impl ReplyStep {
    fn add(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            match piece {
                Piece::Content(text) => self.content.push_str(&text),
                Piece::Reasoning(text) => self.reasoning.push_str(&text),
                Piece::Call(call) => self.calls.push(ToolCall::function(
                    tool_call_id(rand::random()),
                    call.name,
                    call.arguments,
                )),
            }
        }
    }
}

/// One choice's reply parser (chat), or plain text (completions).
pub enum Reply {
    Text,
    Parsed(Box<OutputParser>),
}

impl Reply {
    pub fn new(options: Option<&OutputOptions>) -> Reply {
        match options {
            Some(options) => Reply::Parsed(Box::new(OutputParser::new(options))),
            None => Reply::Text,
        }
    }

    /// Text the stop strings let through; `end`: the reply is over.
    pub fn step(&mut self, text: String, end: bool) -> ReplyStep {
        let mut step = ReplyStep::default();
        match self {
            Reply::Text => step.content = text,
            Reply::Parsed(parser) => {
                step.add(parser.push(&text));
                if end {
                    step.add(parser.finish());
                }
            }
        }
        step
    }

    /// Whether the reply called tools.
    pub fn called_tools(&self) -> bool {
        matches!(self, Reply::Parsed(p) if p.calls() > 0)
    }
}
