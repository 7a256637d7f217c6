//! `mlxd pull org/name`: download a model repository from the Hugging Face
//! hub (or a mirror at `HF_ENDPOINT`) into the hub cache layout
//! (`models--org--name/{blobs,snapshots/<commit>,refs/<revision>}`), so
//! Python tools and mlxd see the same files, as `ollama pull` and
//! `huggingface-cli download` do.
//!
//! The transfer is the `hf-hub` crate's (tokio API): a metadata request per
//! file, then ranged chunk downloads into `blobs/<etag>.sync.part`, whose
//! trailer records the bytes committed, so an interrupted transfer resumes
//! from the last whole chunk. On top of it this module retries a failed
//! file (each retry resumes), skips files already in the snapshot, shows
//! an `indicatif` bar per file, and checks every file's size and, for
//! large (LFS) files, its SHA-256 against what the hub's API lists.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hf_hub::api::tokio::{Api, ApiBuilder, ApiError, Progress};
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;
use server::http::catalog::PullEvent;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{self, ConfigArgs};

/// Attempts per file; every attempt after the first resumes.
const ATTEMPTS: u32 = 4;

/// Arguments of `mlxd pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The repository: `org/name`, e.g. mlx-community/Qwen2.5-0.5B-Instruct-4bit.
    repo: String,
    /// Branch, tag or commit to download.
    #[arg(long, default_value = "main")]
    revision: String,
    /// The hub cache to download into (default: `models.hf_cache` of the
    /// configuration: HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub).
    #[arg(long, value_name = "DIR")]
    hf_cache: Option<PathBuf>,
    /// Configuration file (default: ~/.config/mlxd/mlxd.toml, when present).
    #[arg(long, env = "MLXD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The hub's address.
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    endpoint: String,
    /// Access token for gated or private repositories (default: the token
    /// file `huggingface-cli login` writes).
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// A file of the repository as the hub's API lists it (`?blobs=true`).
#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    sha256: String,
    size: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

/// Runs `mlxd pull`.
pub fn run(args: PullArgs) -> anyhow::Result<()> {
    let hub = match &args.hf_cache {
        Some(dir) => dir.clone(),
        None => {
            let (config, _) = config::load(&ConfigArgs::from_env(args.config.clone())?)?;
            config.models.hf_cache
        }
    };
    let target = Target {
        repo: args.repo.clone(),
        revision: args.revision.clone(),
        endpoint: args.endpoint.clone(),
        token: args.token.clone(),
    };
    let snapshot = pull_repo(&target, &hub, None)?;
    eprintln!("{} is in {}", args.repo, snapshot.display());
    Ok(())
}

/// What to pull, from where.
pub struct Target {
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// The hub's address.
    pub endpoint: String,
    /// Access token (default: the hub cache's token file).
    pub token: Option<String>,
}

/// Pulls `target` into the hub cache `hub` (blocking): `mlxd pull`'s work,
/// and the daemon's for Ollama's `/api/pull`, which passes `events` to
/// hear of the progress (and then nothing is printed: lines go to the log).
pub fn pull_repo(
    target: &Target,
    hub: &Path,
    events: Option<UnboundedSender<PullEvent>>,
) -> anyhow::Result<PathBuf> {
    let repo = &target.repo;
    let Some((org, name)) = repo.split_once('/') else {
        bail!("{repo} is not a hub repository: expected org/name");
    };
    if org.is_empty() || name.is_empty() || name.contains('/') {
        bail!("{repo} is not a hub repository: expected org/name");
    }
    // One thread: the hub client spawns a task per chunk of a file and
    // records progress only up to the first chunk not yet written. On one
    // thread the tasks start in order, so the first chunk is always the one
    // in flight and a broken transfer keeps everything before it; on
    // several, a later chunk could run (and fail) first and lose the rest.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the download runtime")?;
    runtime.block_on(pull(target, hub, events))
}

/// A line for the person watching: stderr for `mlxd pull`, the log for
/// the daemon.
fn say(events: &Option<UnboundedSender<PullEvent>>, line: &str) {
    match events {
        None => eprintln!("{line}"),
        Some(_) => tracing::info!("pull: {line}"),
    }
}

async fn pull(
    args: &Target,
    hub: &Path,
    events: Option<UnboundedSender<PullEvent>>,
) -> anyhow::Result<PathBuf> {
    let endpoint = args.endpoint.trim_end_matches('/').to_string();
    let cache = Cache::new(hub.to_path_buf());
    let token = args.token.clone().or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache)
        .with_endpoint(endpoint.clone())
        .with_token(token)
        .with_progress(false)
        .build()
        .context("setting up the hub client")?;
    let repo = Repo::with_revision(args.repo.clone(), RepoType::Model, args.revision.clone());
    let info = repo_info(&api, &repo)
        .await
        .with_context(|| format!("asking {endpoint} about {}", args.repo))?;
    let snapshot = hub
        .join(format!("models--{}", args.repo.replace('/', "--")))
        .join("snapshots")
        .join(&info.sha);
    let api_repo = api.repo(repo);
    say(
        &events,
        &format!(
            "pulling {} ({} files, revision {})",
            args.repo,
            info.siblings.len(),
            info.sha
        ),
    );
    if let Some(tx) = &events {
        drop(tx.send(PullEvent::Manifest {
            files: info.siblings.len(),
        }));
    }
    for sibling in &info.siblings {
        let file = &sibling.rfilename;
        let local = snapshot.join(file);
        if verify(&local, sibling).is_ok() {
            say(&events, &format!("{file}: already here"));
            if let Some(tx) = &events {
                let size = std::fs::metadata(&local).map_or(0, |m| m.len());
                drop(tx.send(sibling.event(size, size)));
            }
            continue;
        }
        let mut attempt = 1;
        let path = loop {
            let bar = Bar::new(events.clone().map(|tx| (tx, sibling)));
            match api_repo.download_with_progress(file, bar.clone()).await {
                Ok(path) => break path,
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    bar.bar.abandon();
                    say(
                        &events,
                        &format!(
                            "{file}: {e}; resuming (attempt {} of {ATTEMPTS})",
                            attempt + 1
                        ),
                    );
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    bar.bar.abandon();
                    return Err(e).with_context(|| format!("downloading {file}"));
                }
            }
        };
        if let Err(e) = verify(&path, sibling) {
            // A corrupt blob must not be found by the next run.
            if let Ok(blob) = std::fs::canonicalize(&path) {
                drop(std::fs::remove_file(blob));
            }
            drop(std::fs::remove_file(&path));
            return Err(e);
        }
    }
    Ok(snapshot)
}

