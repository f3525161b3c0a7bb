//! The command line: the subcommands and their flags, each flag also read from its
//! `PIKA_TTL_PROXY_…` environment variable.

use super::*;
use clap::{Args, Parser, Subcommand};

/// pika-ttl-proxy: makes key expiry replicate deterministically from a Pika or Redis master.
#[derive(Debug, Parser)]
#[command(name = "pika-ttl-proxy", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Relay between a Redis (7.x) or Valkey master and its replicas (`replicaof <listen>`).
    Redis(RedisArgs),
    /// Relay between a Pika (3.1+) master and its replicas (`slaveof <listen>`); serves the
    /// listen port P, P+2000 (replication) and P+10001 (full-sync files).
    Pika(PikaArgs),
    /// List or switch rewriting per command family on a running proxy.
    Families(FamiliesArgs),
    /// Exit 0 when the proxy's admin API answers /healthz (for container health checks).
    Healthcheck(AdminClientArgs),
    /// Replay a recorded stream (`<unix-ms> <redis-cli --replica CSV>` lines) into the reference
    /// model of a replica that expires keys by its own clock, and print what it keeps.
    ModelReplay(ModelReplayArgs),
}

/// Flags of `pika-ttl-proxy redis|pika`: the flags both relays take, and (skipped by clap,
/// filled from [`RedisArgs`] or [`PikaArgs`]) those of one relay, so that each subcommand's
/// help lists only what it reads.
#[derive(Debug, Args, Default)]
pub struct RelayArgs {
    /// Address replicas connect to (their `replicaof`/`slaveof` target). Pika mode also serves
    /// port+2000 and port+10001 on the same host.
    #[arg(long, env = "PIKA_TTL_PROXY_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// The real master's address (its client port).
    #[arg(long, env = "PIKA_TTL_PROXY_MASTER", value_name = "HOST:PORT")]
    pub master: Option<String>,
    /// Admin HTTP API address (/metrics, /healthz, /readyz, /families) [default: 127.0.0.1:9121].
    /// A non-loopback address requires an admin token.
    #[arg(long, env = "PIKA_TTL_PROXY_ADMIN", value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// Directory for persisted replication state (offset maps, replication ids).
    #[arg(long, env = "PIKA_TTL_PROXY_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Optional TOML file with the same settings (keys as the flags, with `_` for `-`, and a
    /// `[families]` table of `name = true|false`). Flags and env vars override it.
    #[arg(long, env = "PIKA_TTL_PROXY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "PIKA_TTL_PROXY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info`, `debug`, `pika_ttl_proxy=debug` [default: info].
    #[arg(long, env = "PIKA_TTL_PROXY_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Bearer token required by mutating admin calls (prefer the file or the env var).
    #[arg(long, env = "PIKA_TTL_PROXY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin bearer token.
    #[arg(long, env = "PIKA_TTL_PROXY_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Start with this command family's rewriting switched off (repeatable; the env var takes a
    /// comma-separated list). Families: string-counter, string-append, string-set, expire, hash,
    /// list, set, zset.
    #[arg(
        long = "disable-family",
        env = "PIKA_TTL_PROXY_DISABLE_FAMILIES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub disable_family: Vec<String>,
    /// Password for the proxy's own AUTH to the master (prefer the file or the env var).
    #[arg(long, env = "PIKA_TTL_PROXY_MASTER_PASSWORD", hide_env_values = true)]
    pub master_password: Option<String>,
    /// File holding the master password.
    #[arg(long, env = "PIKA_TTL_PROXY_MASTER_PASSWORD_FILE", value_name = "FILE")]
    pub master_password_file: Option<PathBuf>,
    /// Redis: user for the proxy's own AUTH to the master (from [`RedisArgs`]).
    #[arg(skip)]
    pub master_user: Option<String>,
    /// Redis: per-replica output limit (from [`RedisArgs`]).
    #[arg(skip)]
    pub replica_output_buffer_limit: Option<u64>,
    /// Pika: the master's binlog file size (from [`PikaArgs`]).
    #[arg(skip)]
    pub binlog_file_size: Option<u64>,
    /// Pika: warm-up mode (from [`PikaArgs`]).
    #[arg(skip)]
    pub warmup: Option<String>,
    /// Pika: warm-up rate (from [`PikaArgs`]).
    #[arg(skip)]
    pub warmup_rate: Option<u32>,
    /// Pika: warm-up bound on keys without a TTL (from [`PikaArgs`]).
    #[arg(skip)]
    pub warmup_max_keys: Option<u64>,
    /// Pika: look-ups on the master (from [`PikaArgs`]).
    #[arg(skip)]
    pub look_ups: Option<String>,
    /// Pika: the read-ahead's bound (from [`PikaArgs`]).
    #[arg(skip)]
    pub read_ahead_bytes: Option<u64>,
    /// Pika: a fresh dump for each full sync (from [`PikaArgs`]).
    #[arg(skip)]
    pub fresh_dump: Option<String>,
    /// Pika: relay an unknown master release (from [`PikaArgs`]).
    #[arg(skip)]
    pub allow_unknown_pika_version: bool,
    /// Seconds between checkpoints of each replica's expiry table (per DB on Pika); after a
    /// crash the table is brought from its checkpoint to the replica's resume position along
    /// the master's binlog (Pika) or replication backlog (Redis) [default: 60].
    #[arg(long, env = "PIKA_TTL_PROXY_CHECKPOINT_INTERVAL", value_name = "SECS")]
    pub checkpoint_interval: Option<u64>,
    /// Pika: keys without history do not exist (from [`PikaArgs`]).
    #[arg(skip)]
    pub empty_at_origin: bool,
    /// Print the effective settings (secrets redacted) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `pika-ttl-proxy redis`.
#[derive(Debug, Args, Default)]
pub struct RedisArgs {
    #[command(flatten)]
    relay: RelayArgs,
    /// User for the proxy's own AUTH to the master (Redis ACL user).
    #[arg(long, env = "PIKA_TTL_PROXY_MASTER_USER")]
    pub master_user: Option<String>,
    /// Bytes queued towards one replica before the proxy stops reading that replica's upstream
    /// link, so a slow replica cannot grow the proxy's memory [default: 67108864].
    #[arg(
        long,
        env = "PIKA_TTL_PROXY_REPLICA_OUTPUT_BUFFER_LIMIT",
        value_name = "BYTES"
    )]
    pub replica_output_buffer_limit: Option<u64>,
}

