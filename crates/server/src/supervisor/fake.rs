//! An in-memory worker for tests: scripted tokens, crashes on demand,
//! recorded cancellations.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use protocol::{Done, FinishReason, SamplingParams, TokenEntry};
use tokio::sync::watch;

use super::{
    EventStream, ExitReport, LaunchError, LaunchSpec, Launcher, Worker, WorkerEvent, WorkerGone,
    WorkerInfo,
};

/// What the next launch does.
#[derive(Clone)]
pub enum Plan {
    Load,
    Fail(&'static str),
}

#[derive(Default)]
pub struct FakeLauncher {
    pub launches: AtomicUsize,
    pub plans: Mutex<VecDeque<Plan>>,
    pub workers: Mutex<Vec<Arc<FakeWorker>>>,
    pub load_delay: Duration,
    /// Token ids each request emits before `Done` (default 1, 2, 3).
    pub script: Mutex<Option<Vec<u32>>>,
    /// The context length workers report (default 64).
    pub context_length: Mutex<Option<u32>>,
    /// A prompt holding this token crashes the worker it is submitted to.
    pub poison: Option<u32>,
}

pub struct FakeWorker {
    info: WorkerInfo,
    exit: watch::Sender<Option<ExitReport>>,
    pub cancelled: Mutex<Vec<u64>>,
    pub submitted: AtomicUsize,
    /// The sampling parameters of every submission, in order.
    pub params: Mutex<Vec<SamplingParams>>,
    /// The prompt of every submission, in order.
    pub prompts: Mutex<Vec<Vec<u32>>>,
    script: Vec<u32>,
    poison: Option<u32>,
}

impl FakeWorker {
    pub fn crash(&self, status: &str) {
        let _ = self.exit.send(Some(ExitReport {
            status: status.into(),
            stderr_tail: vec!["segfault in kernel".into()],
        }));
    }

    pub fn is_stopped(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

impl Launcher for FakeLauncher {
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Arc<dyn Worker>, LaunchError>> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        let plan = self.plans.lock().unwrap().pop_front().unwrap_or(Plan::Load);
        let delay = self.load_delay;
        let worker = Arc::new(FakeWorker {
            info: WorkerInfo {
                pid: Some(spec.generation as u32),
                context_length: self.context_length.lock().unwrap().unwrap_or(64),
                vocab_size: 10,
                eos_token_ids: vec![0],
                memory_used_bytes: 1,
                load_time: delay,
            },
            exit: watch::Sender::new(None),
            cancelled: Mutex::new(Vec::new()),
            submitted: AtomicUsize::new(0),
            params: Mutex::new(Vec::new()),
            prompts: Mutex::new(Vec::new()),
            script: self
                .script
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| vec![1, 2, 3]),
            poison: self.poison,
        });
        self.workers.lock().unwrap().push(Arc::clone(&worker));
        async move {
            tokio::time::sleep(delay).await;
            match plan {
                Plan::Load => Ok(worker as Arc<dyn Worker>),
                Plan::Fail(why) => Err(LaunchError(why.into())),
            }
        }
        .boxed()
    }
}

impl Worker for FakeWorker {
    fn info(&self) -> &WorkerInfo {
        &self.info
    }

