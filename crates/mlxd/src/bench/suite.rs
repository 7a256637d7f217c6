//! `mlxd bench --suite`: per model and generation length, the bare engine in
//! this process, `mlxd serve` over HTTP (streamed and whole), and the peers
//! found, measured in one run with their runs interleaved (so drift on a
//! shared machine hits every system alike); then N concurrent streams per
//! server; then the daemon's per-request stage timings from
//! `GET /admin/timings`. Every request is greedy and asks for exactly the
//! workload's token count (`ignore_eos` + `max_tokens` for mlxd).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use engine::model::synthetic::Preset;
use engine::{ChatMessage, RenderOptions};
use serde::Serialize;

use super::client::{self, Sample, Target};
use super::stats::{Summary, percentile};
use super::systems::{self, Server};
use super::{direct, plots, report};
use crate::models;

/// What the suite runs.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub models: Vec<String>,
    pub synthetic: Vec<String>,
    pub tokens: Vec<usize>,
    pub runs: usize,
    pub concurrency: Vec<usize>,
    pub out: PathBuf,
    pub smoke: bool,
    pub peers: bool,
    pub python: Option<PathBuf>,
    pub gguf: Option<PathBuf>,
    /// Leave the servers' prompt caches on (off by default: every system
    /// then prefills the whole prompt, as the bare engine does).
    pub prompt_cache: bool,
    /// The log filter of the `mlxd serve` measured.
    pub mlxd_log: String,
    pub command_line: String,
}

/// A fixed prompt, chosen by the generation length as in the reference
/// (short question, function generation, long explanation).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Workload {
    pub name: &'static str,
    pub prompt: &'static str,
}

pub fn workload(tokens: usize) -> Workload {
    match tokens {
        0..=50 => Workload {
            name: "short question",
            prompt: "What is the capital of France? Answer in one sentence.",
        },
        51..=100 => Workload {
            name: "function generation",
            prompt: "Write a Python function that checks whether a string is a palindrome.",
        },
        _ => Workload {
            name: "long explanation",
            prompt: "Explain how a transformer language model turns a prompt into text.",
        },
    }
}

/// The whole run, as written to `results.json`.
#[derive(Debug, Serialize)]
pub struct SuiteReport {
    pub mlxd_version: &'static str,
    pub command: String,
    pub smoke: bool,
    pub machine: Machine,
    pub started_unix: u64,
    pub duration_s: f64,
    pub runs: usize,
    pub tokens: Vec<usize>,
    pub concurrency: Vec<usize>,
    pub prompt_cache: bool,
    pub models: Vec<ModelReport>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub backend: String,
    pub device: String,
    pub mlx_version: String,
    pub cpus: usize,
}

#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub name: String,
    pub path: String,
    pub weight_bytes: usize,
    /// Every system and whether it was measured ("measured", "not found",
    /// or why it failed).
    pub systems: Vec<(String, String)>,
    pub workloads: Vec<WorkloadReport>,
    pub concurrency: Vec<ConcurrencyReport>,
    pub breakdown: Option<Breakdown>,
}

#[derive(Debug, Serialize)]
pub struct WorkloadReport {
    pub tokens: usize,
    pub workload: Workload,
    /// Prompt tokens after the chat template (the engine's count).
    pub prompt_tokens: usize,
    pub summaries: Vec<SystemSummary>,
    pub samples: Vec<(String, Vec<Sample>)>,
    /// The in-process engines' host time per decode step (the worker logs
    /// its own at debug level: "busy stretch").
    pub host_steps: Vec<HostSteps>,
}

/// Where an in-process engine's host spent its decode steps over the runs
/// of one workload, in µs per step.
#[derive(Debug, Serialize)]
pub struct HostSteps {
    pub system: String,
    pub build_us: Summary,
    pub dispatch_us: Summary,
    pub wait_us: Summary,
}

impl HostSteps {
    fn of(system: &str, steps: &[direct::HostStep]) -> HostSteps {
        let of =
            |f: fn(&direct::HostStep) -> f64| Summary::of(&steps.iter().map(f).collect::<Vec<_>>());
        HostSteps {
            system: system.to_owned(),
            build_us: of(|s| s.build),
            dispatch_us: of(|s| s.dispatch),
            wait_us: of(|s| s.wait),
        }
    }
}

