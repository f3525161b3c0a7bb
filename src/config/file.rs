//! The TOML file: what `--config` reads (the relay settings and a `[families]` table) and what
//! `--print-config` writes so that `--config` loads it back.

use super::*;

/// The `--config` TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Only a check: a file written by `--print-config` names the relay it was printed for.
    pub(super) mode: Option<Mode>,
    pub(super) listen: Option<String>,
    pub(super) master: Option<String>,
    pub(super) admin: Option<String>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) log_level: Option<String>,
    pub(super) admin_token_file: Option<PathBuf>,
    pub(super) master_user: Option<String>,
    pub(super) master_password_file: Option<PathBuf>,
    pub(super) replica_output_buffer_limit: Option<u64>,
    pub(super) binlog_file_size: Option<u64>,
    pub(super) warmup: Option<String>,
    pub(super) warmup_rate: Option<u32>,
    pub(super) warmup_max_keys: Option<u64>,
    pub(super) look_ups: Option<String>,
    pub(super) read_ahead_bytes: Option<u64>,
    pub(super) fresh_dump: Option<String>,
    pub(super) allow_unknown_pika_version: Option<bool>,
    pub(super) checkpoint_interval: Option<u64>,
    pub(super) empty_at_origin: Option<bool>,
    families: Option<BTreeMap<String, bool>>,
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

impl Settings {
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
