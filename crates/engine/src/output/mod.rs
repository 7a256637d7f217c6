//! The model's reply as structure: tool calls and reasoning separated from
//! the answer text, incrementally, on the text the streaming detokenizer
//! and the stop strings let through.
//!
//! Laid out as mlx-lm's `tool_parsers/` and vLLM's `tool_parsers/` and
//! `reasoning/` are: one small module per tool-call format, each a state
//! machine over decoded text (no token ids), chosen by the format
//! [`tool_format`] detects in the chat template:
//!
//! | module | format |
//! |---|---|
//! | [`json_call`] | Hermes / Qwen `<tool_call>` JSON, Llama 3 JSON, the generic format |
//! | [`qwen3_coder`] | Qwen3-Coder `<function=…><parameter=…>` XML |
//! | [`mistral`] | Mistral `[TOOL_CALLS]` (JSON array, or `NAME[ARGS]{…}`) |
//! | [`harmony`] | gpt-oss Harmony channels (reasoning, calls and the answer) |
//! | [`glm45`] | GLM-4.5 / 4.7 `<arg_key>` / `<arg_value>` |
//! | [`gemma4`] | Gemma 4 `<\|tool_call>call:NAME{…}<tool_call\|>` |
//! | [`deepseek_v3`] | DeepSeek-V3 / R1 `<｜tool▁call▁begin｜>` |
//! | [`reasoning`] | `<think>…</think>` blocks (Qwen3, DeepSeek-R1, Gemma 4's thought channel) |
//!
//! A call is recognized only once it is complete (its closing marker, or
//! the end of the reply for formats without one) and its arguments parse;
//! text that looks like a call but does not parse stays in the content and
//! is logged, so a malformed reply is never an error. Whether a text is
//! split into deltas at one place or another never changes the result: each
//! parser holds back a suffix that could still begin a marker.

pub mod deepseek_v3;
pub mod gemma4;
pub mod glm45;
pub mod harmony;
pub mod json_call;
pub mod mistral;
pub mod qwen3_coder;
pub mod reasoning;
mod scan;
pub mod tool_format;

use serde_json::{Map, Value};

pub use reasoning::ThinkMarkers;
pub use tool_format::{CallShape, DeepSeekStyle, Envelope, MistralStyle, ToolFormat, ToolSyntax};

/// One tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    /// The arguments, a JSON object, as compact JSON text.
    pub arguments: String,
}

impl ParsedCall {
    /// A call whose arguments must be a JSON object.
    pub(crate) fn new(name: &str, arguments: Value) -> Result<ParsedCall, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("a tool call without a function name".into());
        }
        let Value::Object(_) = arguments else {
            return Err(format!("the arguments of {name:?} are not a JSON object"));
        };
        Ok(ParsedCall {
            name: name.to_owned(),
            arguments: arguments.to_string(),
        })
    }
}

/// A piece of the reply, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Answer text (`message.content`).
    Content(String),
    /// Reasoning text (`message.reasoning_content`).
    Reasoning(String),
    /// A complete tool call.
    Call(ParsedCall),
}

/// The tools of a request, by function name, for formats whose argument
/// values are text typed by the function's JSON schema.
#[derive(Debug, Clone, Default)]
pub struct ToolSchemas {
    /// (name, `parameters.properties`).
    functions: Vec<(String, Map<String, Value>)>,
}

impl ToolSchemas {
    /// From the request's `tools` (`{"type": "function", "function": {...}}`).
    pub fn new(tools: &[Value]) -> ToolSchemas {
        let functions = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .filter_map(|f| {
                let name = f.get("name")?.as_str()?.to_owned();
                let properties = f
                    .get("parameters")
                    .and_then(|p| p.get("properties"))
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                Some((name, properties))
            })
            .collect();
        ToolSchemas { functions }
    }

    /// The JSON schema of parameter `param` of function `name`.
    pub fn param(&self, name: &str, param: &str) -> Option<&Value> {
        self.functions
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, props)| props.get(param))
    }
}

/// The parser of one tool-call format over streamed text.
pub trait ToolParser: Send {
    /// Feeds a text delta; appends the pieces that became final.
    fn push(&mut self, text: &str, out: &mut Vec<Piece>);
    /// Ends the reply; appends everything still held.
    fn finish(&mut self, out: &mut Vec<Piece>);
}