/// One system's figures for one workload.
#[derive(Debug, Serialize)]
pub struct SystemSummary {
    pub system: String,
    pub ttft_ms: Option<Summary>,
    pub decode_tps: Option<Summary>,
    pub e2e_tps: Summary,
    /// Every request generated exactly the workload's tokens.
    pub exact_tokens: bool,
    /// Against the bare engine, from medians: tok/s lost end to end and in
    /// decode (%), and time to first token added (ms).
    pub e2e_overhead_pct: Option<f64>,
    pub decode_overhead_pct: Option<f64>,
    pub added_ttft_ms: Option<f64>,
    /// Against the bare engine round by round: this system's end-to-end
    /// tok/s over direct's in the same round (when every round has both),
    /// which cancels the machine's drift between rounds.
    pub e2e_ratio: Option<Summary>,
}

#[derive(Debug, Serialize)]
pub struct ConcurrencyReport {
    pub system: String,
    pub level: usize,
    pub tokens: usize,
    /// All streams' tokens over the time from the first request sent to the
    /// last response ended.
    pub aggregate_tps: f64,
    pub per_stream_decode_tps: Option<Summary>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub wall_s: f64,
    pub samples: Vec<Sample>,
}

/// The daemon's stage timings of the measured requests (p50/p99 µs).
#[derive(Debug, Serialize)]
pub struct Breakdown {
    /// Whether the worker reported its stamps (received, admitted, first
    /// token); without them the ring and worker stages are missing.
    pub worker_reported: bool,
    pub stream: serde_json::Value,
    pub whole: serde_json::Value,
    pub stream_timelines: serde_json::Value,
}

/// The model under test, on disk.
struct Subject {
    name: String,
    path: PathBuf,
}

/// Writes synthetic checkpoints (with the built-in model's tokenizer, its
/// vocabulary so every generated id has text) into `work`.
fn subjects(opts: &SuiteOptions, work: &Path) -> anyhow::Result<Vec<Subject>> {
    let mut out = Vec::new();
    for reference in &opts.models {
        let path = models::resolve(Some(reference))?;
        out.push(Subject {
            name: reference.clone(),
            path,
        });
    }
    if !opts.synthetic.is_empty() {
        let tokenizer_from = models::default_model()?;
        let tokenizer = if tokenizer_from.is_dir() {
            engine::Tokenizer::from_dir(&tokenizer_from)?
        } else {
            engine::Tokenizer::from_gguf_path(&tokenizer_from)?
        };
        let vocab = tokenizer.vocab_size() as i32;
        for name in &opts.synthetic {
            let preset = Preset::find(name)?.with_vocab(vocab);
            let dir = work.join(name);
            eprintln!("writing synthetic {name} to {}", dir.display());
            preset.save(&dir, 0)?;
            engine::convert::copy_tokenizer(&tokenizer_from, &dir)?;
            out.push(Subject {
                name: format!("{name} (synthetic)"),
                path: dir,
            });
        }
    }
    if out.is_empty() {
        let path = models::default_model()?;
        out.push(Subject {
            name: crate::serve::DEFAULT_MODEL_NAME.to_owned(),
            path: std::fs::canonicalize(&path).unwrap_or(path),
        });
    }
    Ok(out)
}

