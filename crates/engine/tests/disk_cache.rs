//! The prompt cache's disk tier: a sequence's cache written by one
//! scheduler is a hit for a fresh one (a restarted worker) and gives the
//! tokens of a cold run; with recurrent layers only at an entry's exact
//! end; corrupt, truncated and other models' files are dropped and
//! deleted; the folder stays within its budget.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::batching::{Run, alone, ids, request, run};
use common::mlx_lm::load;
use engine::batch::{BatchConfig, Scheduler};
use engine::model::synthetic::Preset;
use engine::model::{KvArray, LayerSnapshot};
use engine::prefix_cache::{DiskConfig, DiskTier, ModelIdentity};
use engine::{Model, SamplingParams};
use mlx::Array;

fn tier(dir: &Path, budget: u64, model: u8, trimmable: bool) -> DiskTier {
    let config = DiskConfig {
        dir: dir.to_path_buf(),
        budget,
        model: ModelIdentity::from_bytes([model; 32]),
    };
    DiskTier::open(config, trimmable).unwrap()
}

fn scheduler<'m>(model: &'m Model, dir: &Path) -> Scheduler<'m> {
    let mut s = Scheduler::new(model, BatchConfig::default());
    s.attach_disk_cache(tier(dir, 1 << 30, 1, model.trimmable()));
    s
}

