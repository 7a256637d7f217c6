//! From a validated request to choices: render and tokenize the prompts
//! (in the blocking pool), admit the request to the model's queue, lease
//! its worker, start one generation per choice, and turn each choice's
//! worker events into text (streaming detokenizer, EOS, stop strings),
//! logprobs and a finish reason; chat replies are then read for reasoning
//! and tool calls ([`super::reply`]). Each choice runs in its own task that
//! sends updates over a bounded channel: when the client goes away the
//! channel closes, the task drops its generation, and the worker cancels
//! the sequence at its next step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use api::response::{FinishReason, TokenLogprob, ToolCall, TopLogprob};
use api::{ApiError, KeepAlive};
use api::{GenerationRequest, PromptInput};
use engine::constraint::Grammar;
use engine::output::OutputOptions;
use engine::{TextStream, Tokenizer};
use tokio::sync::mpsc;

use super::AppState;
use super::catalog::FrontModel;
use super::metrics::{RequestTimeline, now_ns};
use super::reply::{ChatTools, Reply, render_chat};
use super::structured;
use crate::supervisor::{Generation, KeepAlive as SupKeepAlive, SupervisorError, WorkerEvent};

/// One token's log-probabilities, with token texts.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub text: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// What a choice's task reports.
#[derive(Debug)]
pub enum ChoiceUpdate {
    /// New text (possibly empty when only logprobs advanced): answer
    /// text, reasoning and complete tool calls.
    Text {
        index: u32,
        text: String,
        reasoning: String,
        calls: Vec<ToolCall>,
        tokens: Vec<TokenInfo>,
    },
    /// The choice ended.
    Finished {
        index: u32,
        reason: FinishReason,
        completion_tokens: u32,
        /// The index in the request's `stop` of the stop string that
        /// ended the choice, if one did.
        stop_sequence: Option<usize>,
    },
    /// The request failed (the stream ends).
    Failed(ApiError),
}

/// A request ready to run: its model and its token ids.
pub struct Prepared {
    pub model: Arc<FrontModel>,
    /// Token ids per prompt.
    pub prompts: Vec<Vec<u32>>,
    /// The prompts as text (for `echo`).
    pub prompt_texts: Vec<String>,
    /// Per prompt, how to read a chat reply (none for completions).
    pub replies: Vec<Option<Arc<OutputOptions>>>,
    /// When the request arrived.
    pub arrived: Instant,
    /// The grammar every choice follows (`response_format`, a forced
    /// tool call), compiled once here.
    pub grammar: Option<protocol::Grammar>,
}

impl Prepared {
    /// Prompt tokens for usage: each distinct prompt once.
    pub fn prompt_tokens(&self) -> u32 {
        self.prompts.iter().map(|p| p.len() as u32).sum()
    }
}

/// Resolves the model and tokenizes every prompt.
/// [`prepare`], with the request's timeline stamped: tokenized now, its
/// model, whether it streams, its prompt tokens.
pub async fn prepare_timed(
    state: &AppState,
    req: &GenerationRequest,
    timeline: &RequestTimeline,
) -> Result<Prepared, ApiError> {
    let prepared = prepare(state, req).await?;
    timeline.update(|t| {
        t.tokenized_ns = now_ns();
        t.model = prepared.model.id.clone();
        t.stream = req.stream;
        t.prompt_tokens = prepared.prompt_tokens();
    });
    Ok(prepared)
}

pub async fn prepare(state: &AppState, req: &GenerationRequest) -> Result<Prepared, ApiError> {
    let arrived = Instant::now();
    let model = state.models.get(&req.model).await?;
    let tokenizer = Arc::clone(&model.tokenizer);
    let inputs = req.prompts.clone();
    // A short prompt is tokenized here, in tens of microseconds; handing it
    // to the blocking pool costs more (a thread wake-up, often a new thread
    // whose tokenizer state is cold). Long ones go there so they never stall
    // this runtime thread.
    let choice = (req.tool_choice.clone(), req.parallel_tool_calls);
    let (prompts, prompt_texts, replies) =
        if inputs.iter().map(input_bytes).sum::<usize>() <= INLINE_BYTES {
            tokenize_all(&tokenizer, inputs, choice)?
        } else {
            tokio::task::spawn_blocking(move || tokenize_all(&tokenizer, inputs, choice))
                .await
                .map_err(|e| ApiError::Internal {
                    message: format!("tokenizing: {e}"),
                })??
        };
    let grammar = match structured::output_grammar(req, &model.tokenizer)? {
        None => None,
        Some(output) => {
            let front = Arc::clone(&model);
            let output = tokio::task::spawn_blocking(move || {
                output.check(front.grammars()?).map(|()| output)
            })
            .await
            .map_err(|e| ApiError::Internal {
                message: format!("compiling the grammar: {e}"),
            })??;
            Some(wire_grammar(output.grammar))
        }
    };
    Ok(Prepared {
        model,
        prompts,
        prompt_texts,
        replies,
        arrived,
        grammar,
    })
}