/// Runs the suite and writes the report, JSON and plots into `opts.out`.
pub fn run(opts: SuiteOptions) -> anyhow::Result<()> {
    if opts.tokens.is_empty() || opts.tokens.contains(&0) || opts.runs == 0 {
        bail!("--tokens and --runs must be positive");
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let work = std::env::temp_dir().join(format!("mlxd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = run_in(&opts, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_in(opts: &SuiteOptions, work: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    engine::use_dedicated_stream()?;
    engine::wire_working_set()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3600))
        .build()?;
    let logs = opts.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut models = Vec::new();
    for (index, subject) in subjects(opts, work)?.into_iter().enumerate() {
        let ctx = ModelRun {
            opts,
            rt: &rt,
            http: &http,
            work,
            logs: &logs,
            index,
        };
        models.push(ctx.run(&subject)?);
    }
    let device = mlx::device::default_device()?;
    let suite = SuiteReport {
        mlxd_version: env!("CARGO_PKG_VERSION"),
        command: opts.command_line.clone(),
        smoke: opts.smoke,
        machine: Machine {
            backend: mlx::backend().to_string(),
            device: device.name().unwrap_or_else(|_| device.to_string()),
            mlx_version: mlx::version(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        started_unix,
        duration_s: started.elapsed().as_secs_f64(),
        runs: opts.runs,
        tokens: opts.tokens.clone(),
        concurrency: opts.concurrency.clone(),
        prompt_cache: opts.prompt_cache,
        models,
    };
    let json = opts.out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&suite)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let plots = plots::write_all(&suite, &opts.out)?;
    let md = report::markdown(&suite, &plots);
    std::fs::write(opts.out.join("report.md"), &md)?;
    println!("{md}");
    eprintln!(
        "wrote {} (report.md, results.json, {} plots) in {:.0} s",
        opts.out.display(),
        plots.len(),
        suite.duration_s
    );
    Ok(())
}

/// One model's part of the run.
struct ModelRun<'a> {
    opts: &'a SuiteOptions,
    rt: &'a tokio::runtime::Runtime,
    http: &'a reqwest::Client,
    work: &'a Path,
    logs: &'a Path,
    index: usize,
}

/// A peer under test, with its server process when the suite started one
/// (held until the model's part ends).
struct Peer {
    _server: Option<Server>,
    target: Target,
}

impl ModelRun<'_> {
    fn run(&self, subject: &Subject) -> anyhow::Result<ModelReport> {
        eprintln!("== {} ({})", subject.name, subject.path.display());
        let loaded = engine::loader::load(&subject.path)
            .with_context(|| format!("loading {}", subject.path.display()))?;
        let eos = loaded.tokenizer.eos_token_ids().to_vec();
        let m = self.index;
        let mlxd = self.rt.block_on(systems::start_mlxd(
            self.http,
            &subject.path,
            self.work,
            &self.logs.join(format!("mlxd-{m}.log")),
            self.opts.prompt_cache,
            &self.opts.mlxd_log,
        ))?;
        let mut systems_seen = vec![("mlxd".to_owned(), "measured".to_owned())];
        let mut peers = self.start_peers(subject, &eos, &mut systems_seen);
        self.warm_up(&loaded, &mlxd, &mut peers, &mut systems_seen)?;
        let mut workloads = Vec::new();
        for &tokens in &self.opts.tokens {
            workloads.push(self.workload(&loaded, &mlxd, &peers, tokens, &mut systems_seen)?);
        }
        let mut concurrency = Vec::new();
        if let (Some(&tokens), false) = (self.opts.tokens.first(), self.opts.concurrency.is_empty())
        {
            let prompt = workload(tokens).prompt;
            let targets: Vec<Target> = std::iter::once(mlxd.target.clone())
                .chain(peers.iter().map(|p| p.target.clone()))
                .collect();
            let widest = self.opts.concurrency.iter().copied().max().unwrap_or(1);
            for target in &targets {
                // One unmeasured round at the widest level first: a batch
                // path's first use may compile kernels or grow buffers.
                eprintln!("{}: warm-up, {widest} concurrent streams", target.system);
                let warm_up = self.rt.block_on(client::concurrent(
                    self.http,
                    target,
                    prompt,
                    tokens,
                    widest,
                    &format!("cw-{m}"),
                ));
                if let Err(e) = warm_up {
                    eprintln!("{}: concurrency warm-up failed: {e:#}", target.system);
                }
                for &level in &self.opts.concurrency {
                    eprintln!(
                        "{}: {level} concurrent streams of {tokens} tokens",
                        target.system
                    );
                    let id = format!("c-{m}-{level}");
                    let samples = self.rt.block_on(client::concurrent(
                        self.http, target, prompt, tokens, level, &id,
                    ));
                    match samples {
                        Ok(samples) => {
                            concurrency.push(concurrency_report(target, level, tokens, samples))
                        }
                        Err(e) if target.system == "mlxd" => return Err(e),
                        Err(e) => eprintln!("{}: concurrency {level} failed: {e:#}", target.system),
                    }
                }
            }
        }
        let breakdown = mlxd
            .admin
            .as_deref()
            .map(|admin| self.rt.block_on(breakdown(self.http, admin, m)))
            .transpose()?;
        drop(peers);
        drop(mlxd);
        Ok(ModelReport {
            name: subject.name.clone(),
            path: subject.path.display().to_string(),
            weight_bytes: loaded.model.weight_bytes(),
            systems: systems_seen,
            workloads,
            concurrency,
            breakdown,
        })
    }

    /// The peers found on this machine, started; the others noted.
    fn start_peers(
        &self,
        subject: &Subject,
        eos: &[u32],
        seen: &mut Vec<(String, String)>,
    ) -> Vec<Peer> {
        let mut peers = Vec::new();
        let mut note = |name: &str, status: String| seen.push((name.to_owned(), status));
        if !self.opts.peers {
            note("peers", "not run (--no-peers or --smoke)".into());
            return peers;
        }
        let m = self.index;
        match systems::mlx_lm_python(self.opts.python.as_deref()) {
            None => note(
                "mlx_lm.server",
                "not found (no Python that imports mlx_lm)".into(),
            ),
            Some(python) => {
                let started = self.mlx_checkpoint(subject).and_then(|dir| {
                    self.rt.block_on(systems::start_mlx_lm(
                        self.http,
                        &python,
                        &dir,
                        eos,
                        &self.logs.join(format!("mlx_lm-{m}.log")),
                        self.opts.prompt_cache,
                    ))
                });
                match started {
                    Ok(server) => {
                        note("mlx_lm.server", "measured".into());
                        peers.push(Peer {
                            target: server.target.clone(),
                            _server: Some(server),
                        });
                    }
                    Err(e) => note("mlx_lm.server", format!("failed: {e:#}")),
                }
            }
        }
        let gguf = self.opts.gguf.clone().or_else(|| {
            (subject.path.extension().is_some_and(|e| e == "gguf")).then(|| subject.path.clone())
        });
        for (name, exe) in [
            ("llama-server", systems::which("llama-server")),
            ("ollama", systems::which("ollama")),
        ] {
            let (Some(exe), Some(gguf)) = (exe.as_ref(), gguf.as_ref()) else {
                let why = if exe.is_none() {
                    "not found on PATH"
                } else {
                    "no GGUF (--gguf)"
                };
                note(name, why.into());
                continue;
            };
            let log = self.logs.join(format!("{name}-{m}.log"));
            let started = if name == "llama-server" {
                self.rt
                    .block_on(systems::start_llama_server(self.http, exe, gguf, eos, &log))
                    .map(|s| Peer {
                        target: s.target.clone(),
                        _server: Some(s),
                    })
            } else {
                self.rt
                    .block_on(systems::ollama_target(self.http, exe, gguf, self.work))
                    .map(|target| Peer {
                        target,
                        _server: None,
                    })
            };
            match started {
                Ok(peer) => {
                    note(name, "measured".into());
                    peers.push(peer);
                }
                Err(e) => note(name, format!("failed: {e:#}")),
            }
        }
        peers
    }

    /// An MLX checkpoint of the subject for mlx_lm: the directory itself, or
    /// a GGUF converted (losslessly) into the work directory.
    fn mlx_checkpoint(&self, subject: &Subject) -> anyhow::Result<PathBuf> {
        if subject.path.is_dir() {
            return Ok(subject.path.clone());
        }
        let dir = self.work.join(format!("converted-{}", self.index));
        if !dir.exists() {
            engine::convert::gguf_to_mlx(&subject.path, &dir)
                .with_context(|| format!("converting {} for mlx_lm", subject.path.display()))?;
        }
        Ok(dir)
    }

    /// One request to every system with the shortest workload, not
    /// recorded (first-use costs: kernels, allocations, caches); a peer
    /// that fails it is left out.
    fn warm_up(
        &self,
        loaded: &engine::loader::LoadedModel,
        mlxd: &Server,
        peers: &mut Vec<Peer>,
        seen: &mut [(String, String)],
    ) -> anyhow::Result<()> {
        let tokens = self.opts.tokens.iter().copied().min().unwrap_or(1);
        let w = workload(tokens);
        eprintln!("warm-up ({tokens} tokens, every system)");
        let prompt = chat_prompt(&loaded.tokenizer, w.prompt)?;
        direct::generate_timed(&loaded.model, &prompt, tokens)?;
        direct::schedule_timed(&loaded.model, &prompt, tokens, None)?;
        let id = format!("w-{}", self.index);
        let request = |target: &Target| {
            self.rt.block_on(client::chat(
                self.http,
                target,
                w.prompt,
                tokens,
                true,
                &id,
                Instant::now(),
            ))
        };
        request(&mlxd.target)?;
        peers.retain(|p| match request(&p.target) {
            Ok(_) => true,
            Err(e) => {
                mark_failed(seen, &p.target.system, &e);
                false
            }
        });
        Ok(())
    }

    /// One generation length: `runs` rounds of direct, mlxd streamed, mlxd
    /// whole, the scheduler in-process, and each peer streamed.
    fn workload(
        &self,
        loaded: &engine::loader::LoadedModel,
        mlxd: &Server,
        peers: &[Peer],
        tokens: usize,
        seen: &mut [(String, String)],
    ) -> anyhow::Result<WorkloadReport> {
        let w = workload(tokens);
        let prompt = chat_prompt(&loaded.tokenizer, w.prompt)?;
        let m = self.index;
        eprintln!(
            "{tokens} tokens ({}; prompt {} tokens)",
            w.name,
            prompt.len()
        );
        let request = |target: &Target, stream: bool, id: &str| {
            self.rt.block_on(client::chat(
                self.http,
                target,
                w.prompt,
                tokens,
                stream,
                id,
                Instant::now(),
            ))
        };
        let mut direct_samples = Vec::new();
        let mut scheduled = Vec::new();
        let (mut direct_host, mut scheduled_host) = (Vec::new(), Vec::new());
        let mut stream = Vec::new();
        let mut whole = Vec::new();
        let mut peer_samples: Vec<Vec<Sample>> = vec![Vec::new(); peers.len()];
        let systems = 4 + peers.len();
        for run in 0..self.opts.runs {
            // Each round starts with the next system, so none always runs
            // right after another's request (a peer's process may still be
            // busy then).
            for slot in 0..systems {
                match (run + slot) % systems {
                    0 => {
                        let timed = direct::generate_timed(&loaded.model, &prompt, tokens)?;
                        let id = format!("d-{m}-{tokens}-{run}");
                        direct_samples.push(direct_sample(&timed, &id));
                        direct_host.push(timed.host_per_step_us());
                    }
                    1 => stream.push(request(
                        &mlxd.target,
                        true,
                        &format!("s-{m}-{tokens}-{run}"),
                    )?),
                    2 => whole.push(request(
                        &mlxd.target,
                        false,
                        &format!("n-{m}-{tokens}-{run}"),
                    )?),
                    3 => {
                        let timed = direct::schedule_timed(&loaded.model, &prompt, tokens, None)?;
                        let id = format!("b-{m}-{tokens}-{run}");
                        scheduled.push(direct_sample(&timed, &id));
                        scheduled_host.push(timed.host_per_step_us());
                    }
                    k => {
                        let (i, peer) = (k - 4, &peers[k - 4]);
                        match request(&peer.target, true, &format!("p-{m}-{tokens}-{run}")) {
                            Ok(s) => peer_samples[i].push(s),
                            Err(e) => mark_failed(seen, &peer.target.system, &e),
                        }
                    }
                }
            }
            let last = |v: &Vec<Sample>| v.last().map_or(0.0, |s| s.e2e_tps);
            eprintln!(
                "  run {}/{}: direct {:.1} tok/s, mlxd stream {:.1}, mlxd {:.1} (end to end)",
                run + 1,
                self.opts.runs,
                last(&direct_samples),
                last(&stream),
                last(&whole)
            );
        }
        let mut samples = vec![
            ("direct".to_owned(), direct_samples),
            ("mlxd stream".to_owned(), stream),
            ("mlxd".to_owned(), whole),
            (SCHEDULER.to_owned(), scheduled),
        ];
        for (peer, s) in peers.iter().zip(peer_samples) {
            if !s.is_empty() {
                samples.push((format!("{} stream", peer.target.system), s));
            }
        }
        let summaries = summarize(&samples, tokens);
        Ok(WorkloadReport {
            tokens,
            workload: w,
            prompt_tokens: prompt.len(),
            summaries,
            samples,
            host_steps: vec![
                HostSteps::of("direct", &direct_host),
                HostSteps::of(SCHEDULER, &scheduled_host),
            ],
        })
    }
}

