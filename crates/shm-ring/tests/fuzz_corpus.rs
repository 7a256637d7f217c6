//! Replays the `ring_frames` fuzz corpus (`fuzz/corpus/ring_frames`) and the
//! built-in seeds through the fuzz target's function: the quick form of the
//! fuzzing that `scripts/fuzz.sh` runs in full.

use std::path::{Path, PathBuf};

use shm_ring::fuzzing::{ring_frames, seeds};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_decodes_without_breaking_an_invariant() {
    let files = corpus("ring_frames");
    assert!(files.len() >= 10, "the corpus has its seeds");
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| ring_frames(&data));
        assert!(outcome.is_ok(), "{} breaks the decoder", file.display());
    }
}

#[test]
fn every_frame_a_producer_writes_is_read_back() {
    for (name, data, frames) in seeds() {
        assert_eq!(ring_frames(&data), frames, "{name}");
    }
}

#[test]
fn a_frame_of_a_kind_above_the_limit_ends_the_reading() {
    let (name, mut data, frames) = seeds()
        .into_iter()
        .find(|(_, _, frames)| *frames > 1)
        .expect("a seed of several frames");
    assert_eq!(ring_frames(&data), frames, "{name}");
    // The first operation writes the first frame from offset 0 of its
    // bytes: 2 bytes of start, then op, offset (2) and count; the kind
    // follows the frame's 4-byte length.
    let kind_at = 2 + 1 + 2 + 1 + 4;
    data[kind_at] = 0xff;
    assert_eq!(ring_frames(&data), 0, "{name} with a forged kind");
}

/// Writes the built-in seeds into the corpus folder:
/// `cargo test -p shm-ring --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes files into fuzz/corpus"]
fn write_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ring_frames");
    std::fs::create_dir_all(&dir).expect("corpus folder");
    for (name, data, _) in seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write a seed");
    }
}
