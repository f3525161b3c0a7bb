//! Process wiring: parse settings, start logging, metrics and the admin API, run the relay
//! until SIGTERM/SIGINT, re-read family states on SIGHUP. Exit codes: 0 after a clean
//! shutdown, 1 on a runtime failure, 2 on a configuration error (nothing started).

use crate::admin::{self, AdminState, Readiness, ReadinessSource};
use crate::config::{self, Cli, Command, Mode, ModelReplayArgs, RelayArgs, Settings};
use crate::engine::Dialect;
use crate::families::{Family, FamilySwitches};
use crate::{cli, logging, pika_relay, redis_relay};
use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How long a stopping relay may take after SIGTERM/SIGINT before the process exits anyway.
const SHUTDOWN_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// Entry point of the `pika-ttl-proxy` binary.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Redis(args) => run_relay(Mode::Redis, &args.into_relay()),
        Command::Pika(args) => run_relay(Mode::Pika, &args.into_relay()),
        Command::Families(args) => cli::families(&args),
        Command::Healthcheck(args) => cli::healthcheck(&args),
        Command::ModelReplay(args) => model_replay(&args),
    }
}

fn run_relay(mode: Mode, args: &RelayArgs) -> ExitCode {
    let settings = match Settings::from_args(mode, args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", settings.to_toml());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = crate::state_dir::check_writable(&settings.state_dir) {
        eprintln!("error: invalid setting 'state-dir': {e}");
        return ExitCode::from(2);
    }
    logging::init(settings.log_format, &settings.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(settings))
}