    /// The script's tokens from index `params.generated` (at most
    /// `max_tokens`) then Done; a crash ends the stream with `WorkerGone`.
    fn submit(
        &self,
        request_id: u64,
        prompt: Vec<u32>,
        params: SamplingParams,
        _grammar: Option<protocol::Grammar>,
    ) -> BoxFuture<'_, Result<EventStream, WorkerGone>> {
        self.submitted.fetch_add(1, Ordering::SeqCst);
        self.params.lock().unwrap().push(params.clone());
        self.prompts.lock().unwrap().push(prompt.clone());
        if self.poison.is_some_and(|p| prompt.contains(&p)) {
            self.crash("killed by SIGABRT");
        }
        let exit = self.exit.subscribe();
        let params_logprobs = params.logprobs;
        async move {
            // A resumed request continues the script where it left it.
            let mut script = self.script.clone();
            script.drain(..(params.generated as usize).min(script.len()));
            script.truncate(params.max_tokens as usize);
            let count = script.len() as u32;
            let length = count == params.max_tokens;
            let prompt_tokens = prompt.len() as u32;
            let stream = futures::stream::unfold(0u32, move |i| {
                let mut exit = exit.clone();
                let script = script.clone();
                async move {
                    if i > count {
                        return None;
                    }
                    tokio::select! {
                        report = exit.wait_for(Option::is_some) => {
                            let report = report.ok().and_then(|r| r.clone()).unwrap_or_default();
                            Some((Err(WorkerGone(format!("the worker crashed ({report})"))), 99))
                        }
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {
                            let event = if i < count {
                                let logprob = params_logprobs.then_some(-0.5);
                                WorkerEvent::Token(TokenEntry { request_id, token_id: script[i as usize], logprob, top_logprobs: vec![] })
                            } else {
                                let finish_reason = if length { FinishReason::Length } else { FinishReason::Stop };
                                WorkerEvent::Done(Done { request_id, finish_reason, prompt_tokens, completion_tokens: count, prefill_us: 0, decode_us: 0, ..Done::default() })
                            };
                            Some((Ok(event), i + 1))
                        }
                    }
                }
            });
            Ok(Box::pin(stream) as EventStream)
        }
        .boxed()
    }

    /// Per input `[pooling + 1, length, first token, last token]`
    /// (normalized when asked), one frame each, then Done; an input holding
    /// the poison token crashes the worker; 0 as a first token is refused
    /// as the worker refuses a bad request.
    fn embed(&self, request: protocol::Embed) -> BoxFuture<'_, Result<EventStream, WorkerGone>> {
        self.submitted.fetch_add(1, Ordering::SeqCst);
        self.prompts.lock().unwrap().extend(request.inputs.clone());
        if let Some(p) = self.poison
            && request.inputs.iter().any(|i| i.contains(&p))
        {
            self.crash("killed by SIGABRT");
        }
        let mut exit = self.exit.subscribe();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Some(Some(report)) = exit.wait_for(|_| true).await.ok().map(|r| r.clone()) {
                return Err(WorkerGone(format!("the worker crashed ({report})")));
            }
            let id = request.request_id;
            let tokens = request.inputs.iter().map(Vec::len).sum::<usize>() as u32;
            let mut events = Vec::new();
            if request.inputs.iter().any(|i| i.first() == Some(&0)) {
                events.push(WorkerEvent::Error {
                    code: protocol::ErrorCode::InvalidRequest,
                    message: "an input starts with token 0".into(),
                });
            } else {
                for (index, input) in request.inputs.iter().enumerate() {
                    let mut v = [
                        request.pooling as u8 as f32 + 1.0,
                        input.len() as f32,
                        input[0] as f32,
                        input[input.len() - 1] as f32,
                    ];
                    if request.normalize {
                        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                        v.iter_mut().for_each(|x| *x /= norm);
                    }
                    let chunk = protocol::Embedding::chunks(id, index as u32, &v, 4);
                    events.extend(chunk.into_iter().map(WorkerEvent::Embedding));
                }
            }
            let failed = !matches!(events.last(), Some(WorkerEvent::Embedding(_)));
            events.push(WorkerEvent::Done(Done {
                request_id: id,
                finish_reason: if failed {
                    FinishReason::Error
                } else {
                    FinishReason::Stop
                },
                prompt_tokens: tokens,
                ..Done::default()
            }));
            let stream = futures::stream::iter(events.into_iter().map(Ok));
            Ok(Box::pin(stream) as EventStream)
        }
        .boxed()
    }

    fn cancel(&self, request_id: u64) -> BoxFuture<'_, ()> {
        self.cancelled.lock().unwrap().push(request_id);
        async {}.boxed()
    }

    fn is_alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    fn exited(&self) -> BoxFuture<'static, ExitReport> {
        let mut rx = self.exit.subscribe();
        async move {
            rx.wait_for(Option::is_some)
                .await
                .map(|r| r.clone().unwrap_or_default())
                .unwrap_or_default()
        }
        .boxed()
    }

    fn stop(&self, _grace: Duration) -> BoxFuture<'_, ExitReport> {
        let _ = self.exit.send(Some(ExitReport {
            status: "exit status 0".into(),
            stderr_tail: vec![],
        }));
        async {
            ExitReport {
                status: "exit status 0".into(),
                stderr_tail: vec![],
            }
        }
        .boxed()
    }
}
