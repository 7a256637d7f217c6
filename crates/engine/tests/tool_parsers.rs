//! The tool-call parsers against real chat templates: each template renders
//! a conversation whose last assistant message holds tool calls; the text
//! that message adds after the generation prompt is what the model was
//! trained to write, so parsing it (whole and split at every character)
//! must give back those calls. Templates come from llama.cpp's collection
//! (`scripts/test-data.sh` installs them under `templates/`).

mod common;

use engine::output::{OutputOptions, OutputParser, Piece, ThinkMarkers, ToolFormat, ToolSyntax};
use engine::{ChatMessage, ChatTemplate, RenderOptions};
use serde_json::{Map, Value, json};

/// Where an assistant turn ends: end-of-sequence tokens (never in the
/// decoded text) and the next turn's opening.
const TURN_ENDS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "</s>",
    "<|call|>",
    "<|return|>",
    "<｜end▁of▁sentence｜>",
    "<turn|>",
    "<end_of_turn>",
    "<|user|>",
    "<|observation|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|role_end|>",
    // Gemma 4 ends a turn of calls by opening the tools' response.
    "<|tool_response>",
];

const QUESTION: &str = "What is the weather in Paris?";

fn tools() -> Vec<Value> {
    vec![json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city."},
            "days": {"type": "integer", "description": "How many days."}},
            "required": ["city"]}}})]
}

fn calls(n: usize) -> Vec<Value> {
    let cities = ["Paris", "Rome"];
    (0..n)
        .map(|i| {
            json!({"id": format!("abcDEF12{i}"), "type": "function", "function": {
                "name": "get_weather", "arguments": {"city": cities[i], "days": 3}}})
        })
        .collect()
}

fn specials() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("bos_token".into(), json!("<s>"));
    m.insert("eos_token".into(), json!("</s>"));
    m
}

/// The text the template writes for an assistant turn holding `n` calls,
/// and the prompt before it.
fn reply_of(source: &str, n: usize) -> (String, String) {
    let template = ChatTemplate::new(source, specials()).expect("template compiles");
    let user = ChatMessage::new("user", QUESTION);
    let mut assistant = ChatMessage::new("assistant", "");
    assistant.content = None;
    assistant
        .extra
        .insert("tool_calls".into(), Value::Array(calls(n)));
    let options = |generation| RenderOptions {
        add_generation_prompt: generation,
        tools: Some(tools()),
        kwargs: Map::new(),
    };
    let prompt = template
        .render(std::slice::from_ref(&user), &options(true))
        .expect("prompt renders");
    let full = template
        .render(&[user, assistant], &options(false))
        .expect("conversation renders");
    // Compare what follows the question (templates place the tools
    // differently around it). Some write the generation prompt differently
    // from a finished turn's opening (an open or empty thought block): the
    // reply then follows their longest common prefix, cut back to a line or
    // tag boundary so that no marker is split.
    let after_question = |text: &str| {
        let at = text.rfind(QUESTION).expect("the question is rendered");
        text[at + QUESTION.len()..].to_owned()
    };
    let (prompt_tail, full_tail) = (after_question(&prompt), after_question(&full));
    let reply = match full_tail.strip_prefix(&prompt_tail) {
        Some(reply) => reply,
        None => {
            let common = prompt_tail
                .char_indices()
                .zip(full_tail.chars())
                .find(|((_, a), b)| a != b)
                .map_or(0, |((i, _), _)| i);
            let common = full_tail[..common].rfind(['\n', '>']).map_or(0, |i| i + 1);
            &full_tail[common..]
        }
    };
    let end = TURN_ENDS
        .iter()
        .filter_map(|m| reply.find(m))
        .min()
        .unwrap_or(reply.len());
    (prompt, reply[..end].to_owned())
}

fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
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

/// Parses `reply` whole and split at every character boundary; all runs
/// must agree.
fn parse(options: &OutputOptions, reply: &str) -> Vec<Piece> {
    let run = |chunks: &[&str]| {
        let mut p = OutputParser::new(options);
        let mut all = Vec::new();
        for c in chunks {
            all.extend(p.push(c));
        }
        all.extend(p.finish());
        merge(all)
    };
    let whole = run(&[reply]);
    for (at, _) in reply.char_indices().skip(1) {
        let (a, b) = reply.split_at(at);
        assert_eq!(run(&[a, b]), whole, "split at byte {at} of {reply:?}");
    }
    whole
}