/// Runs request `id` on a fresh scheduler over the disk tier in `dir` (a
/// restarted worker), dropped when it returns: its writer has finished.
fn run_fresh(
    model: &Model,
    dir: &Path,
    id: u64,
    prompt: &[u32],
    params: &SamplingParams,
    n: usize,
) -> Run {
    let mut s = scheduler(model, dir);
    s.submit(request(model, id, prompt, params, n)).unwrap();
    run(&mut s, HashMap::new())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

fn dir_bytes(dir: &Path) -> u64 {
    files(dir)
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum()
}

#[test]
fn a_sequence_on_disk_is_a_hit_for_a_fresh_scheduler() {
    let model = Preset::find("tiny-f32").unwrap().build(7).unwrap();
    let root = tempfile::tempdir().unwrap();
    let params = SamplingParams::greedy();
    let history: Vec<u32> = (0..60u32).map(|i| (i * 13 + 7) % 256).collect();
    let n = 6;
    let first = run_fresh(&model, root.path(), 1, &history, &params, n);
    let mut turn2 = history.clone();
    turn2.extend(ids(&first.tokens[&1]));
    turn2.extend([9, 8, 7, 6, 5]);
    let warm = run_fresh(&model, root.path(), 2, &turn2, &params, n);
    // All but the answer's last token, whose KV was never computed.
    assert_eq!(warm.reports[&2].cached_tokens, history.len() + n - 1);
    assert_eq!(
        ids(&warm.tokens[&2]),
        ids(&alone(&model, &turn2, &params, n))
    );
    // A prompt branching off inside the stored sequence reuses its common
    // prefix (KV serves any prefix of itself).
    let mut branch = history[..40].to_vec();
    branch.extend([1, 2, 3, 4, 5, 6]);
    let got = run_fresh(&model, root.path(), 3, &branch, &params, n);
    assert_eq!(got.reports[&3].cached_tokens, 40);
    assert_eq!(
        ids(&got.tokens[&3]),
        ids(&alone(&model, &branch, &params, n))
    );
}

#[test]
fn a_recurrent_state_on_disk_serves_only_its_exact_prefix() {
    let model = load("qwen3_next_f32_interval2");
    assert!(!model.trimmable());
    let root = tempfile::tempdir().unwrap();
    let params = SamplingParams::greedy();
    let history: Vec<u32> = (0..50u32).map(|i| (i * 13 + 7) % 256).collect();
    let n = 4;
    let first = run_fresh(&model, root.path(), 1, &history, &params, n);
    let mut turn2 = history.clone();
    turn2.extend(ids(&first.tokens[&1]));
    turn2.extend([9, 8, 7, 6, 5]);
    let warm = run_fresh(&model, root.path(), 2, &turn2, &params, n);
    assert_eq!(warm.reports[&2].cached_tokens, history.len() + n - 1);
    assert_eq!(
        ids(&warm.tokens[&2]),
        ids(&alone(&model, &turn2, &params, n))
    );
    // The prompt sent again hits the state kept at its prompt's end.
    let again = run_fresh(&model, root.path(), 3, &history, &params, n);
    assert_eq!(again.reports[&3].cached_tokens, history.len() - 1);
    assert_eq!(ids(&again.tokens[&3]), ids(&first.tokens[&1]));
    // Branching off inside a stored sequence: its state cannot be cut back.
    let mut branch = history[..40].to_vec();
    branch.extend([1, 2, 3, 4, 5, 6]);
    let got = run_fresh(&model, root.path(), 4, &branch, &params, n);
    assert_eq!(got.reports[&4].cached_tokens, 0);
    assert_eq!(
        ids(&got.tokens[&4]),
        ids(&alone(&model, &branch, &params, n))
    );
}

/// One KV layer of `len` positions, every value `fill`.
fn layer(len: usize, fill: f32) -> Vec<LayerSnapshot> {
    let data = vec![fill; len * 2];
    let a = Array::from_slice(&data, &[1, 1, len as i32, 2]).unwrap();
    vec![LayerSnapshot::Kv(
        KvArray::Full(a.clone()),
        KvArray::Full(a),
        None,
    )]
}

fn seq(start: u32, len: u32) -> Vec<u32> {
    (start..start + len).collect()
}

#[test]
fn corrupt_truncated_and_foreign_files_are_deleted_never_loaded() {
    let root = tempfile::tempdir().unwrap();
    let folder = {
        let mut t = tier(root.path(), 1 << 20, 1, true);
        for (i, start) in [0, 100, 200].into_iter().enumerate() {
            t.store(&seq(start, 40), &layer(40, i as f32)).unwrap();
        }
        t.flush();
        t.dir().to_path_buf()
    };
    let stored = files(&folder);
    assert_eq!(stored.len(), 3);
    // One file corrupt (a flipped payload byte), one truncated, one whole;
    // a stray file; the whole one copied into another model's folder.
    let mut bytes = fs::read(&stored[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&stored[0], bytes).unwrap();
    let len = fs::metadata(&stored[1]).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&stored[1])
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    fs::write(folder.join("stray.kv"), b"not an entry").unwrap();
    // A whole entry under a name that is not its own (a mismatched file).
    fs::copy(&stored[2], folder.join("renamed.kv")).unwrap();
    let foreign_folder = tier(root.path(), 1 << 20, 2, true).dir().to_path_buf();
    fs::copy(&stored[2], foreign_folder.join("copied.kv")).unwrap();
    fs::copy(
        &stored[2],
        foreign_folder.join(stored[2].file_name().unwrap()),
    )
    .unwrap();

    // Opening drops what its headers show wrong: the truncated file, the
    // stray one and the renamed one.
    let mut t = tier(root.path(), 1 << 20, 1, true);
    assert_eq!(t.len(), 2);
    assert_eq!(files(&folder).len(), 2);
    // Reading finds the corrupt one: a miss, and deleted.
    let mut loaded = Vec::new();
    for start in [0, 100, 200] {
        let (n, at) = t.best(&seq(start, 50)).unwrap_or((0, 0));
        if n > 0
            && let Some((ids, layers)) = t.load(at)
        {
            loaded.push((start, ids, layers));
        }
    }
    t.flush();
    assert_eq!(loaded.len(), 1);
    let (start, ids, layers) = &loaded[0];
    assert_eq!(*ids, seq(*start, 40));
    let LayerSnapshot::Kv(KvArray::Full(k), ..) = &layers[0] else {
        panic!("a KV layer was stored");
    };
    assert_eq!(k.shape(), [1, 1, 40, 2]);
    let fill = (*start / 100) as f32;
    assert!(k.to_vec::<f32>().unwrap().iter().all(|&x| x == fill));
    assert_eq!(t.len(), 1);
    assert_eq!(files(&folder).len(), 1);
    drop(t);
    // The other model never loads this model's files.
    let other = tier(root.path(), 1 << 20, 2, true);
    assert!(other.is_empty());
    assert!(files(&foreign_folder).is_empty());
}

#[test]
fn the_folder_stays_within_its_budget_least_recently_used_first() {
    let root = tempfile::tempdir().unwrap();
    // An entry: 40 positions x 2 arrays x 2 floats x 4 bytes, plus header.
    let one = {
        let mut t = tier(root.path(), 1 << 20, 1, true);
        t.store(&seq(10_000, 40), &layer(40, 0.0)).unwrap();
        t.flush();
        let (bytes, folder) = (dir_bytes(t.dir()), t.dir().to_path_buf());
        drop(t);
        fs::remove_dir_all(folder).unwrap();
        bytes
    };
    let budget = one * 3 + one / 2;
    let mut t = tier(root.path(), budget, 1, true);
    for i in 0..20 {
        t.store(&seq(1000 * (i + 1), 40), &layer(40, i as f32))
            .unwrap();
        if i == 0 {
            // Staged, not written yet: a miss that keeps the entry.
            let (_, at) = t.best(&seq(1000, 40)).unwrap();
            assert!(t.load(at).is_none());
            assert_eq!(t.len(), 1);
        }
        if i == 10 {
            // Used now: the entry of i = 9 outlives the next two writes.
            let (_, at) = t.best(&seq(10_000, 40)).unwrap();
            assert!(t.load(at).is_some());
        }
        if i == 12 {
            assert!(t.best(&seq(10_000, 40)).is_some());
            assert!(t.best(&seq(11_000, 40)).is_none());
        }
        t.flush();
        assert!(dir_bytes(t.dir()) <= budget);
        assert_eq!(dir_bytes(t.dir()), t.bytes());
        // Last use is a file's modification time: apart from the next's.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(t.len(), 3);
    drop(t);
    // Reopened with a smaller budget: the least recently used go at once.
    let mut t = tier(root.path(), one * 2, 1, true);
    assert_eq!(t.len(), 2);
    assert!(t.best(&seq(20_000, 40)).is_some());
    assert!(t.best(&seq(19_000, 40)).is_some());
    t.flush();
    assert!(dir_bytes(t.dir()) <= one * 2);
}

#[test]
fn a_staged_entry_is_read_an_array_at_a_time_then_written() {
    let root = tempfile::tempdir().unwrap();
    let mut t = tier(root.path(), 1 << 20, 1, true);
    let mut layers = layer(40, 1.0);
    layers.extend(layer(40, 2.0));
    t.store(&seq(0, 40), &layers).unwrap();
    // Four arrays: one read per call of the smallest share.
    for _ in 0..4 {
        t.pump(1);
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(files(t.dir()).is_empty());
    let (_, at) = t.best(&seq(0, 50)).unwrap();
    assert!(t.load(at).is_none());
    // The next call hands it to the writer.
    t.pump(1);
    t.flush();
    assert_eq!(files(t.dir()).len(), 1);
    let (_, at) = t.best(&seq(0, 50)).unwrap();
    let (_, back) = t.load(at).unwrap();
    let LayerSnapshot::Kv(KvArray::Full(k), ..) = &back[1] else {
        panic!("a KV layer was stored");
    };
    assert!(k.to_vec::<f32>().unwrap().iter().all(|&x| x == 2.0));
}

/// One KV layer of `len` positions, position `p` holding `p` everywhere.
fn ramp(len: usize) -> Vec<LayerSnapshot> {
    let data: Vec<f32> = (0..len).flat_map(|p| [p as f32, p as f32]).collect();
    let a = Array::from_slice(&data, &[1, 1, len as i32, 2]).unwrap();
    vec![LayerSnapshot::Kv(
        KvArray::Full(a.clone()),
        KvArray::Full(a),
        None,
    )]
}

#[test]
fn an_extension_stores_only_its_new_positions_and_loads_as_one_chain() {
    let root = tempfile::tempdir().unwrap();
    let folder = {
        let mut t = tier(root.path(), 1 << 20, 1, true);
        for len in [40, 100, 150] {
            t.store(&seq(0, len), &ramp(len as usize)).unwrap();
        }
        t.flush();
        t.dir().to_path_buf()
    };
    // Each file holds its own positions: 16 bytes each, plus a header.
    let mut sizes: Vec<u64> = files(&folder)
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes.len(), 3);
    assert!(sizes[2] < 60 * 16 + 2048, "{sizes:?}");
    let mut t = tier(root.path(), 1 << 20, 1, true);
    assert_eq!(t.len(), 3);
    for (prompt, want) in [(seq(0, 160), 150), (seq(0, 120), 120), (seq(0, 45), 45)] {
        let (n, at) = t.best(&prompt).unwrap();
        assert_eq!(n, want);
        let (ids, layers) = t.load(at).unwrap();
        assert!(ids.len() >= n);
        let LayerSnapshot::Kv(KvArray::Full(k), ..) = &layers[0] else {
            panic!("a KV layer was stored");
        };
        let k = k.to_vec::<f32>().unwrap();
        assert_eq!(k.len(), ids.len() * 2);
        assert!(k.iter().enumerate().all(|(i, &x)| x == (i / 2) as f32));
    }
    // A branch off inside an entry (a chat's next turn, which re-tokenizes
    // the last answer) keeps only its positions past the shared prefix.
    let mut branch = seq(0, 60);
    branch.extend(seq(1000, 50));
    t.store(&branch, &ramp(110)).unwrap();
    t.flush();
    assert_eq!(files(&folder).len(), 4);
    let newest = files(&folder)
        .into_iter()
        .max_by_key(|f| fs::metadata(f).unwrap().modified().unwrap())
        .unwrap();
    assert!(fs::metadata(newest).unwrap().len() < 50 * 16 + 2048);
    let (n, at) = t.best(&branch).unwrap();
    assert_eq!(n, 110);
    let (ids, layers) = t.load(at).unwrap();
    assert_eq!(ids, branch);
    let LayerSnapshot::Kv(KvArray::Full(k), ..) = &layers[0] else {
        panic!("a KV layer was stored");
    };
    let k = k.to_vec::<f32>().unwrap();
    assert!(k.iter().enumerate().all(|(i, &x)| x == (i / 2) as f32));
    drop(t);
    // The root gone: the entries extending it go too.
    let root_file = files(&folder)
        .into_iter()
        .find(|f| {
            let bytes = fs::read(f).unwrap();
            String::from_utf8_lossy(&bytes).contains("\"start\":0,")
        })
        .unwrap();
    fs::remove_file(root_file).unwrap();
    let mut t = tier(root.path(), 1 << 20, 1, true);
    assert!(t.is_empty());
    t.flush();
    assert!(files(&folder).is_empty());
}

#[test]
fn a_corrupt_link_drops_its_chain_and_eviction_spares_the_chain_it_extends() {
    let root = tempfile::tempdir().unwrap();
    let mut t = tier(root.path(), 1 << 20, 1, true);
    t.store(&seq(0, 40), &ramp(40)).unwrap();
    t.store(&seq(0, 80), &ramp(80)).unwrap();
    t.flush();
    let folder = t.dir().to_path_buf();
    for f in files(&folder) {
        let mut bytes = fs::read(&f).unwrap();
        *bytes.last_mut().unwrap() ^= 0x40;
        fs::write(&f, bytes).unwrap();
    }
    let (_, at) = t.best(&seq(0, 90)).unwrap();
    assert!(t.load(at).is_none());
    t.flush();
    assert!(t.is_empty());
    assert!(files(&folder).is_empty());
    drop(t);
    // A budget of two entries and a little: writing a third (extending
    // the older one) evicts the other, not its own parent.
    let two = {
        let probe = tempfile::tempdir().unwrap();
        let mut t = tier(probe.path(), 1 << 20, 1, true);
        t.store(&seq(0, 40), &ramp(40)).unwrap();
        t.store(&seq(500, 40), &ramp(40)).unwrap();
        t.bytes()
    };
    // (The third's header, with its 80 token ids and its parent, is
    // larger than the others'.)
    let budget = two + 400;
    let mut t = tier(root.path(), budget, 1, true);
    t.store(&seq(0, 40), &ramp(40)).unwrap();
    t.store(&seq(500, 40), &ramp(40)).unwrap();
    t.store(&seq(0, 80), &ramp(80)).unwrap();
    t.flush();
    assert!(t.bytes() <= budget);
    assert_eq!(dir_bytes(t.dir()), t.bytes());
    assert!(t.best(&seq(500, 40)).is_none());
    let (n, at) = t.best(&seq(0, 90)).unwrap();
    assert_eq!(n, 80);
    assert_eq!(t.load(at).unwrap().0.len(), 80);
}