impl RedisArgs {
    /// All flags, merged into the shape [`Settings::from_args`] reads.
    pub fn into_relay(self) -> RelayArgs {
        RelayArgs {
            master_user: self.master_user,
            replica_output_buffer_limit: self.replica_output_buffer_limit,
            ..self.relay
        }
    }
}

/// `pika-ttl-proxy pika`.
#[derive(Debug, Args, Default)]
pub struct PikaArgs {
    #[command(flatten)]
    relay: RelayArgs,
    /// Pika's `binlog-file-size` on the master and its replicas: lag in bytes, and where a
    /// replica's binlog rolls to a new file when the proxy predicts its positions [default:
    /// 104857600].
    #[arg(long, env = "PIKA_TTL_PROXY_BINLOG_FILE_SIZE", value_name = "BYTES")]
    pub binlog_file_size: Option<u64>,
    /// Scan the master (SCAN + PTTL) per upstream link to learn which keys existed before the
    /// proxy and their TTLs: `scan` or `off` [default: scan].
    #[arg(long, env = "PIKA_TTL_PROXY_WARMUP", value_name = "off|scan")]
    pub warmup: Option<String>,
    /// Keys per second the warm-up scan may read [default: 10000].
    #[arg(long, env = "PIKA_TTL_PROXY_WARMUP_RATE", value_name = "KEYS")]
    pub warmup_rate: Option<u32>,
    /// Most keys without a TTL one warm-up records (each costs its key bytes plus about 40
    /// bytes per replica link); past it only volatile keys are kept [default: 10000000].
    #[arg(long, env = "PIKA_TTL_PROXY_WARMUP_MAX_KEYS", value_name = "KEYS")]
    pub warmup_max_keys: Option<u64>,
    /// Hold a write whose outcome on a late replica depends on a key state the stream does not
    /// tell (not reached by the warm-up yet, after a removal, Pika 4.0's deadline second) and
    /// ask the master for that key's TTL, instead of passing it as `unknown_key`: `on` or
    /// `off` [default: on].
    #[arg(long, env = "PIKA_TTL_PROXY_LOOK_UPS", value_name = "on|off")]
    pub look_ups: Option<String>,
    /// Read ahead of a replica that applies late: behind a replica that has not acked for
    /// 100 ms, the proxy acks what it forwarded to the master itself (every 20 ms) while less
    /// than this many bytes wait for the replica's socket, so the master keeps sending (and
    /// look-ups are asked) as it writes; 0 turns it off [default: 67108864].
    #[arg(long, env = "PIKA_TTL_PROXY_READ_AHEAD_BYTES", value_name = "BYTES")]
    pub read_ahead_bytes: Option<u64>,
    /// Before a replica's full sync goes to the master, ask the master for `BGSAVE` and wait
    /// (up to 15 s) for it, so the replica gets a dump at the master's tip instead of an older
    /// one whose history it would replay through the proxy: `on` or `off` [default: on].
    #[arg(long, env = "PIKA_TTL_PROXY_FRESH_DUMP", value_name = "on|off")]
    pub fresh_dump: Option<String>,
    /// Relay a master whose `pika_version` is not 3.1–3.5 or 4.0 (refused by default: the
    /// rewrite forms may be wrong for it).
    #[arg(long, env = "PIKA_TTL_PROXY_ALLOW_UNKNOWN_PIKA_VERSION")]
    pub allow_unknown_pika_version: bool,
    /// The master's data set started empty and every write went through the binlog
    /// the proxy sees, so a key without history does not exist. Wrong for a master holding
    /// older data: leave off unless that is certain.
    #[arg(long, env = "PIKA_TTL_PROXY_EMPTY_AT_ORIGIN")]
    pub empty_at_origin: bool,
}

