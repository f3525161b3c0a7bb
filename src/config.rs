//! Command line, environment and config-file settings, merged with a fixed precedence.
//!
//! Every relay setting is a flag, an environment variable (`PIKA_TTL_PROXY_…`) and a key of the
//! optional TOML file given with `--config`; a flag beats the environment, which beats the file,
//! which beats the built-in default. Validation happens before anything starts and names the
//! setting that is wrong.

use crate::families::{Family, FamilySwitches};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Default admin API address: loopback only, so no token is needed.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9121";
/// Default cap on bytes queued towards one replica before its upstream link stops being read.
pub const DEFAULT_OUTPUT_BUFFER_LIMIT: u64 = 64 * 1024 * 1024;
/// Pika's default `binlog-file-size` (100 MiB), used to turn (filenum, offset) into bytes.
pub const DEFAULT_BINLOG_FILE_SIZE: u64 = 100 * 1024 * 1024;

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

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
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

/// Which relay runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Redis PSYNC relay.
    Redis,
    /// Pika binlog relay.
    Pika,
}

/// The `--config` TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Only a check: a file written by `--print-config` names the relay it was printed for.
    mode: Option<Mode>,
    listen: Option<String>,
    master: Option<String>,
    admin: Option<String>,
    state_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    admin_token_file: Option<PathBuf>,
    master_user: Option<String>,
    master_password_file: Option<PathBuf>,
    replica_output_buffer_limit: Option<u64>,
    binlog_file_size: Option<u64>,
    warmup: Option<String>,
    warmup_rate: Option<u32>,
    warmup_max_keys: Option<u64>,
    look_ups: Option<String>,
    read_ahead_bytes: Option<u64>,
    fresh_dump: Option<String>,
    allow_unknown_pika_version: Option<bool>,
    checkpoint_interval: Option<u64>,
    empty_at_origin: Option<bool>,
    families: Option<BTreeMap<String, bool>>,
}

/// A setting that cannot be used; the process exits with code 2 and starts nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Setting name as the flag spells it.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting '{}': {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// An `on`/`off` setting from its flag, else the file, else `on`.
fn on_off(
    setting: &'static str,
    flag: &Option<String>,
    file: &Option<String>,
) -> Result<String, ConfigError> {
    let value = flag
        .as_ref()
        .or(file.as_ref())
        .map_or_else(|| "on".to_string(), |v| v.to_ascii_lowercase());
    if value != "on" && value != "off" {
        return Err(invalid(setting, format!("'{value}' is not 'on' or 'off'")));
    }
    Ok(value)
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// The effective relay settings.
#[derive(Clone)]
pub struct Settings {
    /// Relay kind.
    pub mode: Mode,
    /// Replicas connect here.
    pub listen: SocketAddr,
    /// The real master.
    pub master: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
    /// Persisted state.
    pub state_dir: PathBuf,
    /// The config file, when one was given (SIGHUP re-reads its families).
    pub config: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// The file the admin token was read from, if it came from one.
    pub admin_token_file: Option<PathBuf>,
    /// Initial family states.
    pub families: BTreeMap<String, bool>,
    /// Upstream AUTH user.
    pub master_user: Option<String>,
    /// Upstream AUTH password.
    pub master_password: Option<String>,
    /// The file the master password was read from, if it came from one.
    pub master_password_file: Option<PathBuf>,
    /// Per-replica output limit.
    pub replica_output_buffer_limit: u64,
    /// Pika binlog file size.
    pub binlog_file_size: u64,
    /// Pika warm-up scan.
    pub warmup: String,
    /// Pika warm-up rate (keys/s).
    pub warmup_rate: u32,
    /// Pika warm-up bound on keys without a TTL.
    pub warmup_max_keys: u64,
    /// Pika: look-ups on the master (`on`/`off`).
    pub look_ups: String,
    /// Pika: the read-ahead's bound in bytes (0: off).
    pub read_ahead_bytes: u64,
    /// Pika: a fresh dump for each full sync (`on`/`off`).
    pub fresh_dump: String,
    /// Pika: relay a master release the proxy does not know.
    pub allow_unknown_pika_version: bool,
    /// Seconds between expiry-table checkpoints (both relays).
    pub checkpoint_interval: u64,
    /// Pika: keys without history do not exist.
    pub empty_at_origin: bool,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log line.
        f.debug_struct("Settings")
            .field("mode", &self.mode)
            .field("listen", &self.listen)
            .field("master", &self.master)
            .field("admin", &self.admin)
            .field("state_dir", &self.state_dir)
            .field("families", &self.families)
            .field("master_user", &self.master_user)
            .field(
                "master_password",
                &self.master_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn resolve(setting: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let mut addrs = value
        .to_socket_addrs()
        .map_err(|e| invalid(setting, format!("'{value}' is not HOST:PORT ({e})")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(setting, format!("'{value}' resolves to no address")))
}

fn read_secret(setting: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(setting, format!("cannot read {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        return Err(invalid(setting, format!("{} is empty", path.display())));
    }
    Ok(secret)
}

/// Read and parse the TOML file.
pub fn read_file_settings(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.to_string().replace('\n', " ");
        invalid("config", format!("{}: {}", path.display(), msg.trim()))
    })
}

/// Family states from a file's `[families]` table; unknown names are errors.
pub fn file_families(file: &FileSettings) -> Result<BTreeMap<String, bool>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, on) in file.families.iter().flatten() {
        let family: Family = name
            .parse()
            .map_err(|e: crate::families::UnknownFamily| invalid("families", e.to_string()))?;
        out.insert(family.name().to_string(), *on);
    }
    Ok(out)
}

fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    }
}

