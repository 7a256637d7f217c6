//! `mlxd run --hosts A,B,.. --parallel tensor|pipeline`: one model split
//! over several processes with MLX's `ring` backend, as `mlx.launch`
//! (`mlx/_distributed_utils/launch.py`) starts them.
//!
//! This process is rank 0: it writes the ring's hostfile (each rank's
//! `ip:port`; free ports for loopback hosts, `--ring-port` upward for the
//! others), starts ranks 1.. as `mlxd rank` children (local ones directly,
//! remote ones through `ssh`, which must find the same `mlxd` binary and
//! model path there), joins the ring itself, and drives generation; the
//! children follow (`engine::distributed::follow`). A rank that never
//! connects makes joining fail after `--connect-timeout`, naming the hosts
//! not heard from; a rank that dies ends rank 0's generation with MLX's
//! lost-connection error, which this module turns into one naming the
//! rank, its host, its exit status and its last stderr lines.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use engine::distributed::{Parallel, Shard};
use mlx::distributed::Group;

/// Lines of a rank's stderr kept for its error message.
const STDERR_LINES: usize = 8;

/// Arguments of the hidden `mlxd rank` (a follower rank, started by
/// `mlxd run --hosts`).
#[derive(Debug, Args)]
pub struct RankArgs {
    /// The model directory (the same path on every host).
    #[arg(long)]
    model: PathBuf,
    /// How the model is split.
    #[arg(long)]
    parallel: Parallel,
    /// Seconds to wait for the ring to form.
    #[arg(long, default_value_t = 60)]
    connect_timeout: u64,
}

/// Runs a follower rank: joins the ring its environment describes
/// (`MLX_HOSTFILE`, `MLX_RANK`), loads its part of the model and runs the
/// forward passes rank 0 announces until it is done.
pub fn rank(args: RankArgs) -> anyhow::Result<()> {
    engine::use_dedicated_stream()?;
    let hosts = hostfile_hosts()?;
    let group = join(&hosts, Duration::from_secs(args.connect_timeout), || None)?;
    let shard = Shard {
        group: group.clone(),
        parallel: args.parallel,
    };
    let loaded = engine::loader::load_part(&args.model, Some(shard), &mut |_, _| {})
        .with_context(|| format!("rank {}: loading {}", group.rank(), args.model.display()))?;
    engine::distributed::follow(&loaded.model, &group)
        .with_context(|| format!("rank {}", group.rank()))?;
    Ok(())
}

/// Each rank's `ip:port` from the hostfile `MLX_HOSTFILE` names.
fn hostfile_hosts() -> anyhow::Result<Vec<String>> {
    let path = std::env::var_os("MLX_HOSTFILE").context("MLX_HOSTFILE is not set")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", Path::new(&path).display()))?;
    let hosts: Vec<Vec<String>> = serde_json::from_str(&text).context("the ring hostfile")?;
    Ok(hosts.into_iter().map(|h| h.join(",")).collect())
}

/// Joins the ring (MLX's `init`, which blocks until the neighbours have
/// connected) on a thread of its own, giving up after `timeout` or as soon
/// as `gone` reports a rank that ended, so an unreachable rank is an error
/// naming it rather than a hang.
fn join(
    hosts: &[String],
    timeout: Duration,
    mut gone: impl FnMut() -> Option<String>,
) -> anyhow::Result<Group> {
    let (tx, rx) = std::sync::mpsc::channel();
    // The thread is left blocked inside MLX if the ring never forms; the
    // process then exits with the error below.
    std::thread::spawn(move || {
        let _ = tx.send(mlx::distributed::init("ring", true));
    });
    let deadline = Instant::now() + timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(group) => return group.context("joining the ring"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("joining the ring: the thread joining it ended")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(why) = gone() {
            bail!("joining the ring: {why}");
        }
        if Instant::now() >= deadline {
            let me: usize = std::env::var("MLX_RANK")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let others: Vec<String> = hosts
                .iter()
                .enumerate()
                .filter(|(r, _)| *r != me)
                .map(|(r, h)| format!("rank {r} at {h}"))
                .collect();
            bail!(
                "rank {me} could not join the ring within {} s: not reached: {}",
                timeout.as_secs(),
                others.join(", ")
            );
        }
    }
}

/// Whether `host` is this machine's loopback (its ranks start as local
/// children; its ports are probed free).
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Each rank's ring address: a free port for loopback hosts, `base + rank`
/// for the others (which this machine cannot probe).
fn ring_addresses(hosts: &[String], base: u16) -> anyhow::Result<Vec<String>> {
    // All listeners stay open until every port is chosen, so no two ranks
    // get the same one.
    let mut held = Vec::new();
    let mut out = Vec::new();
    for (rank, host) in hosts.iter().enumerate() {
        if is_loopback(host) {
            let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
            out.push(format!("127.0.0.1:{}", listener.local_addr()?.port()));
            held.push(listener);
        } else {
            let port = u16::try_from(rank)
                .ok()
                .and_then(|r| base.checked_add(r))
                .context("--ring-port + rank exceeds 65535")?;
            out.push(format!("{host}:{port}"));
        }
    }
    Ok(out)
}

