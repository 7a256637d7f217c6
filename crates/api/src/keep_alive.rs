//! `keep_alive`: how long a model stays loaded after a request (an extension).
//!
//! Follows Ollama's API documentation for the same parameter: a number of
//! seconds, or a duration string such as `"5m"`, `"10s"`, `"1h30m"` or
//! `"250ms"` (Go's `time.ParseDuration` units `ms`, `s`, `m`, `h`); a bare
//! number in a string is seconds; any negative value keeps the model loaded
//! forever; zero unloads it once the request is done.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The parsed `keep_alive` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Negative: never unload for idleness.
    Forever,
    /// Zero: unload as soon as the request is done.
    UnloadAfterRequest,
    /// Unload after this much idle time.
    For(Duration),
}

impl KeepAlive {
    /// Parses a number of seconds.
    pub fn from_seconds(seconds: f64) -> Result<Self, String> {
        if seconds.is_nan() {
            return Err("keep_alive must be a number".to_owned());
        }
        if seconds < 0.0 {
            return Ok(KeepAlive::Forever);
        }
        if seconds == 0.0 {
            return Ok(KeepAlive::UnloadAfterRequest);
        }
        Duration::try_from_secs_f64(seconds)
            .map(KeepAlive::For)
            .map_err(|_| format!("keep_alive of {seconds} seconds is too large"))
    }

    /// Parses a duration string (`"5m"`, `"1h30m"`, `"-1"`, `"300"`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<f64>() {
            if seconds.is_finite() {
                return Self::from_seconds(seconds);
            }
        }
        let invalid = || {
            format!(
                "keep_alive must be a number of seconds or a duration such as \"5m\", \"30s\" \
                 or \"1h\", got {text:?}"
            )
        };
        let (negative, mut rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut seconds = 0.0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let value: f64 = rest[..digits].parse().map_err(|_| invalid())?;
            let unit_end = rest[digits..]
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .map_or(rest.len(), |i| digits + i);
            let scale = match &rest[digits..unit_end] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(invalid()),
            };
            seconds += value * scale;
            rest = &rest[unit_end..];
        }
        Self::from_seconds(if negative { -seconds } else { seconds })
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAlive::Forever => f.write_str("-1"),
            KeepAlive::UnloadAfterRequest => f.write_str("0"),
            KeepAlive::For(d) if d.subsec_millis() == 0 => write!(f, "{}s", d.as_secs()),
            KeepAlive::For(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

impl Serialize for KeepAlive {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            KeepAlive::Forever => serializer.serialize_i64(-1),
            KeepAlive::UnloadAfterRequest => serializer.serialize_i64(0),
            KeepAlive::For(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeepAliveVisitor)
    }
}

struct KeepAliveVisitor;

impl Visitor<'_> for KeepAliveVisitor {
    type Value = KeepAlive;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of seconds or a duration string such as \"5m\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeepAlive, E> {
        KeepAlive::from_seconds(v as f64).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeepAlive, E> {
        KeepAlive::from_seconds(v as f64).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeepAlive, E> {
        KeepAlive::from_seconds(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeepAlive, E> {
        KeepAlive::parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> KeepAlive {
        KeepAlive::For(Duration::from_secs(s))
    }

    #[test]
    fn durations_parse_like_ollama() {
        assert_eq!(KeepAlive::parse("5m"), Ok(secs(300)));
        assert_eq!(KeepAlive::parse("10s"), Ok(secs(10)));
        assert_eq!(KeepAlive::parse("1h"), Ok(secs(3600)));
        assert_eq!(KeepAlive::parse("1h30m"), Ok(secs(5400)));
        assert_eq!(KeepAlive::parse("1.5m"), Ok(secs(90)));
        assert_eq!(
            KeepAlive::parse("250ms"),
            Ok(KeepAlive::For(Duration::from_millis(250)))
        );
        assert_eq!(KeepAlive::parse("300"), Ok(secs(300)));
        assert_eq!(KeepAlive::parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("-5m"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("0"), Ok(KeepAlive::UnloadAfterRequest));
        assert_eq!(KeepAlive::parse("0s"), Ok(KeepAlive::UnloadAfterRequest));
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in ["", "m", "5x", "5 m", "five", "5m3", "--1", "1e999"] {
            assert!(KeepAlive::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn display_round_trips() {
        for value in [
            KeepAlive::Forever,
            KeepAlive::UnloadAfterRequest,
            secs(90),
            KeepAlive::For(Duration::from_millis(1500)),
        ] {
            assert_eq!(KeepAlive::parse(&value.to_string()), Ok(value));
        }
    }
}