/// The system name of the engine's continuous-batching scheduler run
/// in-process with one sequence: the worker's engine path without the
/// worker, which splits mlxd's overhead into the scheduler's and the
/// serving's (HTTP, ring, process).
pub const SCHEDULER: &str = "direct scheduler";

fn mark_failed(seen: &mut [(String, String)], system: &str, e: &anyhow::Error) {
    eprintln!("{system}: {e:#}");
    if let Some(entry) = seen.iter_mut().find(|(name, _)| name == system) {
        entry.1 = format!("failed: {e:#}");
    }
}

/// The token ids the server makes of a one-message chat.
fn chat_prompt(tokenizer: &engine::Tokenizer, prompt: &str) -> anyhow::Result<Vec<u32>> {
    let messages: Vec<ChatMessage> =
        serde_json::from_value(serde_json::json!([{"role": "user", "content": prompt}]))?;
    let options = RenderOptions {
        add_generation_prompt: true,
        ..RenderOptions::default()
    };
    let text = tokenizer.apply_chat_template(&messages, &options)?;
    Ok(tokenizer.encode(&text, false)?)
}

fn direct_sample(t: &direct::Timed, id: &str) -> Sample {
    Sample {
        request_id: id.to_owned(),
        stream: true,
        ttft_ms: Some(t.ttft.as_secs_f64() * 1e3),
        decode_tps: Some(t.decode_tps()),
        e2e_tps: t.end_to_end_tps(),
        total_ms: t.total.as_secs_f64() * 1e3,
        start_ms: 0.0,
        completion_tokens: t.tokens as u32,
        prompt_tokens: Some(t.prompt_tokens as u32),
        cached_tokens: None,
    }
}

