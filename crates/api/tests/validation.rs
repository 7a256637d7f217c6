//! Validation of chat and completion bodies: accepted forms, defaults, and
//! a 400 naming the parameter for every range and type error.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use api::{Endpoint, GenerationRequest, KeepAlive, PromptInput, Sampling, ToolChoice};
use serde_json::{Value, json};

mod common;
use common::*;

#[test]
fn minimal_chat_request_gets_openai_defaults() {
    let req = chat(json!({})).unwrap();
    assert_eq!(req.endpoint, Endpoint::Chat);
    assert_eq!(req.model, "m");
    assert_eq!(req.sampling, Sampling::default());
    assert_eq!(req.sampling.temperature, 1.0);
    assert_eq!(req.sampling.top_p, 1.0);
    assert_eq!(req.max_tokens, None);
    assert_eq!(
        (req.n, req.stream, req.include_usage, req.echo),
        (1, false, false, false)
    );
    assert_eq!(req.logprobs, None);
    assert!(req.stop.is_empty());
    assert_eq!(
        chat_messages(&req),
        [json!({"role": "user", "content": "hi"})]
    );
}

#[test]
fn every_parameter_is_read() {
    let req = chat(json!({
        "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
        "repetition_penalty": 1.1, "presence_penalty": -1.5, "frequency_penalty": 2,
        "logit_bias": {"50": -100, "7": 3.5}, "seed": 42, "stop": ["a", "b"], "n": 3,
        "logprobs": true, "top_logprobs": 5, "stream": true,
        "stream_options": {"include_usage": true}, "user": "u1", "keep_alive": "5m",
        "chat_template_kwargs": {"enable_thinking": false}, "ignore_eos": true,
        "max_tokens": 64,
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto",
    }))
    .unwrap();
    let s = &req.sampling;
    assert_eq!(
        (s.temperature, s.top_p, s.top_k, s.min_p),
        (0.5, 0.9, 40, 0.05)
    );
    assert_eq!(
        (
            s.repetition_penalty,
            s.presence_penalty,
            s.frequency_penalty
        ),
        (1.1, -1.5, 2.0)
    );
    assert_eq!(s.logit_bias, [(7, 3.5), (50, -100.0)]);
    assert_eq!(s.seed, Some(42));
    assert_eq!(req.stop, ["a", "b"]);
    assert_eq!(
        (req.n, req.logprobs, req.max_tokens),
        (3, Some(5), Some(64))
    );
    assert!(req.stream && req.include_usage && req.ignore_eos);
    assert_eq!(req.user.as_deref(), Some("u1"));
    assert_eq!(
        req.keep_alive,
        Some(KeepAlive::For(Duration::from_secs(300)))
    );
    let PromptInput::Chat {
        tools,
        template_kwargs,
        ..
    } = &req.prompts[0]
    else {
        panic!("not a chat prompt");
    };
    assert_eq!(tools.as_ref().map(Vec::len), Some(1));
    assert_eq!(req.tool_choice, ToolChoice::Auto);
    assert_eq!(template_kwargs["enable_thinking"], json!(false));
}

#[test]
fn unknown_fields_are_ignored_and_null_means_absent() {
    let req = chat(json!({
        "frobnicate": {"deep": [1, 2]}, "response_format": {"type": "json_object"},
        "temperature": null, "stop": null, "n": null, "parallel_tool_calls": true,
    }))
    .unwrap();
    assert_eq!(req.sampling.temperature, 1.0);
    assert_eq!(req.n, 1);
    assert!(req.stop.is_empty());
}

#[test]
fn float_ranges_name_their_parameter() {
    let cases = [
        (
            "temperature",
            json!(3.5),
            "temperature must be between 0 and 2, got 3.5",
        ),
        ("temperature", json!(-0.1), "between 0 and 2"),
        (
            "top_p",
            json!(0),
            "top_p must be greater than 0 and at most 1, got 0",
        ),
        ("top_p", json!(1.01), "at most 1"),
        ("min_p", json!(1.5), "min_p must be between 0 and 1"),
        ("min_p", json!(-0.5), "min_p must be between 0 and 1"),
        ("repetition_penalty", json!(0), "greater than 0"),
        (
            "presence_penalty",
            json!(2.5),
            "presence_penalty must be between -2 and 2",
        ),
        (
            "frequency_penalty",
            json!(-3),
            "frequency_penalty must be between -2 and 2",
        ),
    ];
    for (param, value, needle) in cases {
        assert_invalid(chat(json!({ param: value.clone() })), param, needle);
        assert_invalid(completion(json!({ param: value })), param, needle);
    }
}