fn check(file: &str, want: ToolFormat) {
    let path = common::data_path(&format!("templates/{file}"));
    let source = std::fs::read_to_string(&path).expect("template reads");
    let syntax = ToolSyntax::detect(&source);
    assert_eq!(syntax.format, want, "{file}");
    let n = if syntax.envelope.parallel { 2 } else { 1 };
    let (prompt, reply) = reply_of(&source, n);
    let reasoning = source.contains("<think>").then(|| ThinkMarkers {
        start: "<think>".into(),
        end: "</think>".into(),
    });
    let starts_in_reasoning = reasoning.as_ref().is_some_and(|m| m.prompt_opens(&prompt));
    // A template that opens the thought block in the prompt drops the
    // reasoning from history; the model writes some, closes the block,
    // then the turn.
    let thought = "I should look the weather up.\n";
    let reply = match &reasoning {
        Some(m) if starts_in_reasoning && !reply.contains(&m.end) => {
            format!("{thought}{}\n\n{reply}", m.end)
        }
        _ => reply,
    };
    let options = OutputOptions {
        tools: Some(syntax),
        tool_definitions: tools(),
        template: source.clone(),
        starts_in_reasoning,
        reasoning,
        harmony: want == ToolFormat::Harmony,
        single_call: false,
    };
    let pieces = parse(&options, &reply);
    let got: Vec<(String, Value)> = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Call(c) => Some((
                c.name.clone(),
                serde_json::from_str(&c.arguments).expect("arguments are JSON"),
            )),
            _ => None,
        })
        .collect();
    let expected: Vec<(String, Value)> = calls(n)
        .into_iter()
        .map(|c| ("get_weather".to_owned(), c["function"]["arguments"].clone()))
        .collect();
    assert_eq!(got, expected, "{file}: reply {reply:?} gave {pieces:?}");
    let stray: Vec<&Piece> = pieces
        .iter()
        .filter(|p| matches!(p, Piece::Content(t) if !t.trim().is_empty()))
        .collect();
    assert!(
        stray.is_empty(),
        "{file}: content beside the calls: {stray:?}"
    );
}

#[test]
fn hermes_templates() {
    check("Qwen-Qwen3-0.6B.jinja", ToolFormat::Hermes);
    check("Qwen-Qwen2.5-7B-Instruct.jinja", ToolFormat::Hermes);
    check(
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        ToolFormat::Hermes,
    );
    check("Qwen-QwQ-32B.jinja", ToolFormat::Hermes);
    check(
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        ToolFormat::Hermes,
    );
    check("ibm-granite-granite-4.0.jinja", ToolFormat::Hermes);
}

#[test]
fn qwen3_coder_template() {
    check("Qwen3-Coder.jinja", ToolFormat::Qwen3CoderXml);
    check("Qwen3.5-4B.jinja", ToolFormat::Qwen3CoderXml);
    check(
        "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja",
        ToolFormat::Qwen3CoderXml,
    );
}

#[test]
fn llama3_templates() {
    check(
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        ToolFormat::Llama3Json,
    );
    check(
        "meta-llama-Llama-3.2-3B-Instruct.jinja",
        ToolFormat::Llama3Json,
    );
    check(
        "meta-llama-Llama-3.3-70B-Instruct.jinja",
        ToolFormat::Llama3Json,
    );
}

#[test]
fn mistral_templates() {
    check(
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        ToolFormat::Mistral,
    );
    check(
        "Mistral-Small-3.2-24B-Instruct-2506.jinja",
        ToolFormat::Mistral,
    );
    check(
        "unsloth-mistral-Devstral-Small-2507.jinja",
        ToolFormat::Mistral,
    );
}

#[test]
fn harmony_template() {
    check("openai-gpt-oss-120b.jinja", ToolFormat::Harmony);
}

#[test]
fn glm_templates() {
    check("GLM-4.6.jinja", ToolFormat::Glm45);
    check("GLM-4.7-Flash.jinja", ToolFormat::Glm45);
    check("inclusionai-ling-3.0-flash.jinja", ToolFormat::Glm45);
}

#[test]
fn gemma4_template() {
    check("google-gemma-4-31B-it.jinja", ToolFormat::Gemma4);
}

