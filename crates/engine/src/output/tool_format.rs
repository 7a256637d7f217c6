//! Which tool-call format a model writes, detected from its chat template,
//! and the literal text of that format's envelope.
//!
//! Detection follows mlx-lm's `tokenizer_utils._infer_tool_parser` (markers
//! searched in the template source, most specific first) extended to the
//! formats of vLLM's `tool_parsers/`: gpt-oss Harmony, DeepSeek-V3 and
//! Llama 3's JSON. A template that writes none of the known markers gets
//! [`ToolFormat::Generic`]: the tools are then described in a system message
//! that asks for the Hermes envelope, and parsed as such.
//!
//! [`Envelope`] says what one call looks like as text, so that a grammar
//! can force a syntactically valid call (`tool_choice: "required"` or a
//! named function): the text that opens the calls section and each call,
//! the call's shape (one JSON object with name and arguments keys, or the
//! function name as raw text followed by a JSON arguments object), and the
//! text that closes each call and the section. For the Hermes format the
//! output is
//!
//! ```text
//! <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>
//! ```
//!
//! that is `call_open` + a [`CallShape::JsonObject`] + `call_close`, calls
//! separated by `separator`. Formats whose arguments are not one JSON object
//! (Qwen3-Coder's XML parameters, GLM's `<arg_key>`/`<arg_value>` pairs,
//! Gemma 4's literal syntax) have [`CallShape::Markup`] and the example
//! in their variant's documentation; a grammar for them is written per format.

use serde::Serialize;

/// A model's tool-call format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// Hermes / Qwen2.5 / Qwen3: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`,
    /// one block per call.
    Hermes,
    /// Qwen3-Coder: `<tool_call>\n<function=NAME>\n<parameter=P>\nVALUE\n</parameter>\n</function>\n</tool_call>`;
    /// values are text, typed by the function's JSON schema.
    Qwen3CoderXml,
    /// Llama 3.1-3.3: the whole reply is `{"name": ..., "parameters": {...}}`,
    /// optionally after `<|python_tag|>`; one call per reply.
    Llama3Json,
    /// Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (v3 templates)
    /// or `[TOOL_CALLS]NAME[ARGS]{...}` per call (v11+ templates); see [`MistralStyle`].
    Mistral,
    /// gpt-oss Harmony: `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`;
    /// the `analysis` channel is reasoning, `final` is the answer.
    Harmony,
    /// GLM-4.5 / 4.6 / 4.7: `<tool_call>NAME\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>\n</tool_call>`
    /// (4.7 writes no newlines); string values are raw text, others JSON.
    Glm45,
    /// Gemma 4: `<|tool_call>call:NAME{key:<|"|>text<|"|>,n:5}<tool_call|>`: bare keys,
    /// strings between `<|"|>` delimiters.
    Gemma4,
    /// DeepSeek-V3 / R1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>...<｜tool▁call▁end｜><｜tool▁calls▁end｜>`,
    /// each call `NAME<｜tool▁sep｜>{...}` (V3.1+) or
    /// `function<｜tool▁sep｜>NAME\n```json\n{...}\n```` (V3, R1); see [`DeepSeekStyle`].
    DeepSeekV3,
    /// No known format in the template: tools are described in a system
    /// message asking for the Hermes envelope ([`GENERIC_CALL_OPEN`] …).
    Generic,
}

/// The two generations of Mistral's call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MistralStyle {
    /// `[TOOL_CALLS][{"name": ..., "arguments": {...}}]` (Mistral 7B v0.3, Nemo).
    JsonArray,
    /// `[TOOL_CALLS]NAME[ARGS]{...}`, repeated per call (Small 3.2, Devstral, Ministral 3).
    NameArgs,
}

/// The two generations of DeepSeek's call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeepSeekStyle {
    /// `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜>` (V3, R1).
    Fenced,
    /// `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>` (V3.1 and later).
    Plain,
}

/// What a model's tool calls look like: the format (which parser reads
/// them) and its envelope (what a grammar must produce).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ToolSyntax {
    pub format: ToolFormat,
    pub envelope: Envelope,
}

/// The literal text around tool calls. A reply holding calls `c1, c2` is
/// `section_open + call_open + c1 + call_close + separator + call_open + c2
/// + call_close + section_close`, where each `c` has the form of `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// Written once before the first call ("" if none).
    pub section_open: &'static str,
    /// Written before each call.
    pub call_open: &'static str,
    /// The form of one call between `call_open` and `call_close`.
    pub call: CallShape,
    /// Written after each call.
    pub call_close: &'static str,
    /// Between two calls.
    pub separator: &'static str,
    /// Written once after the last call ("" if none).
    pub section_close: &'static str,
    /// Whether one reply may hold several calls.
    pub parallel: bool,
}

/// The form of one call inside its envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CallShape {
    /// One JSON object `{"<name_key>": "NAME", "<arguments_key>": {ARGUMENTS}}`,
    /// these two keys in this order; ARGUMENTS satisfy the function's
    /// `parameters` schema.
    JsonObject {
        name_key: &'static str,
        arguments_key: &'static str,
    },
    /// The function name as raw text, then `between`, then the arguments
    /// as one JSON object, then `after`.
    NameThenJson {
        between: &'static str,
        after: &'static str,
    },
    /// Not JSON: parameters in the format's own markup (see the variant of
    /// [`ToolFormat`]).
    Markup,
}

