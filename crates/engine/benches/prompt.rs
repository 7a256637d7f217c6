//! What the front-end spends on a request's prompt before it reaches a
//! worker: rendering the chat template and tokenizing the result, for the
//! tokenizers the test data holds (Qwen3's, which is Qwen2.5's vocabulary;
//! Llama 3's; Llama 2's), each timed two ways:
//!
//! * *warm*: back to back, as a microbenchmark sees it;
//! * *cold*: after a 256 MiB buffer was written and the thread slept 2 ms
//!   (an idle front-end between two requests, its caches taken by other
//!   work), as a server sees it.
//!
//! Prints a table (medians and p90 in µs). `--quick` takes fewer samples.
//! Needs the test data (`scripts/test-data.sh`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use engine::{ChatMessage, RenderOptions};

const MESSAGES: &str =
    r#"[{"role":"user","content":"What is the capital of France? Answer in one sentence."}]"#;

/// Median and p90 of `samples`, in µs.
fn quantiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(at(0.5)), us(at(0.9)))
}

/// Overwrites `buffer` (evicting the caches) and sleeps, as an idle
/// front-end does between requests.
fn go_cold(buffer: &mut [u8], round: u8) {
    for i in (0..buffer.len()).step_by(64) {
        buffer[i] = buffer[i].wrapping_add(round);
    }
    std::thread::sleep(Duration::from_millis(2));
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (warm_n, cold_n) = if quick { (200, 20) } else { (2000, 200) };
    let messages: Vec<ChatMessage> = serde_json::from_str(MESSAGES).expect("messages parse");
    let options = RenderOptions {
        add_generation_prompt: true,
        ..RenderOptions::default()
    };
    let mut buffer = vec![0u8; 256 << 20];
    println!(
        "{:<10} {:<6} {:>6} {:>14} {:>14} {:>14}",
        "tokenizer", "caches", "ids", "template p50", "tokenize p50", "both p90"
    );
    for (name, tokenizer) in [
        ("qwen3", &*common::QWEN3),
        ("llama3", &*common::LLAMA3),
        ("llama2", &*common::LLAMA2),
    ] {
        let once = || {
            let start = Instant::now();
            let text = tokenizer
                .apply_chat_template(&messages, &options)
                .expect("the template renders");
            let rendered = Instant::now();
            let ids = tokenizer.encode(&text, false).expect("the text encodes");
            (rendered - start, rendered.elapsed(), ids.len())
        };
        for _ in 0..50 {
            once();
        }
        for (caches, n) in [("warm", warm_n), ("cold", cold_n)] {
            let (mut template, mut tokenize, mut both) = (Vec::new(), Vec::new(), Vec::new());
            let mut ids = 0;
            for round in 0..n {
                if caches == "cold" {
                    go_cold(&mut buffer, round as u8);
                }
                let (t, e, len) = once();
                template.push(t);
                tokenize.push(e);
                both.push(t + e);
                ids = len;
            }
            println!(
                "{name:<10} {caches:<6} {ids:>6} {:>14.1} {:>14.1} {:>14.1}",
                quantiles(template).0,
                quantiles(tokenize).0,
                quantiles(both).1
            );
        }
    }
}