impl Settings {
    /// Merge flags/env (already merged by clap), the file and the defaults, and validate.
    pub fn from_args(mode: Mode, args: &RelayArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file_settings(path)?,
            None => FileSettings::default(),
        };
        if let Some(file_mode) = file.mode {
            if file_mode != mode {
                return Err(invalid(
                    "mode",
                    format!(
                        "the config file is for the {} relay, not {}",
                        file_mode.name(),
                        mode.name()
                    ),
                ));
            }
        }
        let listen =
            args.listen.clone().or(file.listen.clone()).ok_or_else(|| {
                invalid("listen", "required (flag, PIKA_TTL_PROXY_LISTEN or file)")
            })?;
        let master =
            args.master.clone().or(file.master.clone()).ok_or_else(|| {
                invalid("master", "required (flag, PIKA_TTL_PROXY_MASTER or file)")
            })?;
        let admin = args
            .admin
            .clone()
            .or(file.admin.clone())
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        let state_dir = args
            .state_dir
            .clone()
            .or(file.state_dir.clone())
            .ok_or_else(|| {
                invalid(
                    "state-dir",
                    "required (flag, PIKA_TTL_PROXY_STATE_DIR or file)",
                )
            })?;
        let listen = resolve("listen", &listen)?;
        let master = resolve("master", &master)?;
        let admin = resolve("admin", &admin)?;
        if listen.port() == 0 {
            return Err(invalid("listen", "port 0 is not allowed"));
        }
        if listen == master
            || (listen.port() == master.port()
                && is_loopback(&master)
                && listen.ip().is_unspecified())
        {
            return Err(invalid(
                "listen",
                format!(
                    "{listen} is the master's own address: the proxy would replicate from itself"
                ),
            ));
        }
        if mode == Mode::Pika {
            if listen.port() > u16::MAX - 10_001 {
                return Err(invalid(
                    "listen",
                    format!("port {} leaves no room for port+10001", listen.port()),
                ));
            }
            if master.port() > u16::MAX - 10_001 {
                return Err(invalid(
                    "master",
                    format!("port {} leaves no room for port+10001", master.port()),
                ));
            }
        }
        let (admin_token, admin_token_file) = match (
            &args.admin_token,
            &args.admin_token_file,
            &file.admin_token_file,
        ) {
            (Some(t), _, _) if !t.is_empty() => (Some(t.clone()), None),
            (_, Some(p), _) | (_, None, Some(p)) => {
                (Some(read_secret("admin-token-file", p)?), Some(p.clone()))
            }
            _ => (None, None),
        };
        if !is_loopback(&admin) && admin_token.is_none() {
            return Err(invalid(
                "admin",
                format!("{admin} is not a loopback address: set an admin token (PIKA_TTL_PROXY_ADMIN_TOKEN or --admin-token-file)"),
            ));
        }
        let (master_password, master_password_file) = match (
            &args.master_password,
            &args.master_password_file,
            &file.master_password_file,
        ) {
            (Some(p), _, _) if !p.is_empty() => (Some(p.clone()), None),
            (_, Some(p), _) | (_, None, Some(p)) => (
                Some(read_secret("master-password-file", p)?),
                Some(p.clone()),
            ),
            _ => (None, None),
        };
        let mut families: BTreeMap<String, bool> = Family::ALL
            .iter()
            .map(|f| (f.name().to_string(), true))
            .collect();
        if args.disable_family.is_empty() {
            families.extend(file_families(&file)?);
        } else {
            for name in &args.disable_family {
                let family: Family =
                    name.trim()
                        .parse()
                        .map_err(|e: crate::families::UnknownFamily| {
                            invalid("disable-family", e.to_string())
                        })?;
                families.insert(family.name().to_string(), false);
            }
        }
        let replica_output_buffer_limit = args
            .replica_output_buffer_limit
            .or(file.replica_output_buffer_limit)
            .unwrap_or(DEFAULT_OUTPUT_BUFFER_LIMIT);
        if replica_output_buffer_limit < 64 * 1024 {
            return Err(invalid(
                "replica-output-buffer-limit",
                "must be at least 65536 bytes",
            ));
        }
        let binlog_file_size = args
            .binlog_file_size
            .or(file.binlog_file_size)
            .unwrap_or(DEFAULT_BINLOG_FILE_SIZE);
        if binlog_file_size == 0 {
            return Err(invalid("binlog-file-size", "must be positive"));
        }
        let warmup = args
            .warmup
            .clone()
            .or(file.warmup.clone())
            .unwrap_or_else(|| "scan".to_string());
        if warmup != "off" && warmup != "scan" {
            return Err(invalid(
                "warmup",
                format!("'{warmup}' is not 'off' or 'scan'"),
            ));
        }
        let warmup_rate = args.warmup_rate.or(file.warmup_rate).unwrap_or(10_000);
        if warmup_rate == 0 {
            return Err(invalid("warmup-rate", "must be positive"));
        }
        let checkpoint_interval = args
            .checkpoint_interval
            .or(file.checkpoint_interval)
            .unwrap_or(60);
        if checkpoint_interval == 0 {
            return Err(invalid("checkpoint-interval", "must be positive"));
        }
        let warmup_max_keys = args
            .warmup_max_keys
            .or(file.warmup_max_keys)
            .unwrap_or(crate::pika_relay::DEFAULT_WARMUP_MAX_KEYS);
        let look_ups = on_off("look-ups", &args.look_ups, &file.look_ups)?;
        let fresh_dump = on_off("fresh-dump", &args.fresh_dump, &file.fresh_dump)?;
        let read_ahead_bytes = args
            .read_ahead_bytes
            .or(file.read_ahead_bytes)
            .unwrap_or(crate::pika_relay::DEFAULT_READ_AHEAD_BYTES as u64);
        if usize::try_from(read_ahead_bytes).is_err() {
            return Err(invalid("read-ahead-bytes", "too large for this machine"));
        }
        let log_level = args
            .log_level
            .clone()
            .or(file.log_level.clone())
            .unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(invalid(
                "log-level",
                format!("'{log_level}' is not a log filter"),
            ));
        }
        Ok(Settings {
            mode,
            listen,
            master,
            admin,
            state_dir,
            config: args.config.clone(),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            log_level,
            admin_token,
            admin_token_file,
            families,
            master_user: args.master_user.clone().or(file.master_user.clone()),
            master_password,
            master_password_file,
            replica_output_buffer_limit,
            binlog_file_size,
            warmup,
            warmup_rate,
            warmup_max_keys,
            look_ups,
            read_ahead_bytes,
            fresh_dump,
            allow_unknown_pika_version: args.allow_unknown_pika_version
                || file.allow_unknown_pika_version.unwrap_or(false),
            checkpoint_interval,
            empty_at_origin: args.empty_at_origin || file.empty_at_origin.unwrap_or(false),
        })
    }

    /// Switch handles initialised from the configured family states.
    pub fn family_switches(&self) -> FamilySwitches {
        FamilySwitches::with(|f| self.families.get(f.name()).copied().unwrap_or(true))
    }

    /// The effective settings as a TOML file that `--config` loads back. Secrets given by
    /// file appear as their file's path; secrets given directly (flag or environment) are
    /// never printed, only noted in a comment, since a config file must not hold them.
    pub fn to_toml(&self) -> String {
        let printed = PrintedSettings {
            mode: self.mode,
            listen: self.listen.to_string(),
            master: self.master.to_string(),
            admin: self.admin.to_string(),
            state_dir: &self.state_dir,
            log_format: self.log_format,
            log_level: &self.log_level,
            admin_token_file: self.admin_token_file.as_deref(),
            master_user: self.master_user.as_deref(),
            master_password_file: self.master_password_file.as_deref(),
            replica_output_buffer_limit: self.replica_output_buffer_limit,
            binlog_file_size: self.binlog_file_size,
            warmup: &self.warmup,
            warmup_rate: self.warmup_rate,
            warmup_max_keys: self.warmup_max_keys,
            look_ups: &self.look_ups,
            read_ahead_bytes: self.read_ahead_bytes,
            fresh_dump: &self.fresh_dump,
            allow_unknown_pika_version: self.allow_unknown_pika_version,
            checkpoint_interval: self.checkpoint_interval,
            empty_at_origin: self.empty_at_origin,
            families: &self.families,
        };
        let mut out = format!(
            "# Effective settings of `pika-ttl-proxy {}`; load with --config.\n",
            self.mode.name()
        );
        if let Some(path) = &self.config {
            out.push_str(&format!(
                "# Merged from the config file {}.\n",
                path.display()
            ));
        }
        if self.admin_token.is_some() && self.admin_token_file.is_none() {
            out.push_str(
                "# admin_token: <redacted> (given by flag or environment; pass it again, or use admin_token_file)\n",
            );
        }
        if self.master_password.is_some() && self.master_password_file.is_none() {
            out.push_str(
                "# master_password: <redacted> (given by flag or environment; pass it again, or use master_password_file)\n",
            );
        }
        match toml::to_string(&printed) {
            Ok(body) => out.push_str(&body),
            Err(e) => out.push_str(&format!("# cannot render the settings: {e}\n")),
        }
        out
    }
}

