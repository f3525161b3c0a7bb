//! Runs the Pika relay alone (no admin API, no metrics exporter), for tests and experiments:
//!
//! ```text
//! pika_relay_proxy --listen 127.0.0.1:9221 --master 10.0.0.5:9221 --state-dir /var/lib/relay
//! ```
//!
//! It listens on P, P+2000 and P+10001 of `--listen` and relays to the same ports of `--master`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pika_ttl_proxy::families::{Family, FamilySwitches};
use pika_ttl_proxy::pika_relay::{serve, PikaRelayConfig, PikaRelayShared, WarmupMode};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Pika replication relay that rewrites expiry-dependent binlog items")]
struct Args {
    /// The relay's port P (P+2000 and P+10001 are used too).
    #[arg(long)]
    listen: SocketAddr,
    /// The master's port P.
    #[arg(long)]
    master: SocketAddr,
    /// Directory for the persisted offset maps.
    #[arg(long)]
    state_dir: PathBuf,
    /// Warm-up mode: off or scan.
    #[arg(long, default_value = "off")]
    warmup: WarmupMode,
    /// Keys per second the warm-up scan may look up (0 = unlimited).
    #[arg(long, default_value_t = 50_000)]
    warmup_rate: u32,
    /// The master's requirepass (warm-up scan only).
    #[arg(long)]
    master_password: Option<String>,
    /// The master's binlog-file-size, for lag in bytes.
    #[arg(long, default_value_t = pika_ttl_proxy::pika_relay::config::DEFAULT_BINLOG_FILE_SIZE)]
    binlog_file_size: u64,
    /// Treat a stream starting at master position 0/0 as starting from an empty data set.
    #[arg(long)]
    empty_at_origin: bool,
    /// Families to rewrite: `all`, `none`, or a comma-separated list (e.g. `string-counter,hash`).
    #[arg(long, default_value = "all")]
    families: String,
}

fn switches(spec: &str) -> Result<FamilySwitches, String> {
    match spec {
        "all" => Ok(FamilySwitches::all_on()),
        "none" => Ok(FamilySwitches::all_off()),
        list => {
            let on: Vec<Family> = list
                .split(',')
                .map(|f| f.trim().parse::<Family>().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            Ok(FamilySwitches::with(|f| on.contains(&f)))
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let families = match switches(&args.families) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cfg = PikaRelayConfig::new(args.listen, args.master, args.state_dir);
    cfg.warmup = args.warmup;
    cfg.warmup_rate = args.warmup_rate;
    cfg.master_password = args.master_password;
    cfg.binlog_file_size = args.binlog_file_size;
    cfg.empty_at_origin = args.empty_at_origin;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        serve(cfg, PikaRelayShared::new(families), shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
