//! Configuration of the Pika relay: where it listens, which master it fronts, where it keeps its
//! offset maps, and how it learns the TTLs of keys that existed before it started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Pika's default `binlog-file-size` (100 MiB); master and replica must use the same value.
pub const DEFAULT_BINLOG_FILE_SIZE: u64 = 100 * 1024 * 1024;

/// Offset between a Pika server's port P and its replication port.
pub const REPLICATION_PORT_OFFSET: u16 = 2000;

/// Offset between a Pika server's port P and its rsync2 full-sync file service.
pub const RSYNC_PORT_OFFSET: u16 = 10001;

/// How the relay learns the TTLs of keys written before it saw the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WarmupMode {
    /// Keys the stream has not defined stay unknown: their entries pass through unchanged.
    Off,
    /// Scan the master (SCAN + PTTL over its client port) once per upstream link.
    #[default]
    Scan,
}

/// Default bound on the keys without a TTL one warm-up records (see
/// [`PikaRelayConfig::warmup_max_keys`]).
pub const DEFAULT_WARMUP_MAX_KEYS: u64 = 10_000_000;

impl FromStr for WarmupMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(WarmupMode::Off),
            "scan" => Ok(WarmupMode::Scan),
            other => Err(format!("unknown warm-up mode '{other}' (known: off, scan)")),
        }
    }
}

/// Everything one Pika relay needs to run.
#[derive(Clone, Debug)]
pub struct PikaRelayConfig {
    /// The relay's own port P (its P+2000 and P+10001 are derived from it).
    pub listen: SocketAddr,
    /// The master's port P (its P+2000 and P+10001 are derived from it).
    pub master: SocketAddr,
    /// Directory for the persisted offset maps (one file per replica).
    pub state_dir: PathBuf,
    /// `requirepass` of the master, used only by the warm-up scan on port P.
    pub master_password: Option<String>,
    /// Warm-up mode.
    pub warmup: WarmupMode,
    /// Keys per second the warm-up may look up (SCAN results + PTTL), 0 = unlimited.
    pub warmup_rate: u32,
    /// Most keys *without* a TTL one warm-up records, so that the table knows they exist (an
    /// EXPIRE on such a key then gives it a deadline the proxy can restate). Past the bound the
    /// scan keeps only volatile keys and the table falls back to "no TTL, existence unknown"
    /// for the rest, which is counted and logged.
    pub warmup_max_keys: u64,
    /// Hold a write on a key whose state at that entry the stream does not tell (its TTL or
    /// existence unknown: before the warm-up reached it, after a removal, Pika 4.0's deadline
    /// second) and ask the master (`link/held.rs`), instead of passing it as `unknown_key`.
    pub look_ups: bool,
    /// Read ahead of a replica that applies late: behind a replica that has not acked for
    /// 100 ms, the relay acks what it forwarded to the master itself (every 20 ms) while less
    /// than this many bytes wait in the relay for the replica's socket, so the master keeps
    /// sending (and look-ups are asked) as it writes. 0 turns it off.
    pub read_ahead_bytes: usize,
    /// Before a replica's DBSync goes up, ask the master for `BGSAVE` and wait for it, so the
    /// replica is served a dump at the master's tip rather than an older one whose history it
    /// would replay through the relay (`fresh_dump.rs`).
    pub fresh_dump: bool,
    /// `binlog-file-size` of the master, to turn (filenum, offset) into a byte count for lag.
    pub binlog_file_size: u64,
    /// Largest accepted protobuf frame (Pika's limit is 512 MiB).
    pub max_frame_len: usize,
    /// Treat a stream that starts at master position 0/0 as starting from an empty data set, so
    /// the expiry table knows every key (existence included) from the first item. Pika logs
    /// every write, so a master at 0/0 has never logged one; but a master whose data was put in
    /// place without a binlog (e.g. restored files) would make this wrong, hence off by default.
    pub empty_at_origin: bool,
    /// How often a streaming DB link writes a checkpoint of its expiry table (when it moved on
    /// since the last one). After a crash, the table is brought from the checkpoint to the
    /// replica's resume position along the master's binlog; a longer interval means a longer
    /// catch-up, and a checkpoint the master has purged cannot be used.
    pub checkpoint_interval: Duration,
    /// How long a catch-up from a checkpoint may take before the link starts without it.
    pub catch_up_limit: Duration,
    /// Relay a master whose `pika_version` is not a release the proxy knows (its rewrite forms
    /// may then be wrong for it). Off: such a link is refused at its start with a clear error.
    pub allow_unknown_version: bool,
    /// Close a link when nothing arrives from the master for this long (Pika's replica gives up
    /// after 20 s; the relay waits a little longer so the replica's own timeout decides).
    pub upstream_idle_timeout: Duration,
    /// A streaming replica that sent no BinlogSync request (ack or ping) for this long has been
    /// dropped by the master (Pika's fixed 20 s), which may keep the connection open and
    /// silent: the relay then closes the link itself, so the replica shows as down at once.
    pub master_drop_after: Duration,
}

