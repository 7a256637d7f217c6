//! `mlxd pull` against a hub on 127.0.0.1 that serves a tiny model in the
//! Hugging Face URL layout (`/api/models/{repo}/revision/{rev}` and
//! `/{repo}/resolve/{rev}/{file}` with `Range`, `ETag`, `X-Repo-Commit`,
//! `X-Linked-Etag`), drops connections mid-file on request, and records
//! what it was asked. Then `mlxd run -m org/name` serves the pulled model;
//! and a daemon's `/api/pull` (Ollama's) runs the same download with NDJSON
//! progress.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

const REPO: &str = "test-org/tiny-model";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// hf-hub's chunk: a transfer resumes from a multiple of it.
const CHUNK: u64 = 10_000_000;
/// Files at least this large are LFS files (sha256 ETags), as on the hub.
const LFS_MIN: usize = 100_000;

struct HubFile {
    bytes: Vec<u8>,
    sha256: String,
    /// The git blob id of a small file (any stable hex id will do here).
    oid: String,
}

#[derive(Default)]
struct Hub {
    files: BTreeMap<String, HubFile>,
    /// Requests as `GET <path> [<range>]`.
    log: Mutex<Vec<String>>,
    /// Authorization headers seen.
    auth: Mutex<Vec<String>>,
    /// Transfers of the large file past the first chunk to cut short.
    drops_left: AtomicUsize,
    /// Whether to list a wrong SHA-256 for the large file.
    lie_about_sha: std::sync::atomic::AtomicBool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Hub {
    fn load(dir: &Path) -> Hub {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let sha256 = hex(&Sha256::digest(&bytes));
            let oid = sha256[..40].to_string();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, HubFile { bytes, sha256, oid });
        }
        Hub {
            files,
            ..Hub::default()
        }
    }

    fn info(&self) -> String {
        let siblings: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|(name, f)| {
                let mut sibling = serde_json::json!({
                    "rfilename": name, "size": f.bytes.len(), "blobId": f.oid,
                });
                if f.bytes.len() >= LFS_MIN {
                    let sha = if self.lie_about_sha.load(Ordering::SeqCst) {
                        "0".repeat(64)
                    } else {
                        f.sha256.clone()
                    };
                    sibling["lfs"] =
                        serde_json::json!({"sha256": sha, "size": f.bytes.len(), "pointerSize": 134});
                }
                sibling
            })
            .collect();
        serde_json::json!({"id": REPO, "sha": COMMIT, "siblings": siblings}).to_string()
    }

    fn serve(self: Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let hub = self.clone();
                std::thread::spawn(move || hub.handle(stream.unwrap()));
            }
        });
        format!("http://{addr}")
    }

    fn handle(&self, mut stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let path = target.split('?').next().unwrap().to_string();
        let range = headers.get("range").cloned();
        self.log
            .lock()
            .unwrap()
            .push(format!("GET {path} {}", range.clone().unwrap_or_default()));
        if let Some(auth) = headers.get("authorization") {
            self.auth.lock().unwrap().push(auth.clone());
        }

        if path == format!("/api/models/{REPO}/revision/main") {
            return respond(
                &mut stream,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                self.info().as_bytes(),
            );
        }
        let Some(name) = path.strip_prefix(&format!("/{REPO}/resolve/main/")) else {
            return respond(&mut stream, "404 Not Found", &[], b"not found");
        };
        let Some(file) = self.files.get(name) else {
            return respond(
                &mut stream,
                "404 Not Found",
                &[("X-Error-Code", "EntryNotFound".into())],
                b"",
            );
        };
        let total = file.bytes.len() as u64;
        let lfs = file.bytes.len() >= LFS_MIN;
        let etag = if lfs { &file.sha256 } else { &file.oid };
        let mut common = vec![
            ("ETag", format!("\"{etag}\"")),
            ("X-Repo-Commit", COMMIT.to_string()),
            ("Accept-Ranges", "bytes".to_string()),
        ];
        if lfs {
            common.push(("X-Linked-Etag", format!("\"{etag}\"")));
            common.push(("X-Linked-Size", total.to_string()));
        }
        let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
            Some(spec) => {
                let (a, b) = spec.split_once('-').unwrap();
                let start: u64 = a.parse().unwrap();
                let end = b.parse::<u64>().map_or(total - 1, |e| e.min(total - 1));
                (start, end)
            }
            None => (0, total - 1),
        };
        let body = &file.bytes[start as usize..=end as usize];
        let status = if range.is_some() {
            "206 Partial Content"
        } else {
            "200 OK"
        };
        if range.is_some() {
            common.push(("Content-Range", format!("bytes {start}-{end}/{total}")));
        }
        let cut = start >= CHUNK
            && self
                .drops_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if cut {
            // Promise the whole range, send half, hang up.
            write_head(&mut stream, status, &common, body.len());
            let _ = stream.write_all(&body[..body.len() / 2]);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        respond(&mut stream, status, &common, body);
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn write_head(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], len: usize) {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    write_head(stream, status, headers, body.len());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn pull(endpoint: &str, hub_cache: &Path) -> std::process::Output {
    common::mlxd()
        .args(["pull", REPO])
        .env("HF_ENDPOINT", endpoint)
        .env("HF_TOKEN", "hf_test_token")
        .env("HF_HUB_CACHE", hub_cache)
        .env("HOME", hub_cache)
        .env_remove("HF_HOME")
        .env_remove("MLXD_CONFIG")
        .output()
        .unwrap()
}

/// Chunk transfers of model.safetensors (not the 1-byte metadata probes).
fn chunk_requests(hub: &Hub) -> Vec<String> {
    hub.requests()
        .into_iter()
        .filter(|r| r.contains("model.safetensors") && !r.ends_with("bytes=0-0"))
        .collect()
}

#[test]
fn an_interrupted_pull_resumes_and_the_model_runs_by_name() {
    let hub = Arc::new(Hub::load(common::tiny_model()));
    let weights = hub.files["model.safetensors"].bytes.len() as u64;
    assert!(
        weights > CHUNK + 1000,
        "the test needs two chunks: {weights} bytes"
    );
    let endpoint = hub.clone().serve();
    let cache = tempfile::tempdir().unwrap();

    // Every transfer of the second chunk breaks: the pull fails, keeping
    // the first chunk.
    hub.drops_left.store(usize::MAX, Ordering::SeqCst);
    let out = pull(&endpoint, cache.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("model.safetensors"), "{stderr}");
    let first = chunk_requests(&hub);
    assert_eq!(
        first
            .iter()
            .filter(|r| r.ends_with("bytes=0-9999999"))
            .count(),
        1,
        "{first:#?}"
    );
    assert!(
        first
            .iter()
            .filter(|r| r.contains("bytes=10000000-"))
            .count()
            >= 2,
        "{first:#?}"
    );

    // The next run resumes at the second chunk; its first try breaks too,
    // and the retry resumes again.
    hub.drops_left.store(1, Ordering::SeqCst);
    let out = pull(&endpoint, cache.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let all = chunk_requests(&hub);
    assert_eq!(
        all.iter()
            .filter(|r| r.ends_with("bytes=0-9999999"))
            .count(),
        1,
        "the first chunk was downloaded again: {all:#?}"
    );

    // The hub cache layout, as huggingface_hub writes it.
    let repo_dir = cache.path().join("models--test-org--tiny-model");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    let snapshot = repo_dir.join("snapshots").join(COMMIT);
    for (name, file) in &hub.files {
        let local = snapshot.join(name);
        assert!(
            local.is_symlink(),
            "{} is not a link into blobs",
            local.display()
        );
        assert_eq!(std::fs::read(&local).unwrap(), file.bytes, "{name}");
    }
    let weights_blob = repo_dir
        .join("blobs")
        .join(&hub.files["model.safetensors"].sha256);
    assert!(weights_blob.is_file());
    let auth = hub.auth.lock().unwrap().clone();
    assert!(
        !auth.is_empty() && auth.iter().all(|a| a == "Bearer hf_test_token"),
        "{auth:?}"
    );

    // Pulling again downloads nothing.
    let before = chunk_requests(&hub).len();
    let out = pull(&endpoint, cache.path());
    common::assert_success(&out);
    assert_eq!(chunk_requests(&hub).len(), before);

    // `mlxd ls` lists it; `mlxd run` serves it by name.
    let ls = common::mlxd()
        .arg("ls")
        .env("HF_HUB_CACHE", cache.path())
        .env("HOME", cache.path())
        .env_remove("MLXD_CONFIG")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success());
    let row = table
        .lines()
        .find(|l| l.starts_with(REPO))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" mlx ") && row.contains(" f32 "), "{row}");

    let run = common::mlxd()
        .args(["run", "-m", REPO, "-p", "hi", "-n", "4"])
        .env("HF_HUB_CACHE", cache.path())
        .env_remove("HF_HOME")
        .env_remove("MLXD_MODEL")
        .output()
        .unwrap();
    common::assert_success(&run);
}

