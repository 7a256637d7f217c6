//! Value types of the configuration that plain TOML types do not cover:
//! byte sizes (`"16MiB"`, `"24GB"`), durations (`"10m"`, humantime's
//! syntax), Ollama's `keep_alive` (a duration, `-1` = never unload, `0` =
//! unload after each request), the memory budget (bytes or a fraction of
//! RAM) and the log format. Each parses from a string (flags, environment
//! variables) and deserializes from TOML, so a bad value in the file is
//! reported by `toml` with its line.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A TOML scalar before it is interpreted.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn describe(&self) -> String {
        match self {
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => format!("{s:?}"),
        }
    }
}

/// Deserializes `T` from a TOML string or number through its `FromStr`.
fn from_scalar<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let scalar = Scalar::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("expected a string or a number".to_string()))?;
    let text = match &scalar {
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => s.clone(),
    };
    text.parse()
        .map_err(|e| serde::de::Error::custom(format!("{} (got {})", e, scalar.describe())))
}

/// A number of bytes: an integer, or a number with a unit (`"16MiB"`,
/// `"24GB"`, `"1.5 GiB"`; `k`/`M`/`G`/`T` are powers of 1000 and
/// `Ki`/`Mi`/`Gi`/`Ti` powers of 1024, the trailing `B` is optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let invalid =
            || format!("invalid byte size {s:?}: expected e.g. 512, \"16MiB\" or \"24GB\"");
        if number.is_empty() {
            return Err(invalid());
        }
        let unit = unit.trim();
        let unit = unit
            .strip_suffix('B')
            .or_else(|| unit.strip_suffix('b'))
            .unwrap_or(unit);
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" => 1,
            "k" => 1_000,
            "m" => 1_000_000,
            "g" => 1_000_000_000,
            "t" => 1_000_000_000_000,
            "ki" => 1 << 10,
            "mi" => 1 << 20,
            "gi" => 1 << 30,
            "ti" => 1 << 40,
            _ => return Err(invalid()),
        };
        if let Ok(n) = number.parse::<u64>() {
            return n
                .checked_mul(multiplier)
                .map(ByteSize)
                .ok_or_else(|| format!("byte size {s:?} is too large"));
        }
        let x: f64 = number.parse().map_err(|_| invalid())?;
        let bytes = (x * multiplier as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("byte size {s:?} is too large"));
        }
        // In range and non-negative: the cast is exact up to rounding.
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact form: `16MiB`, `24GB`, or a plain integer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        const UNITS: [(u64, &str); 8] = [
            (1 << 40, "TiB"),
            (1_000_000_000_000, "TB"),
            (1 << 30, "GiB"),
            (1_000_000_000, "GB"),
            (1 << 20, "MiB"),
            (1_000_000, "MB"),
            (1 << 10, "KiB"),
            (1_000, "kB"),
        ];
        for (size, unit) in UNITS {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_scalar(d)
    }
}

/// A length of time in humantime's syntax (`"90s"`, `"10m"`, `"1h 30m"`),
/// or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(secs)));
        }
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {s:?} ({e}): expected e.g. \"90s\" or \"10m\""))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_scalar(d)
    }
}

/// How long a model stays loaded after its last request (Ollama's
/// `keep_alive`): a duration, `-1` (or any negative number) to keep it
/// loaded forever, `0` to unload it after each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never unload for idleness.
    Forever,
    /// Unload as soon as no request uses the model.
    Unload,
    /// Unload after this long without requests.
    For(Duration),
}

impl KeepAlive {
    #[allow(dead_code, reason = "read by the daemon's supervisor")]
    /// The idle time after which to unload; `None` = never.
    pub fn idle_timeout(self) -> Option<Duration> {
        match self {
            KeepAlive::Forever => None,
            KeepAlive::Unload => Some(Duration::ZERO),
            KeepAlive::For(d) => Some(d),
        }
    }
}

impl FromStr for KeepAlive {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return Ok(match n {
                n if n < 0 => KeepAlive::Forever,
                0 => KeepAlive::Unload,
                n => KeepAlive::For(Duration::from_secs(n.unsigned_abs())),
            });
        }
        if s.starts_with('-') {
            return Ok(KeepAlive::Forever);
        }
        let d = s.parse::<HumanDuration>().map_err(|_| {
            format!("invalid keep_alive {s:?}: expected a duration such as \"10m\", -1 or 0")
        })?;
        Ok(if d.0.is_zero() {
            KeepAlive::Unload
        } else {
            KeepAlive::For(d.0)
        })
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAlive::Forever => f.write_str("-1"),
            KeepAlive::Unload => f.write_str("0"),
            KeepAlive::For(d) => write!(f, "{}", HumanDuration(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_scalar(d)
    }
}

