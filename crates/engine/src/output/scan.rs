//! Marker search over streamed text with hold-back: the piece of text that
//! could still become a marker is kept until the next delta decides it, so
//! the result never depends on where the stream was split (the scheme of
//! [`crate::stop::StopMatcher`]).

/// Where the earliest of `markers` starts in `text`, and which one.
pub(crate) fn find_first(text: &str, markers: &[&str]) -> Option<(usize, usize)> {
    markers
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.is_empty())
        .filter_map(|(i, m)| text.find(m).map(|at| (at, i)))
        .min()
}

/// The length of the longest suffix of `text` that is a proper prefix of
/// one of `markers` (always on a character boundary of `text`).
pub(crate) fn partial_suffix(text: &str, markers: &[&str]) -> usize {
    let bytes = text.as_bytes();
    let mut keep = 0;
    for marker in markers {
        let marker = marker.as_bytes();
        let longest = bytes.len().min(marker.len().saturating_sub(1));
        for len in (keep + 1..=longest).rev() {
            if bytes[bytes.len() - len..] == marker[..len] {
                keep = len;
                break;
            }
        }
    }
    keep
}

/// Takes from `buf` the text before the first of `markers`. Returns the
/// text that is safe to emit and, when a marker was found, its index (the
/// marker itself is removed from `buf`). Without a marker, a suffix that
/// could begin one stays in `buf`.
pub(crate) fn take_until(buf: &mut String, markers: &[&str]) -> (String, Option<usize>) {
    if let Some((at, index)) = find_first(buf, markers) {
        let before = buf[..at].to_owned();
        buf.drain(..at + markers[index].len());
        return (before, Some(index));
    }
    let keep = partial_suffix(buf, markers);
    let emit = buf[..buf.len() - keep].to_owned();
    buf.drain(..buf.len() - keep);
    (emit, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_a_possible_marker() {
        let mut buf = String::from("abc<tool");
        assert_eq!(take_until(&mut buf, &["<tool_call>"]), ("abc".into(), None));
        assert_eq!(buf, "<tool");
        buf.push_str("_call>x");
        assert_eq!(
            take_until(&mut buf, &["<tool_call>"]),
            (String::new(), Some(0))
        );
        assert_eq!(buf, "x");
    }

    #[test]
    fn earliest_marker_wins() {
        let mut buf = String::from("a</b><c>");
        assert_eq!(
            take_until(&mut buf, &["<c>", "</b>"]),
            ("a".into(), Some(1))
        );
    }
}