/// Turns the text inside one call section into calls.
pub(crate) type BodyParser = fn(&str, &ToolSchemas) -> Result<Vec<ParsedCall>, String>;

/// A format whose calls sit between an opening and (optionally) a closing
/// marker, with text around them: the shared state machine of every format
/// but Harmony. Without a closing marker the section runs to the end of the
/// reply.
pub(crate) struct Delimited {
    open: &'static [&'static str],
    close: Option<&'static str>,
    body: BodyParser,
    tools: ToolSchemas,
    /// The reply may be one bare JSON call (Llama 3): a reply whose first
    /// non-blank character is `{` is read as a call section.
    bare_json: bool,
    /// Nothing but whitespace seen yet.
    at_start: bool,
    buf: String,
    /// Inside a section opened by this marker ("" for a bare JSON reply).
    section: Option<&'static str>,
}

impl Delimited {
    pub(crate) fn new(
        open: &'static [&'static str],
        close: Option<&'static str>,
        body: BodyParser,
        tools: ToolSchemas,
    ) -> Delimited {
        Delimited {
            open,
            close,
            body,
            tools,
            bare_json: false,
            at_start: true,
            buf: String::new(),
            section: None,
        }
    }

    pub(crate) fn with_bare_json(mut self) -> Delimited {
        self.bare_json = true;
        self
    }

    /// Parses a finished section; on failure its text becomes content.
    fn close_section(&mut self, open: &str, body: &str, close: &str, out: &mut Vec<Piece>) {
        match (self.body)(body, &self.tools) {
            Ok(calls) if !calls.is_empty() => out.extend(calls.into_iter().map(Piece::Call)),
            result => {
                let why = result.err().unwrap_or_else(|| "no call in it".into());
                tracing::warn!(reason = %why, "the model's tool call does not parse; kept as text");
                out.push(Piece::Content(format!("{open}{body}{close}")));
            }
        }
    }
}