impl Sibling {
    /// A progress event of this file.
    fn event(&self, total: u64, completed: u64) -> PullEvent {
        PullEvent::File {
            name: self.rfilename.clone(),
            digest: self.digest(),
            total,
            completed,
        }
    }

    /// Its SHA-256 when the hub lists one (LFS files), else its name.
    fn digest(&self) -> String {
        self.lfs
            .as_ref()
            .map_or_else(|| self.rfilename.clone(), |l| l.sha256.clone())
    }
}

/// Whether another attempt may succeed (the transfer broke, as opposed to
/// a refusal such as 401 or 404).
fn retryable(e: &ApiError) -> bool {
    match e {
        ApiError::RequestError(e) => e.status().is_none_or(|s| s.is_server_error()),
        ApiError::IoError(_) | ApiError::TooManyRetries(_) => true,
        _ => false,
    }
}

/// The repository's commit and files, with sizes and LFS hashes.
async fn repo_info(api: &Api, repo: &Repo) -> anyhow::Result<RepoInfo> {
    let response = api
        .repo(repo.clone())
        .info_request()
        .query(&[("blobs", "true")])
        .send()
        .await?
        .error_for_status()?;
    Ok(response.json::<RepoInfo>().await?)
}

/// Checks `path` against the size and SHA-256 the hub listed.
fn verify(path: &Path, sibling: &Sibling) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{} is missing", path.display()))?;
    let expected = sibling.lfs.as_ref().and_then(|l| l.size).or(sibling.size);
    if let Some(size) = expected
        && meta.len() != size
    {
        bail!(
            "{}: {} bytes on disk, the hub lists {size}",
            sibling.rfilename,
            meta.len()
        );
    }
    if let Some(lfs) = &sibling.lfs {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest = hasher.finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if !hex.eq_ignore_ascii_case(&lfs.sha256) {
            bail!(
                "{}: SHA-256 {hex} differs from the hub's {}",
                sibling.rfilename,
                lfs.sha256
            );
        }
    }
    Ok(())
}

/// One file's progress bar (hidden when stderr is not a terminal, and
/// for the daemon), and its events when the daemon listens.
#[derive(Clone)]
struct Bar {
    bar: indicatif::ProgressBar,
    events: Option<FileEvents>,
}

/// A file's progress as events; the counts are shared by the clones the
/// hub client makes.
#[derive(Clone)]
struct FileEvents {
    tx: UnboundedSender<PullEvent>,
    sibling_name: String,
    digest: String,
    total: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
}

impl FileEvents {
    fn send(&self) {
        // Relaxed: plain counters, read only to report them.
        drop(self.tx.send(PullEvent::File {
            name: self.sibling_name.clone(),
            digest: self.digest.clone(),
            total: self.total.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
        }));
    }
}

impl Bar {
    fn new(events: Option<(UnboundedSender<PullEvent>, &Sibling)>) -> Bar {
        let bar = if events.is_some() {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(0)
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta}",
        ) {
            bar.set_style(style);
        }
        let events = events.map(|(tx, sibling)| FileEvents {
            tx,
            sibling_name: sibling.rfilename.clone(),
            digest: sibling.digest(),
            total: Arc::new(AtomicU64::new(0)),
            completed: Arc::new(AtomicU64::new(0)),
        });
        Bar { bar, events }
    }
}

impl Progress for Bar {
    async fn init(&mut self, size: usize, filename: &str) {
        self.bar.set_length(size as u64);
        self.bar.set_message(filename.to_string());
        if let Some(e) = &self.events {
            e.total.store(size as u64, Ordering::Relaxed);
            e.send();
        }
    }

    async fn update(&mut self, size: usize) {
        self.bar.inc(size as u64);
        if let Some(e) = &self.events {
            e.completed.fetch_add(size as u64, Ordering::Relaxed);
            e.send();
        }
    }

    async fn finish(&mut self) {
        self.bar.finish();
        let name = self.bar.message();
        match &self.events {
            None => eprintln!("{name}: {} bytes", self.bar.length().unwrap_or(0)),
            Some(e) => {
                let total = e.total.load(Ordering::Relaxed);
                e.completed.store(total, Ordering::Relaxed);
                e.send();
            }
        }
    }
}