#[test]
fn range_edges_are_accepted() {
    let req = chat(
        json!({"temperature": 0, "top_p": 1, "min_p": 1, "presence_penalty": -2,
                          "frequency_penalty": 2, "top_k": 0}),
    )
    .unwrap();
    assert_eq!(req.sampling.temperature, 0.0);
    assert_eq!(
        chat(json!({"temperature": 2}))
            .unwrap()
            .sampling
            .temperature,
        2.0
    );
}

#[test]
fn top_k_accepts_minus_one_as_off() {
    assert_eq!(chat(json!({"top_k": -1})).unwrap().sampling.top_k, 0);
    assert_invalid(chat(json!({"top_k": -2})), "top_k", "got -2");
    assert_invalid(chat(json!({"top_k": 1.5})), "top_k", "expected an integer");
}

#[test]
fn wrong_json_types_name_the_parameter() {
    assert_invalid(
        chat(json!({"temperature": "hot"})),
        "temperature",
        "expected a number",
    );
    assert_invalid(chat(json!({"n": "2"})), "n", "expected an integer");
    assert_invalid(
        chat(json!({"stream": "yes"})),
        "stream",
        "expected a boolean",
    );
    assert_invalid(
        chat(json!({"stop": 5})),
        "stop",
        "a string or an array of strings",
    );
    assert_invalid(
        chat(json!({"stop": ["a", 1]})),
        "stop[1]",
        "expected a string",
    );
    assert_invalid(chat(json!({"seed": 1.5})), "seed", "expected an integer");
    assert_invalid(chat(json!({"user": 7})), "user", "expected a string");
    assert_invalid(
        chat(json!({"logit_bias": {"1": "x"}})),
        "logit_bias.1",
        "expected a number",
    );
    assert_invalid(
        chat(json!({"stream_options": true, "stream": true})),
        "stream_options",
        "expected an object",
    );
    assert_invalid(
        chat(json!({"chat_template_kwargs": []})),
        "chat_template_kwargs",
        "expected an object",
    );
    assert_invalid(chat(json!({"tools": {}})), "tools", "expected an array");
    assert_invalid(chat(json!({"tools": [1]})), "tools[0]", "must be an object");
    assert_invalid(
        chat(json!({"messages": "hi"})),
        "messages",
        "expected an array",
    );
    assert_invalid(
        chat(json!({"messages": [{"role": "user", "content": 5}]})),
        "messages[0].content",
        "a string or an array of content parts",
    );
}

#[test]
fn body_errors_have_no_param() {
    for body in [
        &b"{not json"[..],
        b"",
        b"[1, 2]",
        b"\"text\"",
        b"{\"model\": \"m\"} trailing",
    ] {
        let err = api::parse_chat(body).expect_err("accepted");
        assert_eq!((err.status(), err.param()), (400, None), "{err:?}");
    }
    let err = api::parse_chat(b"{not json").unwrap_err();
    assert!(
        err.to_string().contains("could not parse the JSON body"),
        "{err}"
    );
    let err = api::parse_chat(b"[]").unwrap_err();
    assert_eq!(err.to_string(), "The request body must be a JSON object");
}

#[test]
fn duplicate_keys_name_the_parameter() {
    let body = br#"{"model": "m", "messages": [], "messages": []}"#;
    let err = api::parse_chat(body).unwrap_err();
    assert_eq!(err.param(), Some("messages"));
    let body = br#"{"model": "m", "messages": [{"role": "user", "role": "user", "content": ""}]}"#;
    assert_eq!(
        api::parse_chat(body).unwrap_err().param(),
        Some("messages[0].role")
    );
}

#[test]
fn model_is_required() {
    let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    let err = api::parse_chat(body.as_bytes()).unwrap_err();
    assert_eq!(err.param(), Some("model"));
    assert_invalid(chat(json!({"model": ""})), "model", "non-empty");
    assert_invalid(chat(json!({"model": 3})), "model", "expected a string");
    assert_invalid(
        completion(json!({"model": null})),
        "model",
        "must provide a model",
    );
}