/// The envelope the generic format asks for in its system message.
pub const GENERIC_CALL_OPEN: &str = "<tool_call>\n";
/// Closes one call of the generic format.
pub const GENERIC_CALL_CLOSE: &str = "\n</tool_call>";

const NAME_ARGUMENTS: CallShape = CallShape::JsonObject {
    name_key: "name",
    arguments_key: "arguments",
};

const HERMES: Envelope = Envelope {
    section_open: "",
    call_open: GENERIC_CALL_OPEN,
    call: NAME_ARGUMENTS,
    call_close: GENERIC_CALL_CLOSE,
    separator: "\n",
    section_close: "",
    parallel: true,
};

impl Envelope {
    /// The text of a reply holding `calls` (function name, arguments
    /// object), as a grammar built from this envelope would let the model
    /// write it; `None` for [`CallShape::Markup`] formats.
    pub fn write_calls(&self, calls: &[(&str, &serde_json::Value)]) -> Option<String> {
        let mut out = String::from(self.section_open);
        for (i, (name, arguments)) in calls.iter().enumerate() {
            if i > 0 {
                out.push_str(self.separator);
            }
            out.push_str(self.call_open);
            match self.call {
                CallShape::JsonObject {
                    name_key,
                    arguments_key,
                } => {
                    let mut call = serde_json::Map::new();
                    call.insert(name_key.into(), (*name).into());
                    call.insert(arguments_key.into(), (*arguments).clone());
                    out.push_str(&serde_json::Value::Object(call).to_string());
                }
                CallShape::NameThenJson { between, after } => {
                    out.push_str(name);
                    out.push_str(between);
                    out.push_str(&arguments.to_string());
                    out.push_str(after);
                }
                CallShape::Markup => return None,
            }
            out.push_str(self.call_close);
        }
        out.push_str(self.section_close);
        Some(out)
    }
}

impl ToolSyntax {
    /// Detects the format written by the chat template `source` (the
    /// template a request with tools renders with).
    pub fn detect(source: &str) -> ToolSyntax {
        let format = ToolFormat::detect(source);
        let envelope = match format {
            ToolFormat::Hermes | ToolFormat::Generic => HERMES,
            ToolFormat::Qwen3CoderXml => Envelope {
                call: CallShape::Markup,
                ..HERMES
            },
            ToolFormat::Glm45 => Envelope {
                call_open: "<tool_call>",
                call: CallShape::Markup,
                call_close: "</tool_call>",
                ..HERMES
            },
            ToolFormat::Gemma4 => Envelope {
                call_open: "<|tool_call>",
                call: CallShape::Markup,
                call_close: "<tool_call|>",
                separator: "",
                ..HERMES
            },
            ToolFormat::Llama3Json => Envelope {
                section_open: "",
                call_open: "",
                call: CallShape::JsonObject {
                    name_key: "name",
                    arguments_key: "parameters",
                },
                call_close: "",
                separator: "",
                section_close: "",
                parallel: false,
            },
            ToolFormat::Mistral => match MistralStyle::detect(source) {
                MistralStyle::JsonArray => Envelope {
                    section_open: "[TOOL_CALLS][",
                    call_open: "",
                    call: NAME_ARGUMENTS,
                    call_close: "",
                    separator: ", ",
                    section_close: "]",
                    parallel: true,
                },
                MistralStyle::NameArgs => Envelope {
                    section_open: "",
                    call_open: "[TOOL_CALLS]",
                    call: CallShape::NameThenJson {
                        between: "[ARGS]",
                        after: "",
                    },
                    call_close: "",
                    separator: "",
                    section_close: "",
                    parallel: true,
                },
            },
            ToolFormat::DeepSeekV3 => {
                let (call_open, between, after) = match DeepSeekStyle::detect(source) {
                    DeepSeekStyle::Plain => ("<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", ""),
                    DeepSeekStyle::Fenced => (
                        "<｜tool▁call▁begin｜>function<｜tool▁sep｜>",
                        "\n```json\n",
                        "\n```",
                    ),
                };
                Envelope {
                    section_open: "<｜tool▁calls▁begin｜>",
                    call_open,
                    call: CallShape::NameThenJson { between, after },
                    call_close: "<｜tool▁call▁end｜>",
                    separator: "",
                    section_close: "<｜tool▁calls▁end｜>",
                    parallel: true,
                }
            }
            ToolFormat::Harmony => Envelope {
                section_open: "",
                call_open: "<|channel|>commentary to=functions.",
                call: CallShape::NameThenJson {
                    between: " <|constrain|>json<|message|>",
                    after: "",
                },
                call_close: "<|call|>",
                separator: "",
                section_close: "",
                parallel: false,
            },
        };
        ToolSyntax { format, envelope }
    }
}