/// A compiled grammar as the worker protocol carries it.
fn wire_grammar(grammar: Grammar) -> protocol::Grammar {
    let (kind, text) = match grammar {
        Grammar::JsonSchema(text) => (protocol::GrammarKind::JsonSchema, text),
        Grammar::Lark(text) => (protocol::GrammarKind::Lark, text),
        Grammar::Regex(text) => (protocol::GrammarKind::Regex, text),
    };
    protocol::Grammar { kind, text }
}

/// Prompt text (or token ids, as bytes) up to which tokenizing runs on the
/// request's own task: well under a millisecond of work.
const INLINE_BYTES: usize = 4096;

/// About how many bytes of text tokenizing `input` reads (or writes, for
/// token ids decoded to text).
fn input_bytes(input: &PromptInput) -> usize {
    fn text_in(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => s.len(),
            serde_json::Value::Array(items) => items.iter().map(text_in).sum(),
            serde_json::Value::Object(map) => map.iter().map(|(k, v)| k.len() + text_in(v)).sum(),
            _ => 8,
        }
    }
    match input {
        PromptInput::Chat {
            messages, tools, ..
        } => messages
            .iter()
            .chain(tools.iter().flatten())
            .map(text_in)
            .sum(),
        PromptInput::Text(text) => text.len(),
        PromptInput::Tokens(ids) => ids.len() * 4,
    }
}

/// Token ids, texts and reply formats of every prompt.
type Tokenized = (Vec<Vec<u32>>, Vec<String>, Vec<Option<Arc<OutputOptions>>>);

/// Renders and tokenizes every prompt; `choice` is the request's
/// `tool_choice` and `parallel_tool_calls`.
fn tokenize_all(
    tokenizer: &Tokenizer,
    inputs: Vec<PromptInput>,
    choice: (api::ToolChoice, bool),
) -> Result<Tokenized, ApiError> {
    let mut ids = Vec::with_capacity(inputs.len());
    let mut texts = Vec::with_capacity(inputs.len());
    let mut replies = Vec::with_capacity(inputs.len());
    for input in inputs {
        let (prompt, text, reply) = match input {
            PromptInput::Chat {
                messages,
                tools,
                template_kwargs,
            } => {
                let chat = ChatTools {
                    tools,
                    tool_choice: choice.0.clone(),
                    parallel_tool_calls: choice.1,
                    template_kwargs,
                };
                let (text, reply) = render_chat(tokenizer, messages, chat)?;
                let ids = tokenizer
                    .encode(&text, false)
                    .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
                (ids, text, Some(reply))
            }
            PromptInput::Text(text) => {
                let ids = tokenizer
                    .encode_prompt(&text)
                    .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
                (ids, text, None)
            }
            PromptInput::Tokens(ids) => {
                let text = tokenizer
                    .decode(&ids, false)
                    .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
                (ids, text, None)
            }
        };
        ids.push(prompt);
        texts.push(text);
        replies.push(reply);
    }
    Ok((ids, texts, replies))
}

/// A model's admitted requests (waiting or running); dropping it leaves.
pub struct QueueTicket {
    count: Arc<AtomicUsize>,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits a request to the model's bounded queue, or refuses with 429.
pub fn admit(state: &AppState, model: &str) -> Result<QueueTicket, ApiError> {
    let count = state.queue_counter(model);
    // AcqRel: the counter alone decides admission; no other data is
    // published through it.
    let before = count.fetch_add(1, Ordering::AcqRel);
    if before >= state.config.queue_depth {
        count.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::QueueFull {
            model: model.to_owned(),
            retry_after_secs: 1,
        });
    }
    Ok(QueueTicket { count })
}

