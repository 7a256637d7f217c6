//! Replays the `api_request` fuzz corpus (`fuzz/corpus/api_request`) and the
//! built-in seeds through the fuzz target's function: the quick form of the
//! fuzzing that `scripts/fuzz.sh` runs in full.

use std::path::{Path, PathBuf};

use api::fuzzing::{request_body, seeds};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/api_request")
}

#[test]
fn every_corpus_body_is_refused_cleanly_or_valid() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus folder")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus has its seeds");
    let (mut chats, mut completions) = (0, 0);
    for file in files {
        let body = std::fs::read(&file).expect("a corpus file");
        let (chat, completion) = std::panic::catch_unwind(|| request_body(&body))
            .unwrap_or_else(|_| panic!("{} breaks the parser", file.display()));
        chats += usize::from(chat);
        completions += usize::from(completion);
    }
    assert!(
        chats > 0 && completions > 0,
        "the corpus reaches both parsers"
    );
}

#[test]
fn every_seed_is_accepted_or_refused_as_documented() {
    for (name, body, want) in seeds() {
        assert_eq!(request_body(body.as_bytes()), want, "{name}");
    }
}

/// A repetition penalty beyond f32's range used to become an infinite
/// penalty that the worker protocol then refused (a 500 for a client
/// error); it is a 400 now.
#[test]
fn a_repetition_penalty_beyond_f32_is_a_400() {
    let chat =
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"repetition_penalty":1e300}"#;
    let completion = r#"{"model":"m","prompt":"x","repetition_penalty":3.5e38}"#;
    for err in [
        api::parse_chat(chat.as_bytes()).expect_err("refused"),
        api::parse_completion(completion.as_bytes()).expect_err("refused"),
    ] {
        assert_eq!(err.status(), 400);
        assert_eq!(err.param(), Some("repetition_penalty"));
    }
    // A huge penalty within f32's range is still a penalty.
    let big = r#"{"model":"m","prompt":"x","repetition_penalty":1e38}"#;
    assert!(api::parse_completion(big.as_bytes()).is_ok());
}

/// Writes the built-in seeds into the corpus folder:
/// `cargo test -p api --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes files into fuzz/corpus"]
fn write_seeds() {
    std::fs::create_dir_all(corpus_dir()).expect("corpus folder");
    for (name, body, _) in seeds() {
        std::fs::write(corpus_dir().join(format!("seed-{name}")), body).expect("write a seed");
    }
}