/// Each system's summaries, with the overhead against `direct`.
fn summarize(samples: &[(String, Vec<Sample>)], tokens: usize) -> Vec<SystemSummary> {
    let of = |s: &[Sample]| SystemSummary {
        system: String::new(),
        ttft_ms: Summary::of_some(s.iter().map(|x| x.ttft_ms)),
        decode_tps: Summary::of_some(s.iter().map(|x| x.decode_tps)),
        e2e_tps: Summary::of(&s.iter().map(|x| x.e2e_tps).collect::<Vec<_>>()),
        exact_tokens: s.iter().all(|x| x.completion_tokens as usize == tokens),
        e2e_overhead_pct: None,
        decode_overhead_pct: None,
        added_ttft_ms: None,
        e2e_ratio: None,
    };
    let direct = samples
        .iter()
        .find(|(name, _)| name == "direct")
        .map(|(_, s)| s.as_slice());
    let base = direct.map(of);
    samples
        .iter()
        .map(|(name, s)| {
            let mut summary = of(s);
            summary.system = name.clone();
            if let Some(base) = base.as_ref().filter(|_| name != "direct") {
                let loss = |a: f64, b: f64| (1.0 - a / b) * 100.0;
                summary.e2e_overhead_pct = Some(loss(summary.e2e_tps.median, base.e2e_tps.median));
                summary.decode_overhead_pct = summary
                    .decode_tps
                    .zip(base.decode_tps)
                    .map(|(a, b)| loss(a.median, b.median));
                summary.added_ttft_ms = summary
                    .ttft_ms
                    .zip(base.ttft_ms)
                    .map(|(a, b)| a.median - b.median);
                summary.e2e_ratio = direct.filter(|d| d.len() == s.len()).map(|d| {
                    let ratios: Vec<f64> = s
                        .iter()
                        .zip(d)
                        .map(|(a, b)| a.e2e_tps / b.e2e_tps)
                        .collect();
                    Summary::of(&ratios)
                });
            }
            summary
        })
        .collect()
}