/// The supervisor's errors as OpenAI errors.
pub fn supervisor_error(model: &str, e: SupervisorError) -> ApiError {
    match e {
        SupervisorError::LoadFailed { reason, .. }
        | SupervisorError::ModelFailed { reason, .. } => ApiError::ModelLoadFailed {
            model: model.to_owned(),
            reason,
        },
        SupervisorError::WorkerGone(reason) => ApiError::WorkerCrashed {
            model: model.to_owned(),
            reason,
        },
        other => ApiError::Unavailable {
            message: other.to_string(),
            retry_after_secs: Some(5),
        },
    }
}

pub fn keep_alive(k: KeepAlive) -> SupKeepAlive {
    match k {
        KeepAlive::Forever => SupKeepAlive::Forever,
        KeepAlive::UnloadAfterRequest => SupKeepAlive::For(std::time::Duration::ZERO),
        KeepAlive::For(d) => SupKeepAlive::For(d),
    }
}

/// Leases the worker and starts every choice; returns the channel their
/// updates arrive on.
pub async fn start(
    state: &AppState,
    req: &GenerationRequest,
    prepared: &Prepared,
    timeline: &Arc<RequestTimeline>,
) -> Result<mpsc::Receiver<ChoiceUpdate>, ApiError> {
    let model = &prepared.model;
    let spec = model.spec();
    let (tx, rx) = mpsc::channel(64);
    let deadline = tokio::time::Instant::from_std(prepared.arrived + state.config.request_timeout);
    for (prompt_index, prompt) in prepared.prompts.iter().enumerate() {
        for sample in 0..req.n {
            let lease = state
                .supervisor
                .acquire(spec.clone(), req.keep_alive.map(keep_alive))
                .await
                .map_err(|e| supervisor_error(&model.id, e))?;
            let context = lease.info().context_length;
            let prompt_len = prompt.len() as u32;
            if prompt_len >= context {
                return Err(ApiError::ContextLengthExceeded {
                    endpoint: req.endpoint,
                    max_context: context,
                    prompt_tokens: prompt_len,
                    max_tokens: req.max_tokens,
                });
            }
            let room = context - prompt_len;
            let max_tokens = req.max_tokens.map_or(room, |m| m.min(room));
            let params = sampling_params(req, sample, max_tokens, context);
            timeline.stamp(|t| &mut t.submitted_ns);
            let generation = lease
                .generate_constrained(prompt.clone(), params, prepared.grammar.clone())
                .await
                .map_err(|e| supervisor_error(&model.id, e))?;
            let index = api::stream::choice_index(prompt_index as u32, sample, req.n);
            let mut text = TextStream::new(Arc::clone(&model.tokenizer), req.stop.clone(), &[]);
            if req.ignore_eos {
                text.ignore_eos();
            }
            let reply_format = prepared
                .replies
                .get(prompt_index)
                .and_then(Option::as_deref);
            if let Some(format) = reply_format {
                text.keep_special_ids(format.kept_special_ids(&model.tokenizer));
            }
            let choice = Choice {
                index,
                model: model.id.clone(),
                text,
                reply: Reply::new(reply_format),
                tokenizer: Arc::clone(&model.tokenizer),
                logprobs: req.logprobs,
                completion_tokens: 0,
                last_token: None,
                arrived: prepared.arrived,
                metrics: Arc::clone(&state.metrics),
                timeline: Arc::clone(timeline),
                counts_prompt: sample == 0,
            };
            tokio::spawn(run_choice(generation, choice, tx.clone(), deadline));
        }
    }
    Ok(rx)
}

fn sampling_params(
    req: &GenerationRequest,
    sample: u32,
    max_tokens: u32,
    context: u32,
) -> protocol::SamplingParams {
    let s = &req.sampling;
    let window = protocol::SamplingParams::default().repetition_context_size;
    protocol::SamplingParams {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: s.min_p,
        repetition_penalty: s.repetition_penalty,
        // At most the whole context (Ollama's `repeat_last_n: -1`).
        repetition_context_size: s
            .repetition_context_size
            .map_or(window, |n| n.clamp(1, context)),
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        logit_bias: s.logit_bias.clone(),
        // Each sample of a seeded request gets its own, reproducible seed.
        seed: s.seed.map(|seed| seed.wrapping_add(u64::from(sample))),
        max_tokens,
        logprobs: req.logprobs.is_some(),
        top_logprobs: req
            .logprobs
            .unwrap_or(0)
            .min(protocol::MAX_TOP_LOGPROBS as u32) as u8,
        ignore_eos: req.ignore_eos,
        ..protocol::SamplingParams::default()
    }
}

