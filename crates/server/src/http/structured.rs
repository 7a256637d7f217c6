//! The grammar a request's output must follow, built from its
//! `response_format` or forcing `tool_choice` and compiled against the
//! model's tokenizer here, in the front-end, so that a bad schema or tool
//! list is a 400 naming the parameter before any worker is involved; the
//! worker compiles the same text again for its matcher.
//!
//! JSON is constrained without free whitespace (llguidance's
//! `whitespace_flexible: false`, unless the schema sets its own
//! `x-guidance`), so a model cannot spend its tokens on blanks. A forced
//! tool call is the model's own envelope (`engine::output::tool_format`)
//! around one call per tool, as a Lark grammar: for JSON envelopes a JSON
//! schema whose name key is the function's name and whose arguments are
//! its `parameters`, for Qwen3-Coder's XML the `<function=…>` form with one
//! `<parameter=…>` block per property, each value typed by its schema.
//! Envelope text that is a special token of the tokenizer is referenced by
//! id (`<[id]>`), since special tokens never spell text.

use api::structured::{ResponseFormat, ToolChoice};
use api::{ApiError, GenerationRequest, PromptInput};
use engine::Tokenizer;
use engine::constraint::{Grammar, GrammarCompiler};
use engine::output::tool_format::{CallShape, Envelope, ToolFormat, ToolSyntax};
use serde_json::{Value, json};

/// The grammar of a request's output.
pub struct OutputGrammar {
    pub grammar: Grammar,
    /// The parameter it comes from (named in a 400).
    pub param: String,
    /// Pieces to compile first, each with its own parameter (a forced
    /// call's tool schemas, so that a bad one is named by its index).
    pub parts: Vec<(Grammar, String)>,
}

impl OutputGrammar {
    /// Compiles the pieces, then the whole: a 400 naming the first
    /// parameter that does not compile.
    pub fn check(&self, compiler: &GrammarCompiler) -> Result<(), ApiError> {
        for (grammar, param) in &self.parts {
            check(compiler, grammar, param)?;
        }
        check(compiler, &self.grammar, &self.param)
    }
}

/// The grammar of `req`'s output; `None` for free text.
pub fn output_grammar(
    req: &GenerationRequest,
    tokenizer: &Tokenizer,
) -> Result<Option<OutputGrammar>, ApiError> {
    if req.tool_choice.forces_call() {
        let tools = match req.prompts.first() {
            Some(PromptInput::Chat {
                tools: Some(tools), ..
            }) => tools,
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "tool_choice requires tools",
                ));
            }
        };
        let grammar =
            tool_call_grammar(tools, &req.tool_choice, req.parallel_tool_calls, tokenizer)?;
        let parts = tools
            .iter()
            .enumerate()
            .filter_map(|(i, tool)| {
                let parameters = tool.pointer("/function/parameters")?;
                let schema = compact(strip_guidance(parameters));
                let param = format!("tools[{i}].function.parameters");
                Some((Grammar::JsonSchema(schema.to_string()), param))
            })
            .collect();
        return Ok(Some(OutputGrammar {
            grammar,
            param: "tools".to_owned(),
            parts,
        }));
    }
    let schema = match &req.response_format {
        ResponseFormat::Text => return Ok(None),
        ResponseFormat::JsonObject => json!({"type": "object"}),
        ResponseFormat::JsonSchema { schema, .. } => schema.clone(),
    };
    let param = match req.response_format {
        ResponseFormat::JsonSchema { .. } => "response_format.json_schema.schema",
        _ => "response_format",
    };
    Ok(Some(OutputGrammar {
        grammar: Grammar::JsonSchema(compact(schema).to_string()),
        param: param.to_owned(),
        parts: Vec::new(),
    }))
}

/// Compiles `grammar` with the model's compiler: a 400 naming `param`
/// with llguidance's reason when it does not compile.
fn check(compiler: &GrammarCompiler, grammar: &Grammar, param: &str) -> Result<(), ApiError> {
    compiler
        .check(grammar)
        .map_err(|e| ApiError::invalid(param, format!("{param} cannot be enforced: {e}")))
}

