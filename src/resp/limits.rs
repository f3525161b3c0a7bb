//! How much one parser accepts, and whether it takes inline commands: the master-stream and
//! replica-stream presets.

/// Bounds and mode switches for one [`CommandParser`](super::CommandParser).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParserLimits {
    /// Largest accepted bulk string, in bytes. Redis's default `proto-max-bulk-len` is 512 MiB;
    /// if the master's was raised, raise this to match, or the proxy will reject writes the
    /// master accepted.
    pub max_bulk_len: usize,
    /// Largest accepted argument count of one multibulk command. The default, `i32::MAX`, is the
    /// bound recent Redis versions apply (older ones capped counts at 1,048,576); a lower cap
    /// could break replication of a legitimate huge `MSET` or `SADD` that the master accepted.
    /// Memory grows with the arguments actually received, not with the announced count, so a
    /// large limit is not an allocation risk.
    pub max_args: usize,
    /// Longest accepted inline line, excluding its `\n` (Redis: 64 KiB).
    pub max_inline_len: usize,
    /// Accept inline commands (see the module docs). When false, only multibulk frames and empty
    /// lines (`\n`, `\r\n`) are accepted.
    pub allow_inline: bool,
}

impl ParserLimits {
    /// Limits for the stream a master sends: multibulk and keepalive newlines only.
    pub const fn master_stream() -> Self {
        ParserLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: i32::MAX as usize,
            max_inline_len: 64 * 1024,
            allow_inline: false,
        }
    }

    /// Limits for what a replica sends: as [`ParserLimits::master_stream`], plus inline
    /// commands.
    pub const fn replica_stream() -> Self {
        ParserLimits {
            allow_inline: true,
            ..Self::master_stream()
        }
    }
}

impl Default for ParserLimits {
    /// The strict master-stream limits ([`ParserLimits::master_stream`]).
    fn default() -> Self {
        Self::master_stream()
    }
}
