//! Replays the `protocol_messages` fuzz corpus
//! (`fuzz/corpus/protocol_messages`) and the built-in seeds through the fuzz
//! target's function: the quick form of the fuzzing that `scripts/fuzz.sh`
//! runs in full.

use std::path::{Path, PathBuf};

use protocol::fuzzing::{Outcome, frames, seeds};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/protocol_messages")
}

#[test]
fn every_corpus_input_decodes_without_breaking_an_invariant() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus folder")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 7, "the corpus has its seeds");
    let mut total = Outcome::default();
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| frames(&data))
            .unwrap_or_else(|_| panic!("{} breaks a decoder", file.display()));
        total.requests += outcome.requests;
        total.events += outcome.events;
        total.submits += outcome.submits;
    }
    assert!(
        total.requests > 0 && total.events > 0 && total.submits > 0,
        "the corpus reaches every decoder: {total:?}"
    );
}

#[test]
fn every_seed_decodes_to_what_was_encoded() {
    for (name, data, want) in seeds() {
        assert_eq!(frames(&data), want, "{name}");
    }
}

#[test]
fn a_seed_cut_short_decodes_less_and_never_panics() {
    for (name, data, want) in seeds() {
        for cut in 0..data.len() {
            let got = frames(&data[..cut]);
            assert!(
                got.requests <= want.requests && got.events <= want.events,
                "{name} cut at {cut}: {got:?}"
            );
        }
    }
}

/// Writes the built-in seeds into the corpus folder:
/// `cargo test -p protocol --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes files into fuzz/corpus"]
fn write_seeds() {
    std::fs::create_dir_all(corpus_dir()).expect("corpus folder");
    for (name, data, _) in seeds() {
        std::fs::write(corpus_dir().join(format!("seed-{name}")), data).expect("write a seed");
    }
}