/// `schema` with llguidance's compact-JSON option, unless it sets its own.
fn compact(schema: Value) -> Value {
    let mut schema = match schema {
        Value::Bool(true) => json!({}),
        other => other,
    };
    if let Value::Object(o) = &mut schema {
        o.entry("x-guidance")
            .or_insert_with(|| json!({"whitespace_flexible": false}));
    }
    schema
}

/// The Lark grammar of the calls `choice` allows: one call to the named
/// function, or one or more calls to any tool (one when `parallel` is
/// false or the format allows one).
fn tool_call_grammar(
    tools: &[Value],
    choice: &ToolChoice,
    parallel: bool,
    tokenizer: &Tokenizer,
) -> Result<Grammar, ApiError> {
    let syntax = ToolSyntax::of_tokenizer(tokenizer);
    let names = api::structured::tool_names(tools)?;
    let mut rules = Vec::new();
    let mut alternatives = Vec::new();
    for (i, (tool, name)) in tools.iter().zip(&names).enumerate() {
        if matches!(choice, ToolChoice::Function(wanted) if wanted != name) {
            continue;
        }
        let parameters = match tool.pointer("/function/parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("tools[{i}].function.parameters"),
                    format!("tools[{i}].function.parameters must be a JSON schema object"),
                ));
            }
        };
        let body = call_rule(&syntax, name, &parameters, tokenizer).map_err(|why| {
            ApiError::invalid(
                format!("tools[{i}].function.parameters"),
                format!("tools[{i}].function.parameters: {why}"),
            )
        })?;
        rules.push(format!("call_{i}: {body}"));
        alternatives.push(format!("call_{i}"));
    }
    let env = &syntax.envelope;
    let open = literal(env.call_open, tokenizer);
    let close = literal(env.call_close, tokenizer);
    let call = format!("call: {open} ({}) {close}", alternatives.join(" | "));
    // A named function is called once, as OpenAI and vLLM answer it.
    let several = parallel && env.parallel && *choice == ToolChoice::Required;
    let calls = if several {
        format!("call ({} call)*", literal(env.separator, tokenizer))
    } else {
        "call".to_owned()
    };
    let start = format!(
        "start: {} {calls} {}",
        literal(env.section_open, tokenizer),
        literal(env.section_close, tokenizer)
    );
    let mut lines = vec![start, call];
    lines.extend(rules);
    Ok(Grammar::Lark(lines.join("\n")))
}

/// The right-hand side of one call's rule (between the envelope's
/// `call_open` and `call_close`), or why the format has none.
fn call_rule(
    syntax: &ToolSyntax,
    name: &str,
    parameters: &Value,
    tokenizer: &Tokenizer,
) -> Result<String, String> {
    let Envelope { call, .. } = syntax.envelope;
    match call {
        CallShape::JsonObject {
            name_key,
            arguments_key,
        } => {
            let mut properties = serde_json::Map::new();
            properties.insert(name_key.to_owned(), json!({"const": name}));
            properties.insert(arguments_key.to_owned(), strip_guidance(parameters));
            let schema = compact(json!({
                "type": "object",
                "properties": properties,
                "required": [name_key, arguments_key],
                "additionalProperties": false,
            }));
            Ok(format!("%json {schema}"))
        }
        CallShape::NameThenJson { between, after } => Ok(format!(
            "{} {} %json {} {}",
            literal(name, tokenizer),
            literal(between, tokenizer),
            compact(strip_guidance(parameters)),
            literal(after, tokenizer)
        )),
        CallShape::Markup if syntax.format == ToolFormat::Qwen3CoderXml => {
            Ok(qwen3_coder_call(name, parameters, tokenizer))
        }
        CallShape::Markup if syntax.format == ToolFormat::Glm45 => {
            Ok(glm45_call(name, parameters, tokenizer))
        }
        CallShape::Markup if syntax.format == ToolFormat::Gemma4 => {
            gemma4_call(name, parameters, tokenizer)
        }
        CallShape::Markup => Err(format!(
            "forcing a call is not supported for the {:?} tool format",
            syntax.format
        )),
    }
}