/// One choice's text state.
struct Choice {
    index: u32,
    model: String,
    text: TextStream,
    reply: Reply,
    tokenizer: Arc<Tokenizer>,
    logprobs: Option<u32>,
    completion_tokens: u32,
    last_token: Option<Instant>,
    arrived: Instant,
    metrics: Arc<super::metrics::Metrics>,
    timeline: Arc<RequestTimeline>,
    /// The first sample of its prompt: its prompt-cache hits count in usage.
    counts_prompt: bool,
}

impl Choice {
    fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    /// Turns one worker event into updates; the second value says the
    /// choice is over.
    fn on_event(&mut self, event: WorkerEvent) -> (Vec<ChoiceUpdate>, bool) {
        match event {
            WorkerEvent::Token(t) => {
                let now = Instant::now();
                match self.last_token {
                    None => {
                        self.timeline.stamp(|t| &mut t.first_token_ns);
                        self.metrics.observe_ttft(now - self.arrived);
                    }
                    Some(last) => self.metrics.observe_token(now - last),
                }
                self.last_token = Some(now);
                self.completion_tokens += 1;
                let tokens = match (self.logprobs, t.logprob) {
                    (Some(_), Some(logprob)) => vec![TokenInfo {
                        text: self.token_text(t.token_id),
                        logprob,
                        top: t
                            .top_logprobs
                            .iter()
                            .map(|(id, lp)| (self.token_text(*id), *lp))
                            .collect(),
                    }],
                    _ => Vec::new(),
                };
                match self.text.push(t.token_id) {
                    Ok(step) => {
                        let end = step.finish.is_some();
                        let mut out = vec![self.text_update(step.text, end, tokens)];
                        if let Some(finish) = step.finish {
                            out.push(self.finished(FinishReason::Stop, stop_index(finish)));
                        }
                        (out, end)
                    }
                    Err(e) => (vec![failure(format!("detokenizing: {e}"))], true),
                }
            }
            WorkerEvent::Error { code, message } => (
                vec![ChoiceUpdate::Failed(worker_error(code, message))],
                true,
            ),
            WorkerEvent::Embedding(_) => {
                let why = "the worker answered a generation with an embedding";
                (vec![failure(why.into())], true)
            }
            WorkerEvent::Done(done) => {
                self.record_done(&done);
                let reason = match done.finish_reason {
                    protocol::FinishReason::Length => FinishReason::Length,
                    _ => FinishReason::Stop,
                };
                let tail = self.text.finish().unwrap_or_default();
                // The held-back tail may complete a stop string.
                let stop = self.text.finish_reason().and_then(stop_index);
                let out = vec![
                    self.text_update(tail, true, Vec::new()),
                    self.finished(reason, stop),
                ];
                (out, true)
            }
        }
    }

    /// The text a step let through, read as the reply's pieces.
    fn text_update(&mut self, text: String, end: bool, tokens: Vec<TokenInfo>) -> ChoiceUpdate {
        let step = self.reply.step(text, end);
        ChoiceUpdate::Text {
            index: self.index,
            text: step.content,
            reasoning: step.reasoning,
            calls: step.calls,
            tokens,
        }
    }

    /// The worker's stamps of the first choice to finish, and every
    /// prompt's cache hits, into the request's timeline.
    fn record_done(&self, done: &protocol::Done) {
        self.timeline.update(|t| {
            if t.done_ns == 0 {
                t.done_ns = now_ns();
                t.worker_received_ns = done.received_ns;
                t.worker_admitted_ns = done.admitted_ns;
                t.worker_first_token_ns = done.first_token_ns;
                t.prefill_us = done.prefill_us;
                t.decode_us = done.decode_us;
            }
            if self.counts_prompt {
                t.cached_tokens += done.cached_tokens;
            }
            t.draft_tokens += done.draft_tokens;
            t.accepted_draft_tokens += done.accepted_draft_tokens;
        });
    }