impl ToolParser for Delimited {
    fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.buf.push_str(text);
        loop {
            match self.section {
                None => {
                    if self.at_start {
                        let trimmed = self.buf.trim_start();
                        if trimmed.is_empty() {
                            return;
                        }
                        self.at_start = false;
                        if self.bare_json && trimmed.starts_with('{') {
                            self.section = Some("");
                            continue;
                        }
                    }
                    let (before, found) = scan::take_until(&mut self.buf, self.open);
                    if !before.is_empty() {
                        out.push(Piece::Content(before));
                    }
                    match found {
                        Some(i) => self.section = Some(self.open[i]),
                        None => return,
                    }
                }
                Some(open) => {
                    let Some(close) = self.close else { return };
                    let Some(at) = self.buf.find(close) else {
                        return;
                    };
                    let body = self.buf[..at].to_owned();
                    self.buf.drain(..at + close.len());
                    self.section = None;
                    self.close_section(open, &body, close, out);
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Piece>) {
        let rest = std::mem::take(&mut self.buf);
        match self.section.take() {
            // An unclosed section (cut off, or a format without a closing
            // marker) is read as it stands.
            Some(open) => self.close_section(open, &rest, "", out),
            None if !rest.is_empty() => out.push(Piece::Content(rest)),
            None => {}
        }
    }
}

/// What an [`OutputParser`] looks for.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    /// The model's tool-call syntax; `None` when no tools are offered
    /// (calls are then not parsed, except Harmony's channels).
    pub tools: Option<ToolSyntax>,
    /// The request's tool definitions.
    pub tool_definitions: Vec<Value>,
    /// The template source (selects sub-styles of a format).
    pub template: String,
    /// The reasoning block's markers, if the model has them.
    pub reasoning: Option<ThinkMarkers>,
    /// The prompt ends inside an open reasoning block.
    pub starts_in_reasoning: bool,
    /// The model's channels are Harmony's (gpt-oss), with or without tools.
    pub harmony: bool,
    /// Keep only the first call (`parallel_tool_calls: false`).
    pub single_call: bool,
}

impl OutputOptions {
    /// The special tokens whose text the parser must see (decoding skips
    /// special tokens otherwise): the markers of the tool format (when
    /// tools are offered, or for Harmony's channels) and of the reasoning
    /// block that `tokenizer` marks special.
    pub fn kept_special_ids(&self, tokenizer: &crate::Tokenizer) -> Vec<u32> {
        let mut markers: Vec<&str> = Vec::new();
        if let Some(syntax) = &self.tools {
            markers.extend(syntax.format.marker_tokens());
        }
        if self.harmony {
            markers.extend(ToolFormat::Harmony.marker_tokens());
        }
        if let Some(m) = &self.reasoning {
            markers.extend(m.texts());
        }
        let added = tokenizer.inner().get_added_vocabulary();
        let mut ids: Vec<u32> = markers
            .iter()
            .filter_map(|m| tokenizer.encode(m, false).ok())
            .flatten()
            .filter(|&id| {
                tokenizer
                    .id_to_token(id)
                    .is_some_and(|t| added.is_special_token(&t))
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The whole reply's parser: reasoning, then tool calls, then the answer.
pub struct OutputParser {
    reasoning: Option<reasoning::ThinkSplitter>,
    tools: Option<Box<dyn ToolParser>>,
    single_call: bool,
    calls: usize,
    /// Whitespace-only content held until the next piece decides it: it
    /// is dropped before, between and after calls.
    pending_blank: String,
    content_started: bool,
    saw_reasoning: bool,
    scratch: Vec<Piece>,
}

impl OutputParser {
    pub fn new(options: &OutputOptions) -> OutputParser {
        let schemas = ToolSchemas::new(&options.tool_definitions);
        let tools: Option<Box<dyn ToolParser>> = if options.harmony {
            Some(Box::new(harmony::Harmony::new(options.tools.is_some())))
        } else {
            options
                .tools
                .map(|syntax| parser_for(syntax.format, &options.template, schemas))
        };
        let reasoning = if options.harmony {
            None
        } else {
            options
                .reasoning
                .clone()
                .map(|m| reasoning::ThinkSplitter::new(m, options.starts_in_reasoning))
        };
        OutputParser {
            reasoning,
            tools,
            single_call: options.single_call,
            calls: 0,
            pending_blank: String::new(),
            content_started: false,
            saw_reasoning: false,
            scratch: Vec::new(),
        }
    }

    /// Feeds a text delta; returns the pieces that became final.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut stage = Vec::new();
        match &mut self.reasoning {
            Some(r) => r.push(text, &mut stage),
            None => stage.push(Piece::Content(text.to_owned())),
        }
        self.route(stage, false)
    }

    /// Ends the reply; returns everything still held.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut stage = Vec::new();
        if let Some(r) = &mut self.reasoning {
            r.finish(&mut stage);
        }
        self.route(stage, true)
    }

    /// How many calls were returned.
    pub fn calls(&self) -> usize {
        self.calls
    }

    fn route(&mut self, stage: Vec<Piece>, end: bool) -> Vec<Piece> {
        let mut parsed = std::mem::take(&mut self.scratch);
        parsed.clear();
        for piece in stage {
            match (piece, &mut self.tools) {
                (Piece::Content(text), Some(tools)) => tools.push(&text, &mut parsed),
                (piece, _) => parsed.push(piece),
            }
        }
        if end {
            if let Some(tools) = &mut self.tools {
                tools.finish(&mut parsed);
            }
        }
        let mut out = Vec::with_capacity(parsed.len());
        for piece in parsed.drain(..) {
            self.emit(piece, &mut out);
        }
        self.scratch = parsed;
        if end && self.calls == 0 && !self.pending_blank.is_empty() {
            out.push(Piece::Content(std::mem::take(&mut self.pending_blank)));
        }
        out
    }

    fn emit(&mut self, piece: Piece, out: &mut Vec<Piece>) {
        match piece {
            Piece::Content(text) if text.is_empty() => {}
            Piece::Content(text) => {
                let text = if !self.content_started && self.saw_reasoning {
                    text.trim_start()
                } else {
                    text.as_str()
                };
                // Trailing blanks wait for what follows: dropped before and
                // after calls, whatever the deltas' boundaries.
                let body = text.trim_end();
                if body.is_empty() {
                    self.pending_blank.push_str(text);
                    return;
                }
                self.content_started = true;
                let mut emit = std::mem::take(&mut self.pending_blank);
                emit.push_str(body);
                self.pending_blank.push_str(&text[body.len()..]);
                out.push(Piece::Content(emit));
            }
            Piece::Reasoning(text) => {
                self.saw_reasoning = true;
                if !text.is_empty() {
                    out.push(Piece::Reasoning(text));
                }
            }
            Piece::Call(call) => {
                self.pending_blank.clear();
                if self.single_call && self.calls > 0 {
                    tracing::info!(
                        function = %call.name,
                        "a further tool call dropped: parallel_tool_calls is false"
                    );
                    return;
                }
                self.calls += 1;
                out.push(Piece::Call(call));
            }
        }
    }
}

/// The parser of `format`.
pub fn parser_for(format: ToolFormat, template: &str, tools: ToolSchemas) -> Box<dyn ToolParser> {
    match format {
        ToolFormat::Hermes | ToolFormat::Generic => Box::new(json_call::hermes(tools)),
        ToolFormat::Llama3Json => Box::new(json_call::llama3(tools)),
        ToolFormat::Qwen3CoderXml => Box::new(qwen3_coder::parser(tools)),
        ToolFormat::Mistral => Box::new(mistral::parser(MistralStyle::detect(template), tools)),
        ToolFormat::Harmony => Box::new(harmony::Harmony::new(true)),
        ToolFormat::Glm45 => Box::new(glm45::parser(tools)),
        ToolFormat::Gemma4 => Box::new(gemma4::parser(tools)),
        ToolFormat::DeepSeekV3 => Box::new(deepseek_v3::parser(tools)),
    }
}

/// Test helpers shared by the format modules.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Merges adjacent content and reasoning pieces.
    pub fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        for p in pieces {
            match (out.last_mut(), p) {
                (Some(Piece::Content(a)), Piece::Content(b)) => a.push_str(&b),
                (Some(Piece::Reasoning(a)), Piece::Reasoning(b)) => a.push_str(&b),
                (_, p) => out.push(p),
            }
        }
        out
    }