impl ToolSyntax {
    /// The syntax of `tokenizer`'s model: detected from the template a
    /// request with tools renders with (`tool_use` if the model has one).
    pub fn of_tokenizer(tokenizer: &crate::Tokenizer) -> ToolSyntax {
        let options = crate::RenderOptions {
            tools: Some(Vec::new()),
            ..Default::default()
        };
        ToolSyntax::detect(tokenizer.select_chat_template(&options).source())
    }
}

impl ToolFormat {
    /// The format whose markers the template source writes; most specific
    /// first, as mlx-lm orders its checks.
    pub fn detect(source: &str) -> ToolFormat {
        let has = |s: &str| source.contains(s);
        if has("<|channel|>") && has("<|message|>") {
            ToolFormat::Harmony
        } else if has("<|tool_call>") && has("<tool_call|>") {
            ToolFormat::Gemma4
        } else if has("<arg_key>") {
            ToolFormat::Glm45
        } else if has("<tool_call>\\n<function=") || has("<tool_call>\n<function=") {
            ToolFormat::Qwen3CoderXml
        } else if has("tool▁calls▁begin") || has("tool▁call▁begin") {
            ToolFormat::DeepSeekV3
        } else if has("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if has("<|start_header_id|>") && has("\"parameters\"") {
            ToolFormat::Llama3Json
        } else if has("<tool_call>") {
            ToolFormat::Hermes
        } else {
            ToolFormat::Generic
        }
    }

    /// Whether the template renders the tools itself; the generic format
    /// describes them in a system message instead.
    pub fn template_renders_tools(self) -> bool {
        self != ToolFormat::Generic
    }

    /// Whether the format's markers are special tokens that decoding must
    /// keep in the text (decoding skips special tokens otherwise).
    pub fn marker_tokens(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Llama3Json => &["<|python_tag|>"],
            ToolFormat::Mistral => &["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"],
            ToolFormat::Harmony => &[
                "<|start|>",
                "<|end|>",
                "<|channel|>",
                "<|message|>",
                "<|constrain|>",
            ],
            ToolFormat::Gemma4 => &["<|tool_call>", "<tool_call|>", "<|\"|>"],
            ToolFormat::DeepSeekV3 => &[
                "<｜tool▁calls▁begin｜>",
                "<｜tool▁calls▁end｜>",
                "<｜tool▁call▁begin｜>",
                "<｜tool▁call▁end｜>",
                "<｜tool▁sep｜>",
            ],
            ToolFormat::Hermes | ToolFormat::Qwen3CoderXml | ToolFormat::Glm45 => {
                &["<tool_call>", "</tool_call>"]
            }
            ToolFormat::Generic => &[],
        }
    }
}

impl MistralStyle {
    /// `[TOOL_CALLS]NAME[ARGS]` in newer templates, the JSON array otherwise.
    pub fn detect(source: &str) -> MistralStyle {
        if source.contains("[ARGS]") {
            MistralStyle::NameArgs
        } else {
            MistralStyle::JsonArray
        }
    }
}

impl DeepSeekStyle {
    /// The fenced form where the template writes "```json", else the plain one.
    pub fn detect(source: &str) -> DeepSeekStyle {
        if source.contains("```json") {
            DeepSeekStyle::Fenced
        } else {
            DeepSeekStyle::Plain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_select_the_format() {
        let cases = [
            (
                "{{ '<tool_call>\\n' }}{{ tool_call | tojson }}",
                ToolFormat::Hermes,
            ),
            ("<tool_call>\\n<function=x>", ToolFormat::Qwen3CoderXml),
            ("<tool_call>{{ name }}<arg_key>", ToolFormat::Glm45),
            ("<|tool_call>call:{{ n }}<tool_call|>", ToolFormat::Gemma4),
            (
                "<|start|>assistant<|channel|>final<|message|>",
                ToolFormat::Harmony,
            ),
            ("[TOOL_CALLS][", ToolFormat::Mistral),
            ("<｜tool▁calls▁begin｜>", ToolFormat::DeepSeekV3),
            (
                "<|start_header_id|>{\"name\": function name, \"parameters\": dictionary}",
                ToolFormat::Llama3Json,
            ),
            ("<|im_start|>{{ m.content }}", ToolFormat::Generic),
        ];
        for (source, want) in cases {
            assert_eq!(ToolFormat::detect(source), want, "{source}");
        }
    }

    #[test]
    fn envelopes_follow_the_template_generation() {
        let new = ToolSyntax::detect("[TOOL_CALLS]{{ name }}[ARGS]{{ args }}");
        assert_eq!(new.envelope.call_open, "[TOOL_CALLS]");
        assert!(matches!(
            new.envelope.call,
            CallShape::NameThenJson {
                between: "[ARGS]",
                ..
            }
        ));
        let old = ToolSyntax::detect("[TOOL_CALLS][{{ calls }}]");
        assert_eq!(old.envelope.section_open, "[TOOL_CALLS][");
        let fenced = ToolSyntax::detect("<｜tool▁calls▁begin｜>```json");
        assert!(matches!(
            fenced.envelope.call,
            CallShape::NameThenJson { after: "\n```", .. }
        ));
    }
}