/// The ring hostfile's JSON: one list of `ip:port` per rank.
fn hostfile_json(addresses: &[String]) -> String {
    let lists: Vec<Vec<String>> = addresses.iter().map(|a| vec![a.clone()]).collect();
    serde_json::Value::from(lists).to_string()
}

/// `s` quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What starts one follower rank.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RankCommand {
    rank: usize,
    host: String,
    program: String,
    args: Vec<String>,
}

impl RankCommand {
    /// The command line run on a remote host through `ssh`: writes the
    /// hostfile there, sets the ring's environment and becomes `mlxd rank`
    /// (as `mlx.launch` does for each remote rank).
    fn ssh(&self, hostfile: &str, cwd: &Path) -> Vec<String> {
        let cwd = shell_quote(&cwd.to_string_lossy());
        let mut script = format!(
            "cd {cwd} 2>/dev/null; f=$(mktemp) && printf '%s' {} > \"$f\" && \
             MLX_HOSTFILE=\"$f\" MLX_RANK={} exec {}",
            shell_quote(hostfile),
            self.rank,
            shell_quote(&self.program)
        );
        for arg in &self.args {
            script.push(' ');
            script.push_str(&shell_quote(arg));
        }
        vec![
            "ssh".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            self.host.clone(),
            script,
        ]
    }
}

/// A started follower rank.
struct Follower {
    rank: usize,
    host: String,
    child: Child,
    stderr: Arc<Mutex<VecDeque<String>>>,
    status: Option<ExitStatus>,
}

impl Follower {
    /// Its exit status, once it has ended.
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// "rank 1 on 127.0.0.1 ended (status 1): <last stderr lines>".
    fn describe(&self, status: ExitStatus) -> String {
        let lines = self.stderr.lock().map(|l| l.clone()).unwrap_or_default();
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            (None, None) => "ended".to_owned(),
        };
        let tail: Vec<String> = lines.into_iter().collect();
        let mut s = format!("rank {} on {} {how}", self.rank, self.host);
        if !tail.is_empty() {
            s.push_str(&format!(" (last output: {})", tail.join(" | ")));
        }
        s
    }
}

/// The group of this process (rank 0) and its followers.
pub struct Launch {
    followers: Vec<Follower>,
    hostfile: PathBuf,
    addresses: Vec<String>,
    parallel: Parallel,
}

/// How to start the group.
pub struct LaunchSpec<'a> {
    pub hosts: &'a [String],
    pub model: &'a Path,
    pub parallel: Parallel,
    pub ring_port: u16,
    pub connect_timeout: Duration,
}

