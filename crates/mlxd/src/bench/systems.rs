//! The servers the suite measures: `mlxd serve` (this executable, on free
//! loopback ports, with an empty configuration and the model under test),
//! and the peers found on the machine: `mlx_lm.server` from a Python that
//! imports mlx_lm, `llama-server` on a GGUF, Ollama on a GGUF. Each runs as
//! a child that dies with this process and is stopped (SIGTERM, then
//! SIGKILL) when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::client::Target;

/// A server process under test.
pub struct Server {
    pub target: Target,
    /// The admin API (`mlxd serve` only).
    pub admin: Option<String>,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, which is not reaped yet (the
        // Child is only waited below), so the pid is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The executable `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Starts `cmd` with its output in `log`, tied to this process's life, in
/// the environment the user gave this process.
fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    crate::user_environment(&mut cmd);
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; the child gets SIGTERM when the thread that spawned it
        // (the suite's main thread, alive until the end) exits.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    cmd.spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

/// Polls `url` until it answers 200, the child exits, or `timeout` passes.
async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("exited ({status}); log: {}", tail(log));
        }
        let ok = http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no answer from {url} in {timeout:?}; log: {}", tail(log));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

/// The name `mlxd serve` serves the model under.
const SERVED_NAME: &str = "bench";

/// `mlxd serve` with `model` and nothing else (an empty configuration, models
/// dir and hub cache), its worker loaded and kept; without its prompt cache
/// unless `prompt_cache`, so that it prefills every prompt as the bare
/// engine does; logging with `log_filter`.
pub async fn start_mlxd(
    http: &reqwest::Client,
    model: &Path,
    work: &Path,
    log: &Path,
    prompt_cache: bool,
    log_filter: &str,
) -> anyhow::Result<Server> {
    let empty = work.join("empty");
    std::fs::create_dir_all(&empty)?;
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut last_error = None;
    // A port taken between the probe and the bind: try again.
    for _ in 0..3 {
        let (port, admin_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(&exe);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MLXD_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("XDG_CONFIG_HOME", &empty)
            .env("HF_HUB_CACHE", &empty)
            .args(["serve", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--admin-port")
            .arg(admin_port.to_string())
            .arg("--models-dir")
            .arg(&empty)
            .arg("--hf-cache")
            .arg(&empty)
            .args(["--log-level", log_filter])
            // Stopped means stopped: requests in flight are the bench's own.
            .args(["--shutdown-grace", "1"])
            .arg("--model")
            .arg(format!("{SERVED_NAME}={}", model.display()));
        if !prompt_cache {
            cmd.args(["--prompt-cache", "0"]);
        }
        let mut child = spawn(cmd, log)?;
        let base = format!("http://127.0.0.1:{port}");
        let admin = format!("http://127.0.0.1:{admin_port}");
        match wait_ready(
            http,
            &format!("{base}/ready"),
            &mut child,
            log,
            Duration::from_secs(60),
        )
        .await
        {
            Ok(()) => {
                let mut extra = serde_json::Map::new();
                extra.insert("ignore_eos".into(), json!(true));
                let server = Server {
                    target: Target {
                        system: "mlxd".into(),
                        base,
                        model: SERVED_NAME.into(),
                        extra,
                    },
                    admin: Some(admin.clone()),
                    child,
                };
                let loaded = http
                    .post(format!("{admin}/admin/load"))
                    .json(&json!({"model": SERVED_NAME, "keep_alive": -1}))
                    .send()
                    .await
                    .context("loading the model")?;
                if !loaded.status().is_success() {
                    let text = loaded.text().await.unwrap_or_default();
                    bail!("mlxd could not load the model: {text}");
                }
                return Ok(server);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("mlxd serve did not start")))
        .context("starting mlxd serve")
}

/// How the peers ban end-of-sequence for exact token counts: a large
/// negative `logit_bias` on each EOS id (llama-server also honours
/// `ignore_eos`).
fn eos_ban(eos: &[u32]) -> serde_json::Map<String, serde_json::Value> {
    let bias: serde_json::Map<String, serde_json::Value> =
        eos.iter().map(|id| (id.to_string(), json!(-100))).collect();
    let mut extra = serde_json::Map::new();
    extra.insert("logit_bias".into(), serde_json::Value::Object(bias));
    extra
}

/// A Python that imports mlx_lm: `python`, else this source tree's `.venv`.
pub fn mlx_lm_python(python: Option<&Path>) -> Option<PathBuf> {
    let candidate = match python {
        Some(p) => p.to_owned(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    };
    let ok = Command::new(&candidate)
        .args(["-c", "import mlx_lm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

/// `python -m mlx_lm.server` on an MLX checkpoint directory (without its
/// prompt cache unless `prompt_cache`).
pub async fn start_mlx_lm(
    http: &reqwest::Client,
    python: &Path,
    model_dir: &Path,
    eos: &[u32],
    log: &Path,
    prompt_cache: bool,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut cmd = Command::new(python);
    cmd.args(["-m", "mlx_lm.server", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--model")
        .arg(model_dir);
    if !prompt_cache {
        cmd.args(["--prompt-cache-size", "0"]);
    }
    let mut child = spawn(cmd, log)?;
    let base = format!("http://127.0.0.1:{port}");
    if let Err(e) = wait_ready(
        http,
        &format!("{base}/health"),
        &mut child,
        log,
        Duration::from_secs(180),
    )
    .await
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.context("starting mlx_lm.server"));
    }
    Ok(Server {
        target: Target {
            system: "mlx_lm.server".into(),
            base,
            model: "default_model".into(),
            extra: eos_ban(eos),
        },
        admin: None,
        child,
    })
}

/// `llama-server` on a GGUF file.
pub async fn start_llama_server(
    http: &reqwest::Client,
    exe: &Path,
    gguf: &Path,
    eos: &[u32],
    log: &Path,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("-m")
        .arg(gguf);
    let mut child = spawn(cmd, log)?;
    let base = format!("http://127.0.0.1:{port}");
    if let Err(e) = wait_ready(
        http,
        &format!("{base}/health"),
        &mut child,
        log,
        Duration::from_secs(180),
    )
    .await
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.context("starting llama-server"));
    }
    let mut extra = eos_ban(eos);
    extra.insert("ignore_eos".into(), json!(true));
    Ok(Server {
        target: Target {
            system: "llama-server".into(),
            base,
            model: "default".into(),
            extra,
        },
        admin: None,
        child,
    })
}

/// A running Ollama (at `OLLAMA_HOST`, else 127.0.0.1:11434) serving `gguf`
/// as a model it creates from it (`ollama create`). Ollama's OpenAI API
/// takes neither `ignore_eos` nor `logit_bias`, so its generations may end
/// early; the report shows the counts.
pub async fn ollama_target(
    http: &reqwest::Client,
    exe: &Path,
    gguf: &Path,
    work: &Path,
) -> anyhow::Result<Target> {
    let host = std::env::var("OLLAMA_HOST").unwrap_or_else(|_| "127.0.0.1:11434".into());
    let base = if host.starts_with("http") {
        host
    } else {
        format!("http://{host}")
    };
    http.get(format!("{base}/api/tags"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("no Ollama answering at {base}"))?;
    let stem = gguf
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().to_lowercase());
    let name = format!("mlxd-bench-{stem}");
    let modelfile = work.join("Modelfile");
    std::fs::write(&modelfile, format!("FROM {}\n", gguf.display()))?;
    let status = Command::new(exe)
        .args(["create", &name, "-f"])
        .arg(&modelfile)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("ollama create {name} failed ({status})");
    }
    Ok(Target {
        system: "ollama".into(),
        base,
        model: name,
        extra: serde_json::Map::new(),
    })
}