/// Readiness of the Redis relay; `docs/configuration.md` ("/readyz") describes each state. Only conditions
/// that end without an operator make it 503, so a probe that gates traffic can never lock
/// replicas out of a proxy waiting for them.
fn redis_readiness(registry: redis_relay::SessionRegistry) -> ReadinessSource {
    Arc::new(move || {
        let sessions = registry.snapshot();
        let mut reasons = Vec::new();
        let mut notes = Vec::new();
        if sessions.is_empty() {
            notes.push("no replica is attached".to_string());
        }
        for s in &sessions {
            if !s.upstream_link_up {
                reasons.push(format!(
                    "replica {}: upstream link to the master is down",
                    s.replica
                ));
            }
            match s.phase {
                redis_relay::Phase::Streaming => {
                    if !s.table_complete {
                        notes.push(format!(
                            "replica {}: expiry knowledge incomplete: keys not written since the proxy last relayed a full sync are passed through unchanged (after an unclean stop or an unscanned payload); a full sync of the replica restores it",
                            s.replica
                        ));
                    }
                }
                phase => reasons.push(format!(
                    "replica {}: synchronising ({})",
                    s.replica,
                    phase.name()
                )),
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
            notes,
            replicas: sessions.len(),
        }
    })
}

/// Readiness of the Pika relay, with the same rule as [`redis_readiness`].
fn pika_readiness(registry: pika_relay::SessionRegistry) -> ReadinessSource {
    Arc::new(move || {
        let links = registry.snapshot();
        let mut reasons = Vec::new();
        let mut notes = Vec::new();
        // A connection that has not named its replica yet (a probe, a replica mid-handshake)
        // is not a replica being served.
        let attached = links.iter().filter(|l| !l.dbs.is_empty()).count();
        if attached == 0 {
            notes.push("no replica is attached".to_string());
        }
        for l in links.iter().filter(|l| !l.dbs.is_empty()) {
            let who = l.replica.clone().unwrap_or_else(|| l.peer.clone());
            if !l.upstream_up {
                reasons.push(format!(
                    "replica {who}: upstream link to the master is down"
                ));
            }
            for db in &l.dbs {
                if db.phase != "streaming" {
                    reasons.push(format!(
                        "replica {who} {}: synchronising ({})",
                        db.db, db.phase
                    ));
                    continue;
                }
                if db.table_complete {
                    continue;
                }
                // A running warm-up ends by itself: until it merges, entries on keys it has not
                // settled pass as unknown_key, so the replica is not yet fully served.
                let (why, list) = match db.warmup {
                    "running" => ("warm-up scan in progress", &mut reasons),
                    "off" => (
                        "no warm-up: start with --warmup scan (or --empty-at-origin)",
                        &mut notes,
                    ),
                    _ => (
                        "the warm-up scan did not complete (see the log)",
                        &mut notes,
                    ),
                };
                list.push(format!(
                    "replica {who} {}: expiry knowledge incomplete: {why}",
                    db.db
                ));
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
            notes,
            replicas: attached,
        }
    })
}

/// The per-replica series' grace period from the environment (tests shorten it; the default
/// suits the shipped alerts).
fn configure_series_grace() {
    use crate::replica_series::{global, GRACE_ENV};
    if let Some(secs) = env_secs(GRACE_ENV) {
        global().set_grace(std::time::Duration::from_secs(secs));
    }
}

/// A whole number of seconds from environment variable `name` (timing overrides that tests
/// use); a value that is not one is logged and ignored.
fn env_secs(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let parsed = value.trim().parse::<u64>().ok();
    if parsed.is_none() {
        tracing::warn!(value = %value, "{name} is not a whole number of seconds; the default applies");
    }
    parsed
}

fn publish_family_gauges(families: &FamilySwitches) {
    for (f, on) in families.snapshot() {
        metrics::gauge!(crate::metrics::names::FAMILY_ENABLED, "family" => f.name()).set(if on {
            1.0
        } else {
            0.0
        });
    }
}

/// SIGHUP: apply the `[families]` table of the config file again.
fn reload_families(settings: &Settings, families: &FamilySwitches) {
    let Some(path) = &settings.config else {
        tracing::warn!("SIGHUP ignored: no --config file to re-read");
        return;
    };
    match config::read_file_settings(path).and_then(|f| config::file_families(&f)) {
        Ok(states) => {
            for f in Family::ALL {
                let on = states.get(f.name()).copied().unwrap_or(true);
                if families.set(f, on) != on {
                    tracing::info!(
                        family = f.name(),
                        enabled = on,
                        "family switched by SIGHUP reload"
                    );
                }
            }
            publish_family_gauges(families);
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP reload failed; family states unchanged"),
    }
}

async fn run(settings: Settings) -> ExitCode {
    let prometheus = match crate::metrics::install() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the metrics recorder");
            return ExitCode::from(1);
        }
    };
    configure_series_grace();
    crate::metrics::register_zeroes(match settings.mode {
        Mode::Redis => "redis",
        Mode::Pika => "pika",
    });
    let families = settings.family_switches();
    publish_family_gauges(&families);
    let shutdown = CancellationToken::new();
    let admin_listener = match admin::bind(settings.admin).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(admin = %settings.admin, error = %e, "cannot bind the admin API");
            return ExitCode::from(1);
        }
    };
    tracing::info!(mode = ?settings.mode, listen = %settings.listen, master = %settings.master,
        admin = %settings.admin, state_dir = %settings.state_dir.display(), "starting");

    let (relay, readiness): (tokio::task::JoinHandle<Result<(), String>>, ReadinessSource) =
        match settings.mode {
            Mode::Redis => {
                let mut cfg = redis_relay::RedisRelayConfig::new(
                    settings.listen,
                    settings.master,
                    settings.state_dir.clone(),
                );
                cfg.master_user = settings.master_user.clone();
                cfg.master_password = settings.master_password.clone();
                cfg.replica_output_buffer_limit =
                    usize::try_from(settings.replica_output_buffer_limit).unwrap_or(usize::MAX);
                cfg.checkpoint_interval =
                    std::time::Duration::from_secs(settings.checkpoint_interval);
                let shared = redis_relay::RelayShared {
                    families: families.clone(),
                    sessions: Default::default(),
                };
                let readiness = redis_readiness(shared.sessions.clone());
                let token = shutdown.clone();
                let task = tokio::spawn(async move {
                    redis_relay::serve(cfg, shared, token)
                        .await
                        .map_err(|e| e.to_string())
                });
                (task, readiness)
            }
            Mode::Pika => {
                let mut cfg = pika_relay::PikaRelayConfig::new(
                    settings.listen,
                    settings.master,
                    settings.state_dir.clone(),
                );
                cfg.master_password = settings.master_password.clone();
                cfg.binlog_file_size = settings.binlog_file_size;
                cfg.warmup = match settings.warmup.as_str() {
                    "scan" => pika_relay::WarmupMode::Scan,
                    _ => pika_relay::WarmupMode::Off,
                };
                cfg.warmup_rate = settings.warmup_rate;
                cfg.warmup_max_keys = settings.warmup_max_keys;
                cfg.look_ups = settings.look_ups == "on";
                cfg.fresh_dump = settings.fresh_dump == "on";
                cfg.read_ahead_bytes =
                    usize::try_from(settings.read_ahead_bytes).unwrap_or(usize::MAX);
                cfg.allow_unknown_version = settings.allow_unknown_pika_version;
                cfg.checkpoint_interval =
                    std::time::Duration::from_secs(settings.checkpoint_interval);
                cfg.empty_at_origin = settings.empty_at_origin;
                if let Some(secs) = env_secs(pika_relay::MASTER_DROP_ENV) {
                    cfg.master_drop_after = std::time::Duration::from_secs(secs);
                }
                let shared = pika_relay::PikaRelayShared::new(families.clone());
                let readiness = pika_readiness(shared.sessions.clone());
                let token = shutdown.clone();
                let task = tokio::spawn(async move {
                    pika_relay::serve(cfg, shared, token)
                        .await
                        .map_err(|e| e.to_string())
                });
                (task, readiness)
            }
        };

    let admin_state = AdminState {
        families: families.clone(),
        prometheus,
        replicas: crate::replica_series::global(),
        readiness,
        token: settings.admin_token.as_deref().map(Arc::from),
    };
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, shutdown.clone()));

    let signals = {
        let settings = settings.clone();
        let families = families.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { wait_for_signals(&settings, &families, &shutdown).await })
    };

    let mut relay = relay;
    let code = tokio::select! {
        result = &mut relay => {
            shutdown.cancel();
            match result {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "relay stopped");
                    ExitCode::from(1)
                }
                Err(e) => {
                    tracing::error!(error = %e, "relay task failed");
                    ExitCode::from(1)
                }
            }
        }
        _ = shutdown.cancelled() => {
            // Let the relay flush pending output, persist its offset maps and (Redis) save its
            // expiry tables: up to 5 s for the connections to end, then about 0.6 s per million
            // keys per replica for the tables.
            match tokio::time::timeout(SHUTDOWN_BUDGET, &mut relay).await {
                Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = %e, "relay stopped with an error during shutdown");
                    ExitCode::from(1)
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "relay task failed during shutdown");
                    ExitCode::from(1)
                }
                Err(_) => {
                    tracing::warn!(budget_s = SHUTDOWN_BUDGET.as_secs(), "relay did not stop in time; exiting");
                    ExitCode::from(1)
                }
            }
        }
    };
    signals.abort();
    let _ = admin_task.await;
    tracing::info!("stopped");
    code
}