impl Mode {
    /// The subcommand that runs this relay.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Redis => "redis",
            Mode::Pika => "pika",
        }
    }
}

/// What `--print-config` prints: the keys of [`FileSettings`], scalars before the
/// `[families]` table (a key after a table header would belong to that table).
#[derive(Serialize)]
struct PrintedSettings<'a> {
    mode: Mode,
    listen: String,
    master: String,
    admin: String,
    state_dir: &'a Path,
    log_format: LogFormat,
    log_level: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_token_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    master_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    master_password_file: Option<&'a Path>,
    replica_output_buffer_limit: u64,
    binlog_file_size: u64,
    warmup: &'a str,
    warmup_rate: u32,
    warmup_max_keys: u64,
    look_ups: &'a str,
    read_ahead_bytes: u64,
    fresh_dump: &'a str,
    allow_unknown_pika_version: bool,
    checkpoint_interval: u64,
    empty_at_origin: bool,
    families: &'a BTreeMap<String, bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: &str, master: &str) -> RelayArgs {
        RelayArgs {
            listen: Some(listen.into()),
            master: Some(master.into()),
            state_dir: Some("/tmp".into()),
            ..RelayArgs::default()
        }
    }

    #[test]
    fn defaults_and_validation() {
        let s =
            Settings::from_args(Mode::Redis, &args("127.0.0.1:7000", "127.0.0.1:6379")).unwrap();
        assert_eq!(s.admin.to_string(), DEFAULT_ADMIN);
        assert!(s.families.values().all(|on| *on));
        assert_eq!(s.read_ahead_bytes, 64 << 20);
        let mut off = args("127.0.0.1:7000", "127.0.0.1:9221");
        off.read_ahead_bytes = Some(0);
        let s = Settings::from_args(Mode::Pika, &off).unwrap();
        assert_eq!(s.read_ahead_bytes, 0);
        assert!(
            s.to_toml().contains("read_ahead_bytes = 0"),
            "{}",
            s.to_toml()
        );
        assert_eq!(s.fresh_dump, "on");
        off.fresh_dump = Some("sometimes".into());
        let e = Settings::from_args(Mode::Pika, &off).unwrap_err();
        assert_eq!(e.setting, "fresh-dump");
        let e = Settings::from_args(Mode::Redis, &args("127.0.0.1:6379", "127.0.0.1:6379"))
            .unwrap_err();
        assert_eq!(e.setting, "listen");
        let e = Settings::from_args(Mode::Pika, &args("127.0.0.1:60000", "127.0.0.1:9221"))
            .unwrap_err();
        assert_eq!(e.setting, "listen");
        let mut a = args("127.0.0.1:7000", "127.0.0.1:6379");
        a.admin = Some("0.0.0.0:9121".into());
        assert_eq!(
            Settings::from_args(Mode::Redis, &a).unwrap_err().setting,
            "admin"
        );
        a.admin_token = Some("t".into());
        assert!(Settings::from_args(Mode::Redis, &a).is_ok());
        let mut a = args("127.0.0.1:7000", "127.0.0.1:6379");
        a.disable_family = vec!["hash".into(), "nope".into()];
        assert_eq!(
            Settings::from_args(Mode::Redis, &a).unwrap_err().setting,
            "disable-family"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let mut a = args("127.0.0.1:7000", "127.0.0.1:6379");
        a.master_password = Some("hunter2".into());
        let s = Settings::from_args(Mode::Redis, &a).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.to_toml().contains("hunter2"));
        assert!(s.to_toml().contains("<redacted>"));
    }

    #[test]
    fn printed_settings_load_back_to_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let mut a = args("127.0.0.1:7000", "127.0.0.1:6379");
        a.admin = Some("0.0.0.0:9121".into());
        a.admin_token_file = Some(token);
        a.master_password = Some("hunter2".into());
        a.disable_family = vec!["hash".into()];
        let first = Settings::from_args(Mode::Pika, &a).unwrap();
        let printed = dir.path().join("printed.toml");
        std::fs::write(&printed, first.to_toml()).unwrap();
        let again = RelayArgs {
            config: Some(printed.clone()),
            ..RelayArgs::default()
        };
        let second = Settings::from_args(Mode::Pika, &again).unwrap();
        assert_eq!(second.admin_token.as_deref(), Some("s3cret"));
        assert_eq!(second.families, first.families);
        let keys = |s: &Settings| {
            s.to_toml()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&second), keys(&first));
        let e = Settings::from_args(Mode::Redis, &again).unwrap_err();
        assert_eq!(e.setting, "mode");
    }
}