    /// Runs `text` through fresh parsers, whole and split at every
    /// character boundary (into two pieces, and into single characters),
    /// and checks that every split gives the whole run's pieces.
    pub fn run_split(make: &dyn Fn() -> OutputParser, text: &str) -> Vec<Piece> {
        let run = |chunks: &[&str]| {
            let mut p = make();
            let mut all = Vec::new();
            for c in chunks {
                all.extend(p.push(c));
            }
            all.extend(p.finish());
            merge(all)
        };
        let whole = run(&[text]);
        for (at, _) in text.char_indices().skip(1) {
            let (a, b) = text.split_at(at);
            assert_eq!(run(&[a, b]), whole, "split at byte {at} of {text:?}");
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&refs), whole, "one character at a time: {text:?}");
        whole
    }

    /// A parser for `format` with `tools` offered.
    pub fn parser(format: ToolFormat, template: &str, tools: Value) -> OutputParser {
        let tool_definitions = tools.as_array().cloned().unwrap_or_default();
        OutputParser::new(&OutputOptions {
            tools: Some(ToolSyntax::detect(template))
                .filter(|s| s.format == format)
                .or(Some(ToolSyntax {
                    format,
                    envelope: ToolSyntax::detect("").envelope,
                })),
            tool_definitions,
            template: template.to_owned(),
            harmony: format == ToolFormat::Harmony,
            ..OutputOptions::default()
        })
    }

    pub fn call(name: &str, arguments: Value) -> Piece {
        Piece::Call(ParsedCall {
            name: name.into(),
            arguments: arguments.to_string(),
        })
    }