#[test]
fn a_file_whose_hash_differs_from_the_hubs_is_rejected() {
    let hub = Arc::new(Hub::load(common::tiny_model()));
    hub.lie_about_sha.store(true, Ordering::SeqCst);
    let endpoint = hub.clone().serve();
    let cache = tempfile::tempdir().unwrap();
    let out = pull(&endpoint, cache.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("SHA-256"), "{stderr}");
    let link = cache
        .path()
        .join("models--test-org--tiny-model/snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert!(!link.exists(), "the bad file stayed in the snapshot");
}

#[test]
fn an_unknown_repository_fails_clearly() {
    let hub = Arc::new(Hub::default());
    let endpoint = hub.clone().serve();
    let cache = tempfile::tempdir().unwrap();
    let out = common::mlxd()
        .args(["pull", "nobody/nothing", "--hf-cache"])
        .arg(cache.path())
        .env("HF_ENDPOINT", &endpoint)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("nobody/nothing") && stderr.contains("404"),
        "{stderr}"
    );
}

/// One HTTP/1.0 request to the daemon (a body delimited by the closing
/// connection, never chunked): the status and the body.
fn http10(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::Read;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn ollamas_pull_route_downloads_with_ndjson_progress_and_the_model_answers() {
    let hub = Arc::new(Hub::load(common::tiny_model()));
    let endpoint = hub.clone().serve();
    let cache = tempfile::tempdir().unwrap();
    let (port, admin) = (common::free_port(), common::free_port());
    let mut daemon = common::isolated_serve(cache.path(), port, admin)
        .env("HF_ENDPOINT", &endpoint)
        .env("HF_TOKEN", "hf_test_token")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(common::wait_until(
        std::time::Duration::from_secs(60),
        || TcpStream::connect(("127.0.0.1", port)).is_ok()
    ));

    let (status, body) = http10(
        port,
        "POST",
        "/api/pull",
        &format!("{{\"model\": \"{REPO}\"}}"),
    );
    assert_eq!(status, 200, "{body}");
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["status"], "pulling manifest");
    assert_eq!(lines.last().unwrap()["status"], "success", "{body}");
    let weights = &hub.files["model.safetensors"];
    let done = lines
        .iter()
        .rfind(|l| l["digest"] == format!("sha256:{}", weights.sha256))
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(done["status"], format!("pulling {}", &weights.sha256[..12]));
    assert_eq!(done["completed"], weights.bytes.len() as u64);
    assert_eq!(done["total"], weights.bytes.len() as u64);
    let snapshot = cache
        .path()
        .join("models--test-org--tiny-model/snapshots")
        .join(COMMIT);
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors")).unwrap(),
        weights.bytes
    );

    // The pulled model is served by its name, tagged or not.
    let chat = format!(
        "{{\"model\": \"{REPO}:latest\", \"stream\": false, \"messages\": \
         [{{\"role\": \"user\", \"content\": \"hi\"}}], \"options\": {{\"num_predict\": 3}}}}"
    );
    let (status, body) = http10(port, "POST", "/api/chat", &chat);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["eval_count"],
        3
    );

    // A name that is no hub repository, and one the hub does not have.
    let (status, body) = http10(port, "POST", "/api/pull", "{\"model\": \"llama3\"}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http10(
        port,
        "POST",
        "/api/pull",
        "{\"model\": \"nobody/nothing\", \"stream\": false}",
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("nobody/nothing") && body.contains("404"),
        "{body}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
}
