//! The streaming detokenizer against `decode(all_ids)` on real tokenizers.

mod common;

use std::sync::Arc;

use common::{LLAMA2, LLAMA3, QWEN3};
use engine::{FinishReason, StreamingDetokenizer, TextStream, Tokenizer};
use proptest::prelude::*;

const TEXTS: &[&str] = &[
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "مرحبا بالعالم، كيف حالك؟ שלום עולם",
    "e\u{301} cafe\u{301} naïve Zoë a\u{308}\u{301} ṩ",
    "👩‍👩‍👧‍👦 family, 🇫🇷 flag, 👍🏽 thumbs, 🏳️‍🌈 and 🦙.cpp",
    "កាន់តែពិសេសអាចខលចេញ ภาษาไทย देवनागरी",
    "   leading spaces\n\n\ttabs and\r\nnewlines   ",
    "rare CJK 𠜎𠜱𠝹 and math 𝔸𝕓𝒸 ∮ ⅀ plus ꙮ",
    " a",
    "",
];

/// Feeds ids one at a time; checks every delta and the concatenation.
fn check_stream(tok: &Arc<Tokenizer>, ids: &[u32], skip_special: bool) -> Result<(), String> {
    let want = tok.decode(ids, skip_special).map_err(|e| e.to_string())?;
    let mut detok = StreamingDetokenizer::new(Arc::clone(tok), skip_special);
    let mut got = String::new();
    for &id in ids {
        let delta = detok.push(id).map_err(|e| e.to_string())?;
        if delta.contains('\u{FFFD}') && !want.contains('\u{FFFD}') {
            return Err(format!("delta {delta:?} has U+FFFD; ids {ids:?}"));
        }
        got.push_str(&delta);
    }
    got.push_str(&detok.finish().map_err(|e| e.to_string())?);
    if got != want {
        return Err(format!("streamed {got:?} != decoded {want:?}; ids {ids:?}"));
    }
    Ok(())
}

fn check_texts(tok: &Arc<Tokenizer>) {
    for text in TEXTS {
        for add_special in [false, true] {
            let ids = tok.encode(text, add_special).expect("encodes");
            for skip in [false, true] {
                check_stream(tok, &ids, skip).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            }
        }
    }
}

#[test]
fn qwen3_stream_equals_decode() {
    check_texts(&QWEN3);
}

#[test]
fn llama3_stream_equals_decode() {
    check_texts(&LLAMA3);
}

#[test]
fn llama2_stream_equals_decode() {
    check_texts(&LLAMA2);
}

#[test]
fn llama2_texts_exercise_byte_fallback() {
    let ids = LLAMA2.encode("𠜎 👩‍👩‍👧", false).expect("encodes");
    let bytes = ids
        .iter()
        .filter(|&&id| {
            LLAMA2
                .id_to_token(id)
                .is_some_and(|t| t.starts_with("<0x") && t.ends_with('>'))
        })
        .count();
    assert!(bytes >= 8, "expected byte-fallback tokens in {ids:?}");
}

#[test]
fn multi_token_characters_are_held_back_until_complete() {
    // One emoji that the byte-level tokenizers split into several tokens.
    let tok = &*LLAMA3;
    let ids = tok.encode("🦙", false).expect("encodes");
    assert!(ids.len() > 1, "🦙 should span several tokens: {ids:?}");
    let mut detok = StreamingDetokenizer::new(Arc::clone(tok), false);
    let deltas: Vec<String> = ids
        .iter()
        .map(|&id| detok.push(id).expect("decodes"))
        .collect();
    assert!(
        deltas[..deltas.len() - 1].iter().all(String::is_empty),
        "{deltas:?}"
    );
    assert_eq!(deltas.last().map(String::as_str), Some("🦙"));
}