    pub fn content(text: &str) -> Piece {
        Piece::Content(text.into())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::merge;
    use super::*;
    use proptest::prelude::*;

    /// Pieces of every format's syntax and of ordinary text, so random
    /// replies come close to calls, half-calls and broken calls.
    const ATOMS: &[&str] = &[
        "<tool_call>",
        "</tool_call>",
        "<function=",
        "</function>",
        "<parameter=",
        "</parameter>",
        "<arg_key>",
        "</arg_key>",
        "<arg_value>",
        "</arg_value>",
        "<|tool_call>",
        "<tool_call|>",
        "call:",
        "<|\"|>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "[CALL_ID]",
        "<|python_tag|>",
        "<|channel|>",
        "<|message|>",
        "<|end|>",
        "<|start|>",
        "analysis",
        "final",
        "commentary to=functions.",
        "<|constrain|>",
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁calls▁end｜>",
        "function",
        "```json",
        "<think>",
        "</think>",
        "{",
        "}",
        "[",
        "]",
        "\"name\": ",
        "\"arguments\": ",
        "\"f\"",
        ", ",
        ":",
        "1",
        "get",
        "x",
        " ",
        "\n",
        "é",
        "｜",
        "<",
        ">",
        "|",
        "\"",
        // Whole calls of each format.
        "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>",
        "{\"name\": \"f\", \"parameters\": {\"x\": 1}}",
        "[TOOL_CALLS]f[ARGS]{}",
        "<|tool_call>call:f{x:1}<tool_call|>",
        "<function=f><parameter=x>1</parameter></function>",
        "f<arg_key>x</arg_key><arg_value>1</arg_value>",
        "<｜tool▁call▁begin｜>f<｜tool▁sep｜>{}<｜tool▁call▁end｜>",
        "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}",
    ];

    fn options(format: ToolFormat, reasoning: bool, inside: bool) -> OutputOptions {
        let template = match format {
            ToolFormat::Mistral => "[ARGS]",
            ToolFormat::DeepSeekV3 => "```json",
            _ => "",
        };
        OutputOptions {
            tools: Some(ToolSyntax {
                format,
                envelope: ToolSyntax::detect(template).envelope,
            }),
            template: template.to_owned(),
            reasoning: reasoning.then(|| ThinkMarkers {
                start: "<think>".into(),
                end: "</think>".into(),
            }),
            starts_in_reasoning: inside,
            harmony: format == ToolFormat::Harmony,
            ..OutputOptions::default()
        }
    }

    fn run(options: &OutputOptions, chunks: &[&str]) -> Vec<Piece> {
        let mut parser = OutputParser::new(options);
        let mut all = Vec::new();
        for chunk in chunks {
            all.extend(parser.push(chunk));
        }
        all.extend(parser.finish());
        merge(all)
    }

    const FORMATS: [ToolFormat; 9] = [
        ToolFormat::Hermes,
        ToolFormat::Qwen3CoderXml,
        ToolFormat::Llama3Json,
        ToolFormat::Mistral,
        ToolFormat::Harmony,
        ToolFormat::Glm45,
        ToolFormat::Gemma4,
        ToolFormat::DeepSeekV3,
        ToolFormat::Generic,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// No reply makes a parser panic, and where it is split never
        /// changes what it gives.
        #[test]
        fn any_reply_parses_the_same_however_it_is_split(
            atoms in prop::collection::vec(prop::sample::select(ATOMS), 0..40),
            format in prop::sample::select(&FORMATS[..]),
            reasoning in any::<bool>(),
            inside in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let text: String = atoms.concat();
            let options = options(format, reasoning, inside);
            let whole = run(&options, &[&text]);
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            if !boundaries.is_empty() {
                let at = boundaries[cut.index(boundaries.len())];
                let (a, b) = text.split_at(at);
                prop_assert_eq!(&run(&options, &[a, b]), &whole);
            }
            let per_atom: Vec<&str> = atoms.to_vec();
            prop_assert_eq!(&run(&options, &per_atom), &whole);
            // Nothing is lost: without calls, the pieces are the text.
            if whole.iter().all(|p| !matches!(p, Piece::Call(_))) && !reasoning
                && format != ToolFormat::Harmony
            {
                let joined: String = whole
                    .iter()
                    .map(|p| match p {
                        Piece::Content(t) | Piece::Reasoning(t) => t.as_str(),
                        Piece::Call(_) => "",
                    })
                    .collect();
                prop_assert_eq!(joined.trim(), text.trim());
            }
        }
    }
}
