//! The suite's HTTP client: one chat completion against an OpenAI-compatible
//! server, streamed (time to the first SSE chunk with content, decode speed
//! from the first to the last content chunk) or whole (end to end), and N
//! such streams at once.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};

/// An OpenAI-compatible server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// The system's name in the report.
    pub system: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The `model` field of requests.
    pub model: String,
    /// Fields added to every request body (how this server is asked for
    /// exactly `max_tokens` tokens).
    pub extra: serde_json::Map<String, Value>,
}

/// One request as the client saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub request_id: String,
    pub stream: bool,
    /// From sending the request to the first chunk with content (streams).
    pub ttft_ms: Option<f64>,
    /// Tokens after the first over the time from the first content chunk to
    /// the last (streams).
    pub decode_tps: Option<f64>,
    /// Tokens over the whole request.
    pub e2e_tps: f64,
    pub total_ms: f64,
    /// When the request was sent, from the start of its batch (concurrency).
    pub start_ms: f64,
    pub completion_tokens: u32,
    pub prompt_tokens: Option<u32>,
    pub cached_tokens: Option<u32>,
}

/// The body of a greedy chat request for `tokens` tokens.
fn body(target: &Target, prompt: &str, tokens: usize, stream: bool) -> Value {
    let mut body = json!({
        "model": target.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Value::Object(map) = &mut body {
        map.extend(target.extra.clone());
    }
    body
}

fn usage_of(v: &Value) -> Option<(u32, Option<u32>, Option<u32>)> {
    let usage = v.get("usage")?;
    let get = |k: &str| usage.get(k).and_then(Value::as_u64).map(|n| n as u32);
    let cached = usage
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .map(|n| n as u32);
    Some((get("completion_tokens")?, get("prompt_tokens"), cached))
}

fn error_of(v: &Value) -> Option<String> {
    v.get("error").map(|e| {
        e.get("message")
            .and_then(Value::as_str)
            .map_or_else(|| e.to_string(), str::to_owned)
    })
}

/// Sends one chat completion and measures it; `epoch` is the start of the
/// batch it belongs to.
pub async fn chat(
    client: &reqwest::Client,
    target: &Target,
    prompt: &str,
    tokens: usize,
    stream: bool,
    request_id: &str,
    epoch: Instant,
) -> anyhow::Result<Sample> {
    let url = format!("{}/v1/chat/completions", target.base);
    let sent = Instant::now();
    let mut response = client
        .post(&url)
        .header("x-request-id", request_id)
        .json(&body(target, prompt, tokens, stream))
        .send()
        .await
        .with_context(|| format!("{}: POST {url}", target.system))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("{}: {status}: {text}", target.system);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut sample = Sample {
        request_id: request_id.to_owned(),
        stream,
        ttft_ms: None,
        decode_tps: None,
        e2e_tps: 0.0,
        total_ms: 0.0,
        start_ms: ms(sent - epoch),
        completion_tokens: 0,
        prompt_tokens: None,
        cached_tokens: None,
    };
    if !stream {
        let v: Value = response.json().await.context("reading the response")?;
        let total = sent.elapsed();
        if let Some(e) = error_of(&v) {
            bail!("{}: {e}", target.system);
        }
        let (completion, prompt, cached) =
            usage_of(&v).ok_or_else(|| anyhow!("{}: no usage in the response", target.system))?;
        sample.total_ms = ms(total);
        sample.completion_tokens = completion;
        sample.prompt_tokens = prompt;
        sample.cached_tokens = cached;
        sample.e2e_tps = f64::from(completion) / total.as_secs_f64().max(1e-9);
        return Ok(sample);
    }
    let mut buf: Vec<u8> = Vec::new();
    let (mut first, mut last, mut chunks) = (None, None, 0u32);
    let mut usage = None;
    'read: while let Some(bytes) = response.chunk().await.context("reading the stream")? {
        let now = Instant::now();
        buf.extend_from_slice(&bytes);
        // Events end with a blank line; keep a partial one for the next read.
        while let Some(end) = find_event_end(&buf) {
            let event: Vec<u8> = buf.drain(..end.0 + end.1).collect();
            for line in String::from_utf8_lossy(&event[..end.0]).lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    break 'read;
                }
                let v: Value = serde_json::from_str(data)
                    .with_context(|| format!("{}: bad SSE data {data:?}", target.system))?;
                if let Some(e) = error_of(&v) {
                    bail!("{}: {e}", target.system);
                }
                if let Some(u) = usage_of(&v) {
                    usage = Some(u);
                }
                let has_content = v["choices"].as_array().is_some_and(|choices| {
                    choices.iter().any(|c| {
                        c["delta"]["content"]
                            .as_str()
                            .or_else(|| c["text"].as_str())
                            .is_some_and(|s| !s.is_empty())
                    })
                });
                if has_content {
                    first.get_or_insert(now);
                    last = Some(now);
                    chunks += 1;
                }
            }
        }
    }
    let total = sent.elapsed();
    let completion = usage.map_or(chunks, |u| u.0);
    if let Some((_, prompt, cached)) = usage {
        sample.prompt_tokens = prompt;
        sample.cached_tokens = cached;
    }
    sample.total_ms = ms(total);
    sample.completion_tokens = completion;
    sample.e2e_tps = f64::from(completion) / total.as_secs_f64().max(1e-9);
    if let (Some(first), Some(last)) = (first, last) {
        sample.ttft_ms = Some(ms(first - sent));
        let decode = (last - first).as_secs_f64();
        if completion > 1 && decode > 0.0 {
            sample.decode_tps = Some(f64::from(completion - 1) / decode);
        }
    }
    Ok(sample)
}

/// The end of the first complete event in `buf`: (its length, the blank
/// line's length).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// `n` streams of the same request at once; their samples in the order they
/// were started.
pub async fn concurrent(
    client: &reqwest::Client,
    target: &Target,
    prompt: &str,
    tokens: usize,
    n: usize,
    id_prefix: &str,
) -> anyhow::Result<Vec<Sample>> {
    let epoch = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, target, prompt) = (client.clone(), target.clone(), prompt.to_owned());
        let id = format!("{id_prefix}-{i}");
        tasks.spawn(async move {
            let sample = chat(&client, &target, &prompt, tokens, true, &id, epoch).await;
            (i, sample)
        });
    }
    let mut samples = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        let (i, sample) = joined.context("a client task failed")?;
        samples.push((i, sample?));
    }
    samples.sort_by_key(|(i, _)| *i);
    Ok(samples.into_iter().map(|(_, s)| s).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_the_first_blank_line() {
        assert_eq!(find_event_end(b"data: 1\n\ndata: 2\n\n"), Some((7, 2)));
        assert_eq!(find_event_end(b"data: 1\r\n\r\n"), Some((7, 4)));
        assert_eq!(find_event_end(b"data: 1\n"), None);
    }

    #[test]
    fn requests_ask_for_greedy_tokens_and_usage() {
        let mut extra = serde_json::Map::new();
        extra.insert("ignore_eos".into(), json!(true));
        let target = Target {
            system: "mlxd".into(),
            base: "http://127.0.0.1:1".into(),
            model: "m".into(),
            extra,
        };
        let b = body(&target, "hi", 50, true);
        assert_eq!(b["max_tokens"], 50);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(body(&target, "hi", 50, false).get("stream_options"), None);
    }
}