#[test]
fn messages_are_required_and_non_empty() {
    let err = api::parse_chat(br#"{"model": "m"}"#).unwrap_err();
    assert_eq!((err.status(), err.param()), (400, Some("messages")));
    assert_invalid(chat(json!({"messages": []})), "messages", "non-empty");
}

#[test]
fn message_roles_and_required_keys_are_checked() {
    assert_invalid(
        chat(json!({"messages": [{"role": "wizard", "content": "x"}]})),
        "messages[0].role",
        "unknown variant `wizard`",
    );
    assert_invalid(
        chat(json!({"messages": [{"content": "x"}]})),
        "messages[0].role",
        "Missing required parameter: 'messages[0].role'",
    );
    assert_invalid(
        chat(json!({"messages": [{"role": "user"}]})),
        "messages[0].content",
        "required",
    );
    assert_invalid(
        chat(json!({"messages": [{"role": "tool", "content": "42"}]})),
        "messages[0].tool_call_id",
        "required",
    );
    assert_invalid(
        chat(json!({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})),
        "messages[0].tool_calls",
        "only allowed in assistant messages",
    );
}

#[test]
fn text_parts_are_joined_and_developer_becomes_system() {
    let req = chat(json!({"messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
         "name": "ann"},
    ]}))
    .unwrap();
    assert_eq!(
        chat_messages(&req),
        [
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": "ab", "name": "ann"}),
        ]
    );
}

#[test]
fn image_and_audio_parts_are_rejected_naming_the_part() {
    let image = json!({"messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}}]},
    ]});
    assert_invalid(
        chat(image),
        "messages[1].content[0]",
        "image content is not supported",
    );
    let audio = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "listen"},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
    ]}]});
    assert_invalid(
        chat(audio),
        "messages[0].content[1]",
        "audio content is not supported",
    );
    let other = json!({"messages": [{"role": "user", "content": [{"type": "hologram"}]}]});
    assert_invalid(
        chat(other),
        "messages[0].content[0]",
        "\"hologram\" are not supported",
    );
    let no_text = json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]});
    assert_invalid(chat(no_text), "messages[0].content[0].text", "required");
    let no_type = json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]});
    assert_invalid(
        chat(no_type),
        "messages[0].content[0].type",
        "Missing required parameter",
    );
}

#[test]
fn tool_calls_and_tool_results_pass_through() {
    let req = chat(json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]}))
    .unwrap();
    let messages = chat_messages(&req);
    assert_eq!(messages[1]["content"], Value::Null);
    assert_eq!(messages[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        messages[1]["tool_calls"][0]["function"]["arguments"],
        json!({"city": "Paris"})
    );
    assert_eq!(
        messages[2],
        json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1"})
    );
}

#[test]
fn n_is_between_1_and_128() {
    assert_eq!(chat(json!({"n": 128})).unwrap().n, 128);
    assert_invalid(
        chat(json!({"n": 0})),
        "n",
        "n must be between 1 and 128, got 0",
    );
    assert_invalid(chat(json!({"n": 129})), "n", "got 129");
    assert_invalid(completion(json!({"n": -1})), "n", "got -1");
}

#[test]
fn stop_takes_a_string_or_up_to_four_strings() {
    assert_eq!(chat(json!({"stop": "\n"})).unwrap().stop, ["\n"]);
    assert_eq!(
        chat(json!({"stop": []})).unwrap().stop,
        Vec::<String>::new()
    );
    assert_eq!(
        chat(json!({"stop": ["a", "b", "c", "d"]}))
            .unwrap()
            .stop
            .len(),
        4
    );
    assert_invalid(
        chat(json!({"stop": ["a", "b", "c", "d", "e"]})),
        "stop",
        "at most 4",
    );
    assert_invalid(chat(json!({"stop": ""})), "stop", "non-empty");
    assert_invalid(completion(json!({"stop": ["a", ""]})), "stop", "non-empty");
}

#[test]
fn logit_bias_keys_are_token_ids_and_values_in_range() {
    assert_invalid(
        chat(json!({"logit_bias": {"hello": 1}})),
        "logit_bias",
        "\"hello\"",
    );
    assert_invalid(
        chat(json!({"logit_bias": {"-1": 1}})),
        "logit_bias",
        "token ids",
    );
    assert_invalid(
        chat(json!({"logit_bias": {"5": 101}})),
        "logit_bias",
        "between -100 and 100",
    );
    assert_invalid(
        chat(json!({"logit_bias": {"5": 1, "05": 2}})),
        "logit_bias",
        "more than once",
    );
    assert_eq!(
        chat(json!({"logit_bias": {}})).unwrap().sampling.logit_bias,
        []
    );
}