impl Launch {
    /// Writes the hostfile, sets this process's ring environment
    /// (`MLX_HOSTFILE`, `MLX_RANK=0`) and starts ranks 1.. (rank 0 is this
    /// process). Call it before this process starts any thread or MLX
    /// stream.
    pub fn start(spec: &LaunchSpec) -> anyhow::Result<Launch> {
        let addresses = ring_addresses(spec.hosts, spec.ring_port)?;
        let json = hostfile_json(&addresses);
        let hostfile = std::env::temp_dir().join(format!("mlxd-ring-{}.json", std::process::id()));
        std::fs::write(&hostfile, &json)
            .with_context(|| format!("writing {}", hostfile.display()))?;
        // SAFETY: `mlxd run` calls this first, while this process has one
        // thread (no MLX stream, no reader thread yet), so nothing reads
        // the environment concurrently; MLX's ring reads both at `init`.
        unsafe {
            std::env::set_var("MLX_HOSTFILE", &hostfile);
            std::env::set_var("MLX_RANK", "0");
        }
        let program = std::env::current_exe().context("locating the mlxd binary")?;
        let model = std::path::absolute(spec.model)?;
        let args = vec![
            "rank".to_owned(),
            "--model".to_owned(),
            model.to_string_lossy().into_owned(),
            "--parallel".to_owned(),
            spec.parallel.name().to_owned(),
            "--connect-timeout".to_owned(),
            spec.connect_timeout.as_secs().to_string(),
        ];
        let cwd = std::env::current_dir()?;
        let mut launch = Launch {
            followers: Vec::new(),
            hostfile,
            addresses,
            parallel: spec.parallel,
        };
        for (rank, host) in spec.hosts.iter().enumerate().skip(1) {
            let rc = RankCommand {
                rank,
                host: host.clone(),
                program: program.to_string_lossy().into_owned(),
                args: args.clone(),
            };
            let mut cmd = if is_loopback(host) {
                let mut cmd = Command::new(&program);
                cmd.args(&rc.args)
                    .env("MLX_HOSTFILE", &launch.hostfile)
                    .env("MLX_RANK", rank.to_string());
                cmd
            } else {
                let argv = rc.ssh(&json, &cwd);
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..]);
                cmd
            };
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .with_context(|| format!("starting rank {rank} on {host}"))?;
            let stderr = Arc::new(Mutex::new(VecDeque::new()));
            if let Some(pipe) = child.stderr.take() {
                let keep = Arc::clone(&stderr);
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        if let Ok(mut lines) = keep.lock() {
                            if lines.len() == STDERR_LINES {
                                lines.pop_front();
                            }
                            lines.push_back(line);
                        }
                    }
                });
            }
            launch.followers.push(Follower {
                rank,
                host: host.clone(),
                child,
                stderr,
                status: None,
            });
        }
        Ok(launch)
    }

    /// Joins the ring as rank 0 (from the `MLX_HOSTFILE` and `MLX_RANK`
    /// [`Launch::start`] set), failing early if a follower ends first.
    pub fn join(&mut self, timeout: Duration) -> anyhow::Result<Shard> {
        let addresses = self.addresses.clone();
        let group = join(&addresses, timeout, || self.first_failure())?;
        Ok(Shard {
            group,
            parallel: self.parallel,
        })
    }

    /// The first follower found to have ended, described (any exit is a
    /// failure while rank 0 still needs the group).
    fn first_failure(&mut self) -> Option<String> {
        for f in &mut self.followers {
            if let Some(status) = f.poll() {
                return Some(f.describe(status));
            }
        }
        None
    }

    /// After rank 0 failed: which follower ended (waiting up to `grace` for
    /// one to), so the error names the rank that died rather than only the
    /// lost connection rank 0 saw. Stops the others.
    pub fn blame(&mut self, grace: Duration) -> Option<String> {
        let deadline = Instant::now() + grace;
        let found = loop {
            if let Some(why) = self.first_failure() {
                break Some(why);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stop();
        found
    }

    /// After rank 0 finished: waits for every follower to exit, each with
    /// success.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.followers.len() {
            loop {
                let f = &mut self.followers[i];
                if let Some(status) = f.poll() {
                    if !status.success() {
                        let why = f.describe(status);
                        self.stop();
                        return Err(anyhow!(why));
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    let (rank, host) = (f.rank, f.host.clone());
                    self.stop();
                    bail!("rank {rank} on {host} did not exit after generation ended");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Kills the followers still running and reaps them.
    fn stop(&mut self) {
        for f in &mut self.followers {
            if f.poll().is_none() {
                let _ = f.child.kill();
                f.status = f.child.wait().ok();
            }
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.hostfile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_rank_is_started_through_ssh_with_the_ring_environment() {
        let rc = RankCommand {
            rank: 1,
            host: "10.0.0.2".into(),
            program: "/opt/mlxd/bin/mlxd".into(),
            args: vec![
                "rank".into(),
                "--model".into(),
                "/models/My Model".into(),
                "--parallel".into(),
                "tensor".into(),
            ],
        };
        let json = hostfile_json(&["10.0.0.1:32323".into(), "10.0.0.2:32324".into()]);
        assert_eq!(json, r#"[["10.0.0.1:32323"],["10.0.0.2:32324"]]"#);
        let argv = rc.ssh(&json, Path::new("/home/me"));
        assert_eq!(argv[..4], ["ssh", "-o", "BatchMode=yes", "10.0.0.2"]);
        assert_eq!(
            argv[4],
            "cd /home/me 2>/dev/null; f=$(mktemp) && printf '%s' \
             '[[\"10.0.0.1:32323\"],[\"10.0.0.2:32324\"]]' > \"$f\" && \
             MLX_HOSTFILE=\"$f\" MLX_RANK=1 exec /opt/mlxd/bin/mlxd rank --model \
             '/models/My Model' --parallel tensor"
        );
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("plain/path-1"), "plain/path-1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn loopback_ranks_get_distinct_free_ports_and_remote_ones_count_up() {
        let hosts: Vec<String> = ["127.0.0.1", "localhost", "10.0.0.3"]
            .map(String::from)
            .to_vec();
        let a = ring_addresses(&hosts, 40000).unwrap();
        assert!(a[0].starts_with("127.0.0.1:") && a[1].starts_with("127.0.0.1:"));
        assert_ne!(a[0], a[1]);
        assert_eq!(a[2], "10.0.0.3:40002");
        assert!(is_loopback("::1") && !is_loopback("192.168.1.2"));
    }
}
