//! `mlxd ps`, `mlxd load`, `mlxd unload`: a running daemon's admin API
//! from the command line (as `ollama ps` talks to its server). The address
//! comes from the configuration (`[server] host`, `admin_port`) unless
//! `--url` gives one.

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::config::{self, ConfigArgs};

/// Where the admin API is.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The admin API's base URL (default: from the configuration,
    /// http://127.0.0.1:11441).
    #[arg(long, env = "MLXD_ADMIN_URL")]
    url: Option<String>,
    /// Bearer key of the admin API.
    #[arg(long = "admin-key", env = "MLXD_ADMIN_KEY", hide_env_values = true)]
    key: Option<String>,
}

/// Arguments of `mlxd load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The model to load (a served name, alias, or org/name).
    model: String,
    /// How long it stays loaded idle ("10m", -1 = forever, 0 = until the
    /// next request ends).
    #[arg(long, allow_hyphen_values = true)]
    keep_alive: Option<String>,
    #[command(flatten)]
    target: AdminTarget,
}

/// Arguments of `mlxd unload`.
#[derive(Debug, Args)]
pub struct UnloadArgs {
    /// The model to unload.
    model: String,
    #[command(flatten)]
    target: AdminTarget,
}

impl AdminTarget {
    fn base(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.trim_end_matches('/').to_owned());
        }
        let (config, _) = config::load(&ConfigArgs::from_env(None)?)?;
        let host = match config.server.host.as_str() {
            "0.0.0.0" => "127.0.0.1",
            "::" => "::1",
            other => other,
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        Ok(format!("http://{host}:{}", config.server.admin_port))
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base()?);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let mut request = client.request(method, &url);
            if let Some(key) = &self.key {
                request = request.bearer_auth(key);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.with_context(|| {
                format!("reaching the daemon at {url} (is `mlxd serve` running?)")
            })?;
            let status = response.status();
            let value: Value = response
                .json()
                .await
                .with_context(|| format!("reading {url}"))?;
            if !status.is_success() {
                let message = value["error"]["message"].as_str().unwrap_or("no message");
                bail!("{status}: {message}");
            }
            Ok(value)
        })
    }
}

fn mib(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "-".into(),
        |b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64),
    )
}

fn seconds(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(s) if s < 0.0 => "forever".into(),
        Some(s) => format!("{s:.0}s"),
    }
}

/// `mlxd ps`: the daemon's models and their workers.
pub fn ps(target: AdminTarget) -> anyhow::Result<()> {
    let status = target.call(reqwest::Method::GET, "/admin/status", None)?;
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<32} {:<9} {:>8} {:>10} {:>9} {:>9} {:>10} {:>8}",
        "MODEL", "STATE", "PID", "MEMORY", "IDLE", "REQUESTS", "KEEP ALIVE", "RESTARTS"
    );
    for w in workers {
        println!(
            "{:<32} {:<9} {:>8} {:>10} {:>9} {:>9} {:>10} {:>8}",
            w["model"].as_str().unwrap_or("?"),
            w["state"].as_str().unwrap_or("?"),
            w["pid"]
                .as_u64()
                .map_or_else(|| "-".into(), |p| p.to_string()),
            mib(&w["memory_bytes"]),
            seconds(&w["idle_seconds"]),
            w["in_flight"].as_u64().unwrap_or(0),
            seconds(&w["keep_alive_seconds"]),
            w["restarts"].as_u64().unwrap_or(0),
        );
        if let Some(failure) = w["failure"].as_str() {
            println!("    failed: {failure}");
        }
    }
    Ok(())
}

/// `mlxd load MODEL`.
pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    let mut body = json!({"model": args.model});
    if let Some(k) = &args.keep_alive {
        body["keep_alive"] = k.parse::<f64>().map_or_else(|_| json!(k), |s| json!(s));
    }
    let reply = args
        .target
        .call(reqwest::Method::POST, "/admin/load", Some(body))?;
    println!(
        "loaded {} (pid {}, context {} tokens, {:.1} s)",
        args.model,
        reply["pid"],
        reply["context_length"],
        reply["load_seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

/// `mlxd unload MODEL`.
pub fn unload(args: UnloadArgs) -> anyhow::Result<()> {
    let reply = args.target.call(
        reqwest::Method::POST,
        "/admin/unload",
        Some(json!({"model": args.model})),
    )?;
    if reply["unloaded"].as_bool() == Some(true) {
        println!("unloading {} (after its running requests)", args.model);
    } else {
        println!("{} was not loaded", args.model);
    }
    Ok(())
}