/// Default of [`PikaRelayConfig::read_ahead_bytes`]: a replica paused for 10 s under 100 000
/// writes/s of ~60-byte items is ~60 MiB behind.
pub const DEFAULT_READ_AHEAD_BYTES: usize = 64 << 20;

/// Largest [`PikaRelayConfig::read_ahead_bytes`]: a replica's offset map holds a pair per item
/// outstanding, and a Pika item is at least ~40 bytes, so this (plus what the master sends before
/// the relay stops reading) stays within the pairs a map file can hold (`map_store::MAX_PAIRS`).
pub const MAX_READ_AHEAD_BYTES: usize = 256 << 20;

/// Environment variable overriding [`PikaRelayConfig::master_drop_after`] (whole seconds):
/// for tests against a fake master with a shorter timeout; a real Pika master's is 20 s.
pub const MASTER_DROP_ENV: &str = "PIKA_TTL_PROXY_PIKA_MASTER_DROP_SECS";

impl PikaRelayConfig {
    /// A configuration with the documented defaults for everything but the addresses.
    pub fn new(listen: SocketAddr, master: SocketAddr, state_dir: PathBuf) -> Self {
        PikaRelayConfig {
            listen,
            master,
            state_dir,
            master_password: None,
            warmup: WarmupMode::Scan,
            warmup_rate: 50_000,
            warmup_max_keys: DEFAULT_WARMUP_MAX_KEYS,
            look_ups: true,
            read_ahead_bytes: DEFAULT_READ_AHEAD_BYTES,
            fresh_dump: true,
            binlog_file_size: DEFAULT_BINLOG_FILE_SIZE,
            max_frame_len: 512 * 1024 * 1024,
            empty_at_origin: false,
            allow_unknown_version: false,
            checkpoint_interval: Duration::from_secs(60),
            catch_up_limit: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(30),
            master_drop_after: Duration::from_secs(20),
        }
    }

    /// `addr` with its port moved by `delta`, or `None` when it would overflow.
    pub fn shifted(addr: SocketAddr, delta: u16) -> Option<SocketAddr> {
        let port = addr.port().checked_add(delta)?;
        let mut out = addr;
        out.set_port(port);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ports() {
        let a: SocketAddr = "127.0.0.1:9221".parse().unwrap();
        assert_eq!(
            PikaRelayConfig::shifted(a, REPLICATION_PORT_OFFSET)
                .unwrap()
                .port(),
            11221
        );
        assert_eq!(
            PikaRelayConfig::shifted(a, RSYNC_PORT_OFFSET)
                .unwrap()
                .port(),
            19222
        );
        let high: SocketAddr = "127.0.0.1:60000".parse().unwrap();
        assert!(PikaRelayConfig::shifted(high, RSYNC_PORT_OFFSET).is_none());
        assert_eq!("SCAN".parse::<WarmupMode>(), Ok(WarmupMode::Scan));
        assert!("x".parse::<WarmupMode>().is_err());
    }
}