#[test]
fn window_stays_short_on_long_streams() {
    let text = TEXTS.concat().repeat(20);
    for tok in [&*QWEN3, &*LLAMA2] {
        let ids = tok.encode(&text, false).expect("encodes");
        let mut detok = StreamingDetokenizer::new(Arc::clone(tok), true);
        let mut widest = 0;
        for &id in &ids {
            detok.push(id).expect("decodes");
            widest = widest.max(detok.window_len());
        }
        assert_eq!(detok.len(), ids.len());
        assert!(
            widest <= 16,
            "window grew to {widest} ids over {} ids",
            ids.len()
        );
    }
}

#[test]
fn text_stream_stops_on_eos_and_on_stop_strings() {
    let tok = &*QWEN3;
    let mut ids = tok.encode("Paris is nice.", false).expect("encodes");
    ids.push(151645); // <|im_end|>
    ids.extend(tok.encode(" never shown", false).expect("encodes"));
    let mut stream = TextStream::new(Arc::clone(tok), Vec::new(), &[]);
    let mut text = String::new();
    let mut finish = None;
    for id in ids {
        let step = stream.push(id).expect("decodes");
        text.push_str(&step.text);
        finish = finish.or(step.finish);
    }
    assert_eq!(text, "Paris is nice.");
    assert_eq!(finish, Some(FinishReason::Eos(151645)));

    let ids = tok.encode("One. Two. Three.", false).expect("encodes");
    let mut stream = TextStream::new(Arc::clone(tok), vec![" Thr".into()], &[]);
    let mut text = String::new();
    for id in ids {
        let step = stream.push(id).expect("decodes");
        text.push_str(&step.text);
        if step.finish.is_some() {
            break;
        }
    }
    assert_eq!(text, "One. Two.");
    assert_eq!(stream.finish_reason(), Some(FinishReason::StopString(0)));
    assert_eq!(stream.finish().expect("finishes"), "");
}

const CHARS: &[&str] = &[
    "a",
    "b",
    " ",
    "  ",
    "\n",
    "\t",
    "é",
    "e\u{301}",
    "中",
    "文",
    "𠜎",
    "ع",
    "ب",
    "👩‍👧",
    "🦙",
    "🏽",
    "ñ",
    "ß",
    "!",
    "?",
    "1",
    "23",
    "ภ",
    "ក",
    "▁",
    "<",
    "s>",
];

fn text_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(CHARS), 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn stream_equals_decode_for_random_text(text in text_strategy(), skip in any::<bool>()) {
        for tok in [&*QWEN3, &*LLAMA3, &*LLAMA2] {
            let ids = tok.encode(&text, true).expect("encodes");
            prop_assert_eq!(check_stream(tok, &ids, skip), Ok(()));
        }
    }

    #[test]
    fn stream_equals_decode_for_random_ids(ids in proptest::collection::vec(0u32..32000, 0..24)) {
        // Arbitrary ids need not form valid UTF-8: only exactness is checked
        // when the full decode has no replacement character.
        for tok in [&*QWEN3, &*LLAMA3, &*LLAMA2] {
            let full = tok.decode(&ids, false).expect("decodes");
            if !full.contains('\u{FFFD}') {
                prop_assert_eq!(check_stream(tok, &ids, false), Ok(()));
            }
        }
    }
}

#[test]
fn kept_special_tokens_are_written_and_others_skipped() {
    let tok = &*QWEN3;
    let start = tok.token_to_id("<|im_start|>").expect("a special token");
    let text = "Hi 東京<|im_start|>there<|endoftext|> again";
    let ids = tok.encode(text, false).expect("encodes");
    assert!(ids.contains(&start));
    let run = |keep: Vec<u32>| {
        let mut stream = TextStream::new(Arc::clone(tok), Vec::new(), &[]);
        stream.ignore_eos();
        stream.keep_special_ids(keep);
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&stream.push(id).expect("decodes").text);
        }
        out + &stream.finish().expect("finishes")
    };
    assert_eq!(run(Vec::new()), "Hi 東京there again");
    assert_eq!(run(vec![start]), "Hi 東京<|im_start|>there again");
}