#[cfg(unix)]
async fn wait_for_signals(
    settings: &Settings,
    families: &FamilySwitches,
    shutdown: &CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); shutdown.cancel(); return; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); shutdown.cancel(); return; }
            _ = hup.recv() => reload_families(settings, families),
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_: &Settings, _: &FamilySwitches, shutdown: &CancellationToken) {
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

fn model_replay(args: &ModelReplayArgs) -> ExitCode {
    use crate::model::replay::{parse_recording, replay};
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let recording = match parse_recording(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let (replica, rejected) = replay(Dialect::Redis, &recording, args.delay_ms);
    let last = recording.iter().map(|r| r.at_ms).max().unwrap_or(0) + args.delay_ms;
    let far = last + 10 * 365 * 24 * 3_600_000;
    println!(
        "model replica (expires keys by its own clock), {} commands applied {} ms after receipt, {} rejected",
        recording.len(),
        args.delay_ms,
        rejected
    );
    println!("-- state right after the last apply (t = {last} ms):");
    print!("{}", replica.dump(last));
    println!("-- state ten years later:");
    print!("{}", replica.dump(far));
    let immortal = replica
        .state_at(far)
        .keys
        .values()
        .filter(|r| r.deadline_ms.is_none())
        .count();
    println!("keys without expiry (alive forever): {immortal}");
    ExitCode::SUCCESS
}