/// `parameters` without an `x-guidance` key (only a top-level schema may
/// carry one).
fn strip_guidance(parameters: &Value) -> Value {
    let mut p = parameters.clone();
    if let Value::Object(o) = &mut p {
        o.remove("x-guidance");
    }
    p
}

/// The required properties of a tool's `parameters` schema, in the
/// schema's order (optional ones are left out of a forced call), each with
/// whether its value is free text (a string without an enum).
fn required_params(parameters: &Value) -> Vec<(&str, &Value, bool)> {
    let required: Vec<&str> = parameters
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(Value::Object(props)) = parameters.get("properties") else {
        return Vec::new();
    };
    props
        .iter()
        .filter(|(param, _)| required.contains(&param.as_str()))
        .map(|(param, schema)| {
            let text = schema.get("type").and_then(Value::as_str) == Some("string")
                && schema.get("enum").is_none();
            (param.as_str(), schema, text)
        })
        .collect()
}

/// Qwen3-Coder's call: `<function=NAME>\n` then, for each required
/// property, `<parameter=P>\nVALUE\n</parameter>\n`, then `</function>`;
/// a value is JSON for non-string types and raw text for strings.
fn qwen3_coder_call(name: &str, parameters: &Value, tokenizer: &Tokenizer) -> String {
    let mut parts = vec![literal(&format!("<function={name}>\n"), tokenizer)];
    for (param, schema, text) in required_params(parameters) {
        // Raw text (without `<`, so it cannot run into the closing tag)
        // takes the newline before the closing tag into its lexeme: a
        // lexeme ends where the next byte cannot extend it.
        let (value, close) = if text {
            ("/[^<]*\\n/".to_owned(), "</parameter>\n")
        } else {
            (
                format!("%json {}", compact(schema.clone())),
                "\n</parameter>\n",
            )
        };
        parts.push(format!(
            "{} {value} {}",
            literal(&format!("<parameter={param}>\n"), tokenizer),
            literal(close, tokenizer)
        ));
    }
    parts.push(literal("</function>", tokenizer));
    parts.join(" ")
}

/// GLM-4.5's call (inside `<tool_call>`…`</tool_call>`): `NAME\n` then, for
/// each required property, `<arg_key>P</arg_key>\n<arg_value>VALUE</arg_value>\n`;
/// a value is raw text for strings and JSON otherwise, as the GLM parser
/// reads them (4.7 writes no newlines; the parser takes both).
fn glm45_call(name: &str, parameters: &Value, tokenizer: &Tokenizer) -> String {
    let mut parts = vec![literal(&format!("{name}\n"), tokenizer)];
    for (param, schema, text) in required_params(parameters) {
        let value = if text {
            "/[^<]*/".to_owned()
        } else {
            format!("%json {}", compact(schema.clone()))
        };
        parts.push(format!(
            "{} {value} {}",
            literal(
                &format!("<arg_key>{param}</arg_key>\n<arg_value>"),
                tokenizer
            ),
            literal("</arg_value>\n", tokenizer)
        ));
    }
    parts.join(" ")
}

/// Gemma 4's call (inside `<|tool_call>`…`<tool_call|>`):
/// `call:NAME{key:VALUE,...}` over the required properties, a string
/// between `<|"|>` delimiters, a number, integer, boolean or null as JSON;
/// an object or array parameter (Gemma's own nested syntax) cannot be forced.
fn gemma4_call(name: &str, parameters: &Value, tokenizer: &Tokenizer) -> Result<String, String> {
    let quote_mark = "<|\"|>";
    let mut fields = Vec::new();
    for (param, schema, text) in required_params(parameters) {
        let enum_strings: Option<Vec<String>> = schema
            .get("enum")
            .and_then(Value::as_array)
            .filter(|_| schema.get("type").and_then(Value::as_str) == Some("string"))
            .map(|e| e.iter().filter_map(Value::as_str).map(quote).collect());
        let value = if text || enum_strings.is_some() {
            let inner =
                enum_strings.map_or("/[^<]*/".to_owned(), |e| format!("({})", e.join(" | ")));
            format!(
                "{} {inner} {}",
                literal(quote_mark, tokenizer),
                literal(quote_mark, tokenizer)
            )
        } else {
            let scalar = matches!(
                schema.get("type").and_then(Value::as_str),
                Some("number" | "integer" | "boolean" | "null")
            );
            if !scalar {
                return Err(format!(
                    "forcing a call is not supported for the Gemma4 tool format when parameter \
                     {param} of {name} is an object or an array"
                ));
            }
            format!("%json {}", compact(schema.clone()))
        };
        fields.push(format!(
            "{} {value}",
            literal(&format!("{param}:"), tokenizer)
        ));
    }
    Ok(format!(
        "{} {} {}",
        literal(&format!("call:{name}{{"), tokenizer),
        fields.join(&format!(" {} ", literal(",", tokenizer))),
        literal("}", tokenizer)
    ))
}