fn concurrency_report(
    target: &Target,
    level: usize,
    tokens: usize,
    samples: Vec<Sample>,
) -> ConcurrencyReport {
    let end = samples
        .iter()
        .map(|s| s.start_ms + s.total_ms)
        .fold(0.0, f64::max);
    let total: u32 = samples.iter().map(|s| s.completion_tokens).sum();
    let ttfts: Vec<f64> = samples.iter().filter_map(|s| s.ttft_ms).collect();
    let wall_s = end / 1e3;
    ConcurrencyReport {
        system: target.system.clone(),
        level,
        tokens,
        aggregate_tps: f64::from(total) / wall_s.max(1e-9),
        per_stream_decode_tps: Summary::of_some(samples.iter().map(|s| s.decode_tps)),
        ttft_p50_ms: (!ttfts.is_empty()).then(|| percentile(&ttfts, 0.5)),
        ttft_p99_ms: (!ttfts.is_empty()).then(|| percentile(&ttfts, 0.99)),
        wall_s,
        samples,
    }
}

/// The daemon's stage timings of this model's measured requests.
async fn breakdown(http: &reqwest::Client, admin: &str, m: usize) -> anyhow::Result<Breakdown> {
    let fetch = |prefix: String| async move {
        let v: serde_json::Value = http
            .get(format!("{admin}/admin/timings"))
            .query(&[("prefix", prefix)])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::Ok(v)
    };
    let stream = fetch(format!("s-{m}-")).await?;
    let whole = fetch(format!("n-{m}-")).await?;
    let worker_reported = stream["requests"]
        .as_array()
        .is_some_and(|r| r.iter().any(|t| t["worker_received_ns"].as_u64() > Some(0)));
    Ok(Breakdown {
        worker_reported,
        stream: stream["stages"].clone(),
        whole: whole["stages"].clone(),
        stream_timelines: stream["requests"].clone(),
    })
}