#[test]
fn seed_accepts_signed_and_unsigned_integers() {
    assert_eq!(
        chat(json!({"seed": -1})).unwrap().sampling.seed,
        Some(u64::MAX)
    );
    assert_eq!(
        chat(json!({"seed": u64::MAX})).unwrap().sampling.seed,
        Some(u64::MAX)
    );
    assert_eq!(chat(json!({"seed": 0})).unwrap().sampling.seed, Some(0));
}

#[test]
fn chat_logprobs_and_top_logprobs() {
    assert_eq!(chat(json!({"logprobs": true})).unwrap().logprobs, Some(0));
    assert_eq!(chat(json!({"logprobs": false})).unwrap().logprobs, None);
    assert_eq!(
        chat(json!({"logprobs": true, "top_logprobs": 20}))
            .unwrap()
            .logprobs,
        Some(20)
    );
    assert_invalid(
        chat(json!({"logprobs": true, "top_logprobs": 21})),
        "top_logprobs",
        "between 0 and 20",
    );
    assert_invalid(
        chat(json!({"top_logprobs": 2})),
        "top_logprobs",
        "requires logprobs",
    );
    assert_invalid(
        chat(json!({"logprobs": false, "top_logprobs": 2})),
        "top_logprobs",
        "requires logprobs",
    );
    assert_invalid(
        chat(json!({"logprobs": 1})),
        "logprobs",
        "expected a boolean",
    );
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let req = chat(json!({"max_tokens": 10, "max_completion_tokens": 20})).unwrap();
    assert_eq!(req.max_tokens, Some(20));
    assert_eq!(
        chat(json!({"max_tokens": 10})).unwrap().max_tokens,
        Some(10)
    );
    assert_eq!(
        chat(json!({"max_completion_tokens": 7}))
            .unwrap()
            .max_tokens,
        Some(7)
    );
    assert_invalid(
        chat(json!({"max_completion_tokens": 0})),
        "max_completion_tokens",
        "at least 1, got 0",
    );
    assert_invalid(
        chat(json!({"max_tokens": -5, "max_completion_tokens": 3})),
        "max_tokens",
        "got -5",
    );
    assert_invalid(
        chat(json!({"max_tokens": 5_000_000_000_i64})),
        "max_tokens",
        "got 5000000000",
    );
}

#[test]
fn stream_options_require_stream() {
    assert!(
        chat(json!({"stream": true, "stream_options": {"include_usage": true}}))
            .unwrap()
            .include_usage
    );
    assert!(
        !chat(json!({"stream": true, "stream_options": {}}))
            .unwrap()
            .include_usage
    );
    assert_invalid(
        chat(json!({"stream_options": {"include_usage": true}})),
        "stream_options",
        "only allowed",
    );
}

#[test]
fn keep_alive_forms() {
    let cases = [
        (json!(-1), KeepAlive::Forever),
        (json!(0), KeepAlive::UnloadAfterRequest),
        (json!(30), KeepAlive::For(Duration::from_secs(30))),
        (json!(2.5), KeepAlive::For(Duration::from_millis(2500))),
        (json!("10s"), KeepAlive::For(Duration::from_secs(10))),
        (json!("1h"), KeepAlive::For(Duration::from_secs(3600))),
        (json!("-1"), KeepAlive::Forever),
        (json!("0"), KeepAlive::UnloadAfterRequest),
    ];
    for (value, expected) in cases {
        assert_eq!(
            chat(json!({"keep_alive": value})).unwrap().keep_alive,
            Some(expected)
        );
    }
    assert_invalid(
        chat(json!({"keep_alive": "soon"})),
        "keep_alive",
        "duration",
    );
    assert_invalid(
        completion(json!({"keep_alive": true})),
        "keep_alive",
        "number of seconds",
    );
}