#[test]
fn deepseek_templates() {
    check("deepseek-ai-DeepSeek-V3.1.jinja", ToolFormat::DeepSeekV3);
    check(
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        ToolFormat::DeepSeekV3,
    );
}

#[test]
fn templates_without_a_tool_format_are_generic() {
    for file in [
        "google-gemma-2-2b-it.jinja",
        "microsoft-Phi-3.5-mini-instruct.jinja",
    ] {
        let source = std::fs::read_to_string(common::data_path(&format!("templates/{file}")))
            .expect("template reads");
        assert_eq!(ToolFormat::detect(&source), ToolFormat::Generic, "{file}");
    }
}

/// The prompt `file` renders for one question, with `kwargs`.
fn prompt_of(file: &str, kwargs: Value) -> String {
    let source = std::fs::read_to_string(common::data_path(&format!("templates/{file}")))
        .expect("template reads");
    ChatTemplate::new(&source, specials())
        .expect("template compiles")
        .render(
            &[ChatMessage::new("user", QUESTION)],
            &RenderOptions {
                add_generation_prompt: true,
                tools: None,
                kwargs: kwargs.as_object().cloned().unwrap_or_default(),
            },
        )
        .expect("prompt renders")
}

#[test]
fn templates_that_open_the_think_block_start_the_reply_inside_it() {
    let think = ThinkMarkers {
        start: "<think>".into(),
        end: "</think>".into(),
    };
    let opened = [
        ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", json!({})),
        ("llama-cpp-deepseek-r1.jinja", json!({})),
    ];
    for (file, kwargs) in opened {
        let prompt = prompt_of(file, kwargs);
        assert!(think.prompt_opens(&prompt), "{file}: {prompt:?}");
        let options = OutputOptions {
            reasoning: Some(think.clone()),
            starts_in_reasoning: true,
            ..OutputOptions::default()
        };
        assert_eq!(
            parse(&options, "Paris is the capital.\n</think>\n\nParis."),
            [
                Piece::Reasoning("Paris is the capital.\n".into()),
                Piece::Content("Paris.".into())
            ]
        );
    }
    // Qwen3 closes an empty block in the prompt when thinking is off, and
    // leaves the model to open one otherwise.
    let off = prompt_of("Qwen-Qwen3-0.6B.jinja", json!({"enable_thinking": false}));
    assert!(off.ends_with("<think>\n\n</think>\n\n") && !think.prompt_opens(&off));
    let on = prompt_of("Qwen-Qwen3-0.6B.jinja", json!({}));
    assert!(!think.prompt_opens(&on), "{on:?}");
}

/// What a grammar built from a format's envelope would let the model write
/// is what that format's parser reads back.
#[test]
fn every_json_envelope_is_read_back_by_its_parser() {
    let files = [
        "Qwen-Qwen3-0.6B.jinja",
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "Mistral-Small-3.2-24B-Instruct-2506.jinja",
        "openai-gpt-oss-120b.jinja",
        "deepseek-ai-DeepSeek-V3.1.jinja",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "google-gemma-2-2b-it.jinja",
    ];
    let (paris, rome) = (json!({"city": "Paris", "days": 3}), json!({"city": "Rome"}));
    for file in files {
        let source = std::fs::read_to_string(common::data_path(&format!("templates/{file}")))
            .expect("template reads");
        let syntax = ToolSyntax::detect(&source);
        let calls: Vec<(&str, &Value)> = if syntax.envelope.parallel {
            vec![("get_weather", &paris), ("get_time", &rome)]
        } else {
            vec![("get_weather", &paris)]
        };
        let text = syntax
            .envelope
            .write_calls(&calls)
            .expect("a JSON envelope");
        let options = OutputOptions {
            tools: Some(syntax),
            template: source.clone(),
            harmony: syntax.format == ToolFormat::Harmony,
            ..OutputOptions::default()
        };
        let got: Vec<(String, Value)> = parse(&options, &text)
            .into_iter()
            .map(|p| match p {
                Piece::Call(c) => (c.name, serde_json::from_str(&c.arguments).expect("JSON")),
                other => panic!("{file}: {text:?} gave {other:?}"),
            })
            .collect();
        let want: Vec<(String, Value)> = calls
            .iter()
            .map(|(n, a)| ((*n).to_owned(), (*a).clone()))
            .collect();
        assert_eq!(got, want, "{file}: {text:?}");
    }
}