    /// The choice's last update; a reply that called tools and stopped
    /// (rather than running out of tokens) finishes with `tool_calls`.
    fn finished(&self, reason: FinishReason, stop_sequence: Option<usize>) -> ChoiceUpdate {
        let reason = match reason {
            FinishReason::Stop if self.reply.called_tools() => FinishReason::ToolCalls,
            other => other,
        };
        ChoiceUpdate::Finished {
            index: self.index,
            reason,
            completion_tokens: self.completion_tokens,
            stop_sequence,
        }
    }
}

/// The stop string's index when a stop string ended the text.
fn stop_index(finish: engine::FinishReason) -> Option<usize> {
    match finish {
        engine::FinishReason::StopString(index) => Some(index),
        engine::FinishReason::Eos(_) => None,
    }
}

fn failure(message: String) -> ChoiceUpdate {
    ChoiceUpdate::Failed(ApiError::Internal { message })
}

/// The API's error for a request the worker ended with `code`: what the
/// client can fix is an invalid request (400, or an
/// `invalid_request_error` event mid-stream), a worker out of memory or
/// capacity is unavailable (503), the rest the server's error (500).
pub(crate) fn worker_error(code: protocol::ErrorCode, message: String) -> ApiError {
    use protocol::ErrorCode::*;
    match code {
        InvalidRequest | ContextOverflow => ApiError::InvalidRequest {
            message,
            param: None,
        },
        OutOfMemory | Busy => ApiError::Unavailable {
            message,
            retry_after_secs: None,
        },
        _ => ApiError::Internal { message },
    }
}

/// Runs one choice until it finishes, fails, times out, or its receiver
/// goes away (then dropping the generation cancels it in the worker).
async fn run_choice(
    mut generation: Generation,
    mut choice: Choice,
    tx: mpsc::Sender<ChoiceUpdate>,
    deadline: tokio::time::Instant,
) {
    loop {
        // A client that left while the request waited for its turn is
        // noticed here too, not only at its first token.
        let next = tokio::select! {
            biased;
            _ = tx.closed() => return,
            next = tokio::time::timeout_at(deadline, generation.next()) => next,
        };
        let event = match next {
            Err(_) => {
                let seconds = (deadline.into_std() - choice.arrived).as_secs();
                let _ = tx
                    .send(ChoiceUpdate::Failed(ApiError::Timeout { seconds }))
                    .await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(gone))) => {
                let _ = tx
                    .send(ChoiceUpdate::Failed(ApiError::WorkerCrashed {
                        model: choice.model.clone(),
                        reason: gone.0,
                    }))
                    .await;
                return;
            }
            Ok(Some(Ok(event))) => event,
        };
        let (updates, done) = choice.on_event(event);
        for update in updates {
            if tx.send(update).await.is_err() {
                return;
            }
        }
        if done {
            return;
        }
    }
}

/// Chat logprobs entries of token infos.
pub fn chat_logprobs(tokens: &[TokenInfo]) -> Vec<TokenLogprob> {
    tokens
        .iter()
        .map(|t| TokenLogprob {
            token: t.text.clone(),
            logprob: t.logprob,
            bytes: Some(t.text.as_bytes().to_vec()),
            top_logprobs: t
                .top
                .iter()
                .map(|(text, logprob)| TopLogprob {
                    token: text.clone(),
                    logprob: *logprob,
                    bytes: Some(text.as_bytes().to_vec()),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_size_counts_the_text_a_tokenizer_reads() {
        let chat = PromptInput::Chat {
            messages: vec![serde_json::json!({"role": "user", "content": "x".repeat(5000)})],
            tools: None,
            template_kwargs: serde_json::Map::new(),
        };
        assert!(input_bytes(&chat) > INLINE_BYTES);
        let short = PromptInput::Chat {
            messages: vec![serde_json::json!({"role": "user", "content": "Hello"})],
            tools: Some(vec![serde_json::json!({"name": "f".repeat(5000)})]),
            template_kwargs: serde_json::Map::new(),
        };
        assert!(input_bytes(&short) > INLINE_BYTES, "tools count too");
        assert_eq!(input_bytes(&PromptInput::Text("abc".into())), 3);
        assert_eq!(input_bytes(&PromptInput::Tokens(vec![1, 2])), 8);
    }
}
