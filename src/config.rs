//! Command line, environment and config-file settings, merged with a fixed precedence.
//!
//! Every relay setting is a flag, an environment variable (`PIKA_TTL_PROXY_…`) and a key of the
//! optional TOML file given with `--config`; a flag beats the environment, which beats the file,
//! which beats the built-in default. Validation happens before anything starts and names the
//! setting that is wrong.
//!
//! This module merges and validates; the command line's shape lives in `flags`, the TOML file's in
//! `file`.

use crate::families::{Family, FamilySwitches};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

mod file;
mod flags;

pub use file::{file_families, read_file_settings, FileSettings};
pub use flags::{
    AdminClientArgs, Cli, Command, FamiliesAction, FamiliesArgs, ModelReplayArgs, RelayArgs,
};

/// Default admin API address: loopback only, so no token is needed.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9121";
/// Default cap on bytes queued towards one replica before its upstream link stops being read.
pub const DEFAULT_OUTPUT_BUFFER_LIMIT: u64 = 64 * 1024 * 1024;
/// Pika's default `binlog-file-size` (100 MiB), used to turn (filenum, offset) into bytes.
pub const DEFAULT_BINLOG_FILE_SIZE: u64 = 100 * 1024 * 1024;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
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
        if read_ahead_bytes > crate::pika_relay::MAX_READ_AHEAD_BYTES as u64 {
            return Err(invalid(
                "read-ahead-bytes",
                "at most 268435456 (256 MiB): a replica's offset map holds a pair per item read ahead",
            ));
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