#[test]
fn completion_prompt_forms() {
    let prompts = |v: Value| completion(json!({"prompt": v})).map(|r| r.prompts);
    assert_eq!(
        prompts(json!("a")).unwrap(),
        [PromptInput::Text("a".into())]
    );
    assert_eq!(
        prompts(json!(["a", "b"])).unwrap(),
        [PromptInput::Text("a".into()), PromptInput::Text("b".into())]
    );
    assert_eq!(
        prompts(json!([1, 2, 3])).unwrap(),
        [PromptInput::Tokens(vec![1, 2, 3])]
    );
    assert_eq!(
        prompts(json!([[1, 2], [3]])).unwrap(),
        [
            PromptInput::Tokens(vec![1, 2]),
            PromptInput::Tokens(vec![3])
        ]
    );
    assert_invalid(prompts(json!([])), "prompt", "empty");
    assert_invalid(prompts(json!("")), "prompt", "empty");
    assert_invalid(prompts(json!([[1], []])), "prompt[1]", "empty");
    assert_invalid(prompts(json!(["a", 1])), "prompt", "mixed array");
    assert_invalid(prompts(json!([1, -2])), "prompt[1]", "negative");
    assert_invalid(prompts(json!([[1, "x"]])), "prompt[0][1]", "token id");
    assert_invalid(prompts(json!([[[1]]])), "prompt[0][0]", "token id");
    assert_invalid(prompts(json!(5)), "prompt", "an array of strings");
    assert_invalid(
        prompts(json!([4_294_967_296_u64])),
        "prompt[0]",
        "out of range",
    );
    let err = api::parse_completion(br#"{"model": "m"}"#).unwrap_err();
    assert_eq!(err.param(), Some("prompt"));
}

#[test]
fn completion_defaults_and_options() {
    let req = completion(json!({})).unwrap();
    assert_eq!(req.endpoint, Endpoint::Completion);
    assert_eq!(req.max_tokens, Some(16));
    assert_eq!((req.echo, req.logprobs), (false, None));
    let req = completion(json!({"echo": true, "max_tokens": 0, "logprobs": 5})).unwrap();
    assert_eq!(
        (req.echo, req.max_tokens, req.logprobs),
        (true, Some(0), Some(5))
    );
    assert_eq!(
        completion(json!({"logprobs": 0})).unwrap().logprobs,
        Some(0)
    );
    assert_invalid(
        completion(json!({"logprobs": 6})),
        "logprobs",
        "between 0 and 5",
    );
    assert_invalid(
        completion(json!({"logprobs": true})),
        "logprobs",
        "expected an integer",
    );
    assert_invalid(
        completion(json!({"max_tokens": 0})),
        "max_tokens",
        "at least 1",
    );
    assert_invalid(
        completion(json!({"suffix": "end"})),
        "suffix",
        "not supported",
    );
    assert!(completion(json!({"suffix": ""})).is_ok());
    assert!(completion(json!({"best_of": 2, "n": 2})).is_ok());
    assert_invalid(completion(json!({"best_of": 3})), "best_of", "equals n");
    assert!(completion(json!({"ignore_eos": true})).unwrap().ignore_eos);
    assert_eq!(
        completion(json!({"prompt": ["a", "b"], "n": 3}))
            .unwrap()
            .choice_count(),
        6
    );
}

/// The parameters a model's defaults may fill, as a request ends up with.
fn defaultable(req: &GenerationRequest) -> (f32, f32, u32, f32, f32, Option<u32>) {
    let s = &req.sampling;
    (
        s.temperature,
        s.top_p,
        s.top_k,
        s.min_p,
        s.repetition_penalty,
        req.max_tokens,
    )
}

#[test]
fn a_models_defaults_fill_only_what_the_request_left_out() {
    let defaults = api::ModelDefaults {
        temperature: Some(0.2),
        top_p: Some(0.8),
        top_k: Some(40),
        min_p: Some(0.05),
        repetition_penalty: Some(1.1),
        max_tokens: Some(64),
    };
    // Nothing sent: every default applies, on both endpoints.
    for mut req in [chat(json!({})).unwrap(), completion(json!({})).unwrap()] {
        req.apply_defaults(&defaults);
        assert_eq!(defaultable(&req), (0.2, 0.8, 40, 0.05, 1.1, Some(64)));
    }
    // Sent, even as OpenAI's own default or as "off": the request's value.
    let mut req = chat(json!({
        "temperature": 1.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0,
        "repetition_penalty": 1.0, "max_tokens": 5
    }))
    .unwrap();
    req.apply_defaults(&defaults);
    assert_eq!(defaultable(&req), (1.0, 1.0, 0, 0.0, 1.0, Some(5)));
    let mut req = completion(json!({"max_tokens": 3})).unwrap();
    req.apply_defaults(&defaults);
    assert_eq!(req.max_tokens, Some(3));
    // No defaults: OpenAI's stay (chat unlimited, completions 16).
    let mut req = chat(json!({})).unwrap();
    req.apply_defaults(&api::ModelDefaults::default());
    assert_eq!((req.sampling, req.max_tokens), (Sampling::default(), None));
    let mut req = completion(json!({})).unwrap();
    req.apply_defaults(&api::ModelDefaults::default());
    assert_eq!(req.max_tokens, Some(16));
}
