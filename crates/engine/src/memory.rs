//! How much KV cache a worker's batch is given when the configuration
//! leaves it to the model: one rule, which the worker applies to the model
//! it loaded and the daemon's memory admission applies to the model's
//! shape, so that both count the same bytes.

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
}
