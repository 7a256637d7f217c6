//! The machine as the configuration sees it: its memory (and the values
//! chosen by memory tier when the configuration leaves them unset), the
//! home directory and the default configuration path.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(not(target_os = "macos"))]
use anyhow::Context;
#[cfg(target_os = "macos")]
use anyhow::bail;

use super::KeepAlive;

/// The machine, as far as the configuration cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// Total memory in bytes.
    pub total_memory: u64,
}

/// Values chosen by the machine's memory when the configuration leaves them
/// unset. Three tiers, as the reference server had: machines with 64 GB or
/// more keep models loaded longer and give them more of the memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Auto {
    /// Which tier, for people: "≥64 GB", "24-63 GB", "<24 GB".
    pub tier: &'static str,
    pub keep_alive: KeepAlive,
    pub memory_fraction: f64,
}

impl Auto {
    /// The automatic values for a machine with `total` bytes of memory.
    pub fn for_memory(total: u64) -> Auto {
        const GB: u64 = 1 << 30;
        // Machines sold as "64 GB" report a little less than 64 GiB.
        let gb = (total + GB / 2) / GB;
        if gb >= 64 {
            Auto {
                tier: "≥64 GB",
                keep_alive: KeepAlive::For(Duration::from_secs(30 * 60)),
                memory_fraction: 0.75,
            }
        } else if gb >= 24 {
            Auto {
                tier: "24-63 GB",
                keep_alive: KeepAlive::For(Duration::from_secs(10 * 60)),
                memory_fraction: 0.65,
            }
        } else {
            Auto {
                tier: "<24 GB",
                keep_alive: KeepAlive::For(Duration::from_secs(5 * 60)),
                memory_fraction: 0.5,
            }
        }
    }
}

/// The user's home directory (`HOME`; `.` when unset).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// `23.5 GiB`: a memory size for people.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `~/x` → `$HOME/x`; other paths as they are.
pub fn expand_home(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// Where the configuration file is looked for when `--config` is not given:
/// `$XDG_CONFIG_HOME/mlxd/mlxd.toml`, else `~/.config/mlxd/mlxd.toml`.
pub fn default_config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map_or_else(|| home_dir().join(".config"), PathBuf::from);
    base.join("mlxd").join("mlxd.toml")
}

/// Total memory of this machine in bytes (`hw.memsize` on macOS,
/// `MemTotal` in `/proc/meminfo` on Linux).
pub fn total_memory() -> anyhow::Result<u64> {
    #[cfg(target_os = "macos")]
    {
        let mut size: u64 = 0;
        let mut len = std::mem::size_of::<u64>();
        // SAFETY: the name is a NUL-terminated C string; `size` and `len`
        // point to live locals of the size passed.
        let rc = unsafe {
            libc::sysctlbyname(
                c"hw.memsize".as_ptr(),
                (&raw mut size).cast(),
                &raw mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            bail!("sysctl hw.memsize: {}", std::io::Error::last_os_error());
        }
        Ok(size)
    }
    #[cfg(not(target_os = "macos"))]
    {
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        parse_meminfo(&meminfo).context("no MemTotal line in /proc/meminfo")
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
#[cfg_attr(target_os = "macos", allow(dead_code))]
pub(super) fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