/// How much memory loaded models may use: a byte size, or a fraction of
/// the machine's memory (`0.75`, or `"75%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryBudget {
    Bytes(u64),
    Fraction(f64),
}

impl MemoryBudget {
    /// The budget in bytes on a machine with `total` bytes of memory.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MemoryBudget::Bytes(b) => b,
            // A fraction in (0, 1] of a u64: in range.
            MemoryBudget::Fraction(f) => (total as f64 * f) as u64,
        }
    }
}

impl FromStr for MemoryBudget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let fraction = if let Some(percent) = s.strip_suffix('%') {
            Some(percent.trim().parse::<f64>().map(|p| p / 100.0))
        } else if s.contains('.') && s.parse::<f64>().is_ok() {
            Some(s.parse::<f64>())
        } else {
            None
        };
        match fraction {
            Some(Ok(f)) if f > 0.0 && f <= 1.0 => Ok(MemoryBudget::Fraction(f)),
            Some(_) => Err(format!(
                "invalid memory_budget {s:?}: a fraction of memory must be in (0, 1]"
            )),
            None => match s.parse::<ByteSize>() {
                Ok(ByteSize(0)) => Err("memory_budget must be more than 0 bytes".to_string()),
                Ok(ByteSize(b)) => Ok(MemoryBudget::Bytes(b)),
                Err(_) => Err(format!(
                    "invalid memory_budget {s:?}: expected a size such as \"24GB\" or a \
                     fraction of memory such as 0.75"
                )),
            },
        }
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryBudget::Bytes(b) => write!(f, "{}", ByteSize(*b)),
            MemoryBudget::Fraction(x) => write!(f, "{x}"),
        }
    }
}

impl<'de> Deserialize<'de> for MemoryBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_scalar(d)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_decimal_and_binary_units() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("512"), Ok(512));
        assert_eq!(parse("16MiB"), Ok(16 << 20));
        assert_eq!(parse("24GB"), Ok(24_000_000_000));
        assert_eq!(parse("24 gb"), Ok(24_000_000_000));
        assert_eq!(parse("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse("2k"), Ok(2000));
        assert!(parse("").is_err());
        assert!(parse("12 parsecs").is_err());
        assert!(parse("-3MB").is_err());
        assert!(parse("99999999999TB").is_err());
    }

    #[test]
    fn byte_sizes_print_in_their_shortest_exact_form() {
        assert_eq!(ByteSize(16 << 20).to_string(), "16MiB");
        assert_eq!(ByteSize(24_000_000_000).to_string(), "24GB");
        assert_eq!(ByteSize(1234).to_string(), "1234");
    }

    #[test]
    fn keep_alive_follows_ollama() {
        let parse = |s: &str| s.parse::<KeepAlive>();
        assert_eq!(parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(parse("-1m"), Ok(KeepAlive::Forever));
        assert_eq!(parse("0"), Ok(KeepAlive::Unload));
        assert_eq!(parse("0s"), Ok(KeepAlive::Unload));
        assert_eq!(parse("300"), Ok(KeepAlive::For(Duration::from_secs(300))));
        assert_eq!(parse("10m"), Ok(KeepAlive::For(Duration::from_secs(600))));
        assert!(parse("soon").is_err());
        assert_eq!(KeepAlive::For(Duration::from_secs(600)).to_string(), "10m");
        assert_eq!(KeepAlive::Forever.idle_timeout(), None);
    }

    #[test]
    fn memory_budgets_are_sizes_or_fractions() {
        let parse = |s: &str| s.parse::<MemoryBudget>();
        assert_eq!(parse("0.75"), Ok(MemoryBudget::Fraction(0.75)));
        assert_eq!(parse("75%"), Ok(MemoryBudget::Fraction(0.75)));
        assert_eq!(parse("24GB"), Ok(MemoryBudget::Bytes(24_000_000_000)));
        assert!(parse("1.5").is_err());
        assert!(parse("0").is_err());
        assert!(parse("lots").is_err());
        assert_eq!(MemoryBudget::Fraction(0.5).bytes(64), 32);
    }

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(
            "90".parse::<HumanDuration>().map(|d| d.0),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(
            "10m".parse::<HumanDuration>().map(|d| d.0),
            Ok(Duration::from_secs(600))
        );
        assert!("ten".parse::<HumanDuration>().is_err());
    }
}
