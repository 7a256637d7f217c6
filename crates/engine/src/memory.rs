//! How much KV cache a worker's batch is given when the configuration
//! leaves it to the model: one rule, which the worker applies to the model
//! it loaded and the daemon's memory admission applies to the model's
//! shape, so that both count the same bytes. And how much memory the
//! operating system has free now ([`available_bytes`]), which both
//! admissions also respect: a budget says what mlxd may take, the system
//! says what is there (other programs take memory too).

/// Positions of KV the batch keeps room for, per sequence it decodes at
/// once, when sized from the model: `max_batch` sequences of this many
/// tokens (prompt and completion) on average. Longer requests still run:
/// the batch takes fewer of them at a time.
pub const KV_TOKENS_PER_SEQUENCE: u64 = 1024;

/// Bytes of KV a batch may hold when sized from its model: room for
/// `tokens` positions of `bytes_per_position` each, at most `cap`, and
/// never less than one full `context` (the longest request the model
/// serves must fit alone).
pub fn batch_kv_bytes(bytes_per_position: u64, context: u64, tokens: u64, cap: u64) -> u64 {
    let one_context = bytes_per_position.saturating_mul(context);
    bytes_per_position
        .saturating_mul(tokens)
        .min(cap)
        .max(one_context)
}

/// Bytes one `head_dim`-wide head of one cached position takes: at full
/// precision `value_bytes` a value, or quantized (`quant`: bits and group
/// size, as mlx-lm's `QuantizedKVCache` stores it) the packed codes and a
/// scale and a bias of `value_bytes` per group. Bytes per position are
/// this times K and V, KV heads and attention layers; the worker's KV
/// budget (`Model::kv_bytes_per_position`) and admission's estimate both
/// count it so.
pub fn kv_head_bytes(head_dim: u64, value_bytes: u64, quant: Option<(u32, u32)>) -> u64 {
    match quant {
        None => head_dim * value_bytes,
        Some((bits, group)) => {
            head_dim * u64::from(bits) / 8 + 2 * (head_dim / u64::from(group.max(1))) * value_bytes
        }
    }
}

/// Memory kept free for the system and a step's activations when the
/// admissions count what the operating system has available.
pub const SYSTEM_RESERVE: u64 = 512 << 20;

/// Where an admission learns how much memory is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeMemory {
    /// What the operating system reports as available now
    /// ([`available_bytes`]).
    System,
    /// This many bytes, whatever the system says (tests).
    Fixed(u64),
    /// A machine with this many bytes free before MLX allocated anything:
    /// free now is that less MLX's active memory (tests of a process that
    /// allocates as it goes).
    BeforeMlx(u64),
    /// Not counted: only the configured budgets and MLX's limit.
    Ignored,
}

impl FreeMemory {
    /// The bytes free now, if counted and known.
    pub fn bytes(self) -> Option<u64> {
        match self {
            FreeMemory::System => available_bytes(),
            FreeMemory::Fixed(n) => Some(n),
            FreeMemory::BeforeMlx(n) => Some(n.saturating_sub(mlx::memory::stats().active as u64)),
            FreeMemory::Ignored => None,
        }
    }

    /// Whether `adding` more bytes leave [`SYSTEM_RESERVE`] free (true
    /// when free memory is not counted or cannot be read).
    pub fn has_room_for(self, adding: u64) -> bool {
        self.bytes()
            .is_none_or(|free| adding.saturating_add(SYSTEM_RESERVE) <= free)
    }
}

/// Memory the operating system can give to new allocations now, in bytes:
/// `MemAvailable` of `/proc/meminfo` on Linux (free memory plus the page
/// cache and reclaimable slabs the kernel can drop, its own estimate), and
/// on macOS the free (less speculative) and inactive pages of
/// `host_statistics64`, as psutil counts "available". `None` if
/// unreadable.
pub fn available_bytes() -> Option<u64> {
    #[cfg(target_os = "macos")]
    {
        macos_available()
    }
    #[cfg(not(target_os = "macos"))]
    {
        parse_mem_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => kib.checked_mul(1024),
        Some(_) => None,
    }
}

#[cfg(target_os = "macos")]
fn macos_available() -> Option<u64> {
    let mut stats = std::mem::MaybeUninit::<libc::vm_statistics64>::zeroed();
    let mut count = libc::HOST_VM_INFO64_COUNT;
    // SAFETY: `stats` is a live, zeroed `vm_statistics64` and `count` holds
    // its size in 32-bit words, as HOST_VM_INFO64 requires; the kernel
    // writes at most `count` words. `mach_host_self` takes no arguments
    // (deprecated in libc in favour of another crate, not unsound).
    let rc = unsafe {
        #[allow(deprecated)]
        let host = libc::mach_host_self();
        libc::host_statistics64(
            host,
            libc::HOST_VM_INFO64,
            stats.as_mut_ptr().cast(),
            &raw mut count,
        )
    };
    if rc != libc::KERN_SUCCESS {
        return None;
    }
    // SAFETY: the call succeeded, so the kernel filled `stats` (and zeroed
    // memory is a valid `vm_statistics64` anyway); `vm_page_size` is a
    // constant the kernel sets at start-up.
    let (stats, page) = unsafe { (stats.assume_init(), libc::vm_page_size as u64) };
    let free = u64::from(stats.free_count).saturating_sub(u64::from(stats.speculative_count));
    Some((free + u64::from(stats.inactive_count)) * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_the_tokens_between_one_context_and_the_cap() {
        // 1 KiB a position, a 4,096-token context.
        let kv = |tokens, cap| batch_kv_bytes(1024, 4096, tokens, cap);
        assert_eq!(kv(32 * 1024, u64::MAX), 32 << 20);
        assert_eq!(kv(32 * 1024, 8 << 20), 8 << 20);
        // The floor wins over the cap and over fewer tokens.
        assert_eq!(kv(1024, u64::MAX), 4 << 20);
        assert_eq!(kv(32 * 1024, 1 << 20), 4 << 20);
        assert_eq!(batch_kv_bytes(u64::MAX, 2, 2, 1), u64::MAX);
    }

    #[test]
    fn a_quantized_head_takes_its_codes_and_a_scale_and_bias_per_group() {
        // 128 bf16 values: 256 bytes; 8 bits in groups of 64: 128 + 2 × 2 × 2.
        assert_eq!(kv_head_bytes(128, 2, None), 256);
        assert_eq!(kv_head_bytes(128, 2, Some((8, 64))), 136);
        assert_eq!(kv_head_bytes(128, 2, Some((4, 64))), 72);
        assert_eq!(kv_head_bytes(128, 2, Some((4, 32))), 80);
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text =
            "MemTotal:       131890012 kB\nMemFree:         1000 kB\nMemAvailable:   20480 kB\n";
        assert_eq!(parse_mem_available(text), Some(20 << 20));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: 5 MB\n"), None);
    }

    #[test]
    fn room_leaves_the_reserve_free() {
        assert!(!FreeMemory::Fixed(SYSTEM_RESERVE).has_room_for(1));
        assert!(FreeMemory::Ignored.has_room_for(u64::MAX));
        // This machine reports something, and more than nothing.
        assert!(FreeMemory::System.bytes().is_some_and(|b| b > 0));
    }
}