impl PikaArgs {
    /// All flags, merged into the shape [`Settings::from_args`] reads.
    pub fn into_relay(self) -> RelayArgs {
        RelayArgs {
            binlog_file_size: self.binlog_file_size,
            warmup: self.warmup,
            warmup_rate: self.warmup_rate,
            warmup_max_keys: self.warmup_max_keys,
            look_ups: self.look_ups,
            read_ahead_bytes: self.read_ahead_bytes,
            fresh_dump: self.fresh_dump,
            allow_unknown_pika_version: self.allow_unknown_pika_version,
            empty_at_origin: self.empty_at_origin,
            ..self.relay
        }
    }
}

/// Where the admin API is, for the client subcommands.
#[derive(Debug, Args)]
pub struct AdminClientArgs {
    /// Admin API address of the running proxy.
    #[arg(long, global = true, env = "PIKA_TTL_PROXY_ADMIN", default_value = DEFAULT_ADMIN, value_name = "HOST:PORT")]
    pub admin: String,
    /// Bearer token for mutating calls (prefer the file or the env var).
    #[arg(
        long,
        global = true,
        env = "PIKA_TTL_PROXY_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// File holding the bearer token (the same file the proxy reads).
    #[arg(
        long,
        global = true,
        env = "PIKA_TTL_PROXY_ADMIN_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub admin_token_file: Option<PathBuf>,
}

impl AdminClientArgs {
    /// The token to send: `--admin-token` (or its env var) if non-empty, else the file's.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        match (&self.admin_token, &self.admin_token_file) {
            (Some(t), _) if !t.is_empty() => Ok(Some(t.clone())),
            (_, Some(path)) => read_secret("admin-token-file", path).map(Some),
            _ => Ok(None),
        }
    }
}

/// `families list|enable|disable NAME`.
#[derive(Debug, Args)]
pub struct FamiliesArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: FamiliesAction,
    #[command(flatten)]
    pub client: AdminClientArgs,
}

/// Family actions.
#[derive(Debug, Subcommand)]
pub enum FamiliesAction {
    /// Show every family's state and counters.
    List,
    /// Switch rewriting of a family on.
    Enable {
        /// Family name.
        name: String,
    },
    /// Switch rewriting of a family off (the expiry table is still maintained).
    Disable {
        /// Family name.
        name: String,
    },
}

/// `model-replay` flags.
#[derive(Debug, Args)]
pub struct ModelReplayArgs {
    /// Apply each command this many ms after it was received.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: i64,
    /// Recording: lines `<unix-ms> <redis-cli --replica CSV command>`.
    pub file: PathBuf,
}