/// `text` as a Lark expression: quoted strings, with the special tokens
/// of the tokenizer that occur in it referenced by id; nothing when empty.
fn literal(text: &str, tokenizer: &Tokenizer) -> String {
    let specials: Vec<(u32, String)> = tokenizer
        .inner()
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special && !t.content.is_empty())
        .map(|(id, t)| (id, t.content))
        .collect();
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next = specials
            .iter()
            .filter_map(|(id, s)| rest.find(s.as_str()).map(|at| (at, *id, s.len())))
            .min_by_key(|&(at, _, len)| (at, std::cmp::Reverse(len)));
        match next {
            Some((at, id, len)) => {
                if at > 0 {
                    parts.push(quote(&rest[..at]));
                }
                parts.push(format!("<[{id}]>"));
                rest = &rest[at + len..];
            }
            None => {
                parts.push(quote(rest));
                rest = "";
            }
        }
    }
    parts.join(" ")
}

/// A Lark string literal (JSON's escapes are Lark's).
fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::{Path, PathBuf};

    use engine::constraint::Progress;

    use super::*;

    fn qwen3() -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/test-data/npm/qwen3");
        assert!(
            dir.join("tokenizer.json").is_file(),
            "{} is missing: run scripts/test-data.sh",
            dir.display()
        );
        dir
    }

    /// Qwen3's tokenizer with `template` as its chat template (or its own).
    fn tokenizer(template: Option<&str>) -> (Tokenizer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            qwen3().join("tokenizer.json"),
            dir.path().join("tokenizer.json"),
        )
        .unwrap();
        let config = std::fs::read_to_string(qwen3().join("tokenizer_config.json")).unwrap();
        let mut config: Value = serde_json::from_str(&config).unwrap();
        if let Some(t) = template {
            config["chat_template"] = json!(t);
        }
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        (Tokenizer::from_dir(dir.path()).unwrap(), dir)
    }

    /// Whether `text`, tokenized, follows `grammar` to its end.
    fn follows(tokenizer: &Tokenizer, grammar: &Grammar, text: &str) -> bool {
        let compiler = GrammarCompiler::new(tokenizer, tokenizer.vocab_size()).unwrap();
        let mut c = compiler.constraint(grammar).unwrap();
        for id in tokenizer.encode(text, false).unwrap() {
            if c.commit(id).is_err() {
                return false;
            }
        }
        c.is_done() || c.commit(tokenizer.eos_token_ids()[0]) == Ok(Progress::Done)
    }

    fn tools() -> Vec<Value> {
        let tool = |name: &str| {
            json!({"type": "function", "function": {"name": name, "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"]}}})
        };
        vec![tool("get_weather"), tool("get_time")]
    }

    #[test]
    fn a_forced_hermes_call_is_the_envelope_around_a_valid_call() {
        let (tok, _dir) = tokenizer(None);
        let named = ToolChoice::Function("get_time".into());
        let grammar = tool_call_grammar(&tools(), &named, true, &tok).unwrap();
        let call = |name: &str| {
            format!(
                "<tool_call>\n{{\"name\":\"{name}\",\"arguments\":{{\"city\":\"Oslo\",\"days\":2}}}}\n</tool_call>"
            )
        };
        assert!(follows(&tok, &grammar, &call("get_time")));
        assert!(!follows(&tok, &grammar, &call("get_weather")));
        assert!(!follows(
            &tok,
            &grammar,
            &format!("{}\n{}", call("get_time"), call("get_time"))
        ));
        let any = tool_call_grammar(&tools(), &ToolChoice::Required, true, &tok).unwrap();
        let two = format!("{}\n{}", call("get_weather"), call("get_time"));
        assert!(follows(&tok, &any, &two));
        let one = tool_call_grammar(&tools(), &ToolChoice::Required, false, &tok).unwrap();
        assert!(!follows(&tok, &one, &two));
        assert!(follows(&tok, &one, &call("get_weather")));
    }

    #[test]
    fn a_forced_qwen3_coder_call_is_its_xml_form() {
        let template = "{% for m in messages %}{{ m.content }}{% endfor %}\
                        {% if tools %}<tool_call>\n<function=NAME>{% endif %}";
        let (tok, _dir) = tokenizer(Some(template));
        assert_eq!(
            ToolSyntax::of_tokenizer(&tok).format,
            ToolFormat::Qwen3CoderXml
        );
        let grammar = tool_call_grammar(&tools(), &ToolChoice::Required, false, &tok).unwrap();
        let text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n\
                    <parameter=days>\n3\n</parameter>\n</function>\n</tool_call>";
        assert!(follows(&tok, &grammar, text), "{grammar:?}");
        let untyped = text.replace("\n3\n", "\nthree\n");
        assert!(!follows(&tok, &grammar, &untyped));
    }

    #[test]
    fn a_forced_glm_call_is_its_arg_key_form() {
        let template = "{% for m in messages %}{{ m.content }}{% endfor %}\
                        {% if tools %}<tool_call>NAME\n<arg_key>k</arg_key>{% endif %}";
        let (tok, _dir) = tokenizer(Some(template));
        assert_eq!(ToolSyntax::of_tokenizer(&tok).format, ToolFormat::Glm45);
        let grammar = tool_call_grammar(&tools(), &ToolChoice::Required, false, &tok).unwrap();
        let text = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n\
                    <arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>";
        assert!(follows(&tok, &grammar, text), "{grammar:?}");
        assert!(!follows(&tok, &grammar, &text.replace(">3<", ">three<")));
        assert!(!follows(
            &tok,
            &grammar,
            &text.replace("get_weather", "get_nothing")
        ));
    }

    #[test]
    fn a_forced_gemma4_call_is_its_bare_key_form_and_nested_values_are_refused() {
        let template = "{% for m in messages %}{{ m.content }}{% endfor %}\
                        {% if tools %}<|tool_call>call:NAME{}<tool_call|>{% endif %}";
        let (tok, _dir) = tokenizer(Some(template));
        assert_eq!(ToolSyntax::of_tokenizer(&tok).format, ToolFormat::Gemma4);
        let grammar = tool_call_grammar(&tools(), &ToolChoice::Required, false, &tok).unwrap();
        let text = "<|tool_call>call:get_time{city:<|\"|>Oslo<|\"|>,days:3}<tool_call|>";
        assert!(follows(&tok, &grammar, text), "{grammar:?}");
        assert!(!follows(&tok, &grammar, &text.replace(":3}", ":\"3\"}")));
        let nested = vec![
            json!({"type": "function", "function": {"name": "plan", "parameters": {
            "type": "object",
            "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
            "required": ["steps"]}}}),
        ];
        let err = tool_call_grammar(&nested, &ToolChoice::Required, false, &tok).unwrap_err();
        assert!(err.to_string().contains("steps"), "{err}");
    }

    #[test]
    fn special_tokens_in_envelope_text_are_referenced_by_id() {
        let (tok, _dir) = tokenizer(None);
        let end = tok.token_to_id("<|im_end|>").unwrap();
        assert_eq!(
            literal("a<|im_end|>\n", &tok),
            format!("\"a\" <[{end}]> \"\\n\"")
        );
        assert_eq!(literal("", &tok), "");
    }
}
