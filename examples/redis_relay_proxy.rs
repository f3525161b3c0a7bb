//! Test-support binary: runs the Redis relay ([`pika_ttl_proxy::redis_relay::serve`]) as its
//! own process, so integration tests can `kill -9` it, restart it on the same state directory
//! and read its peak memory from `/proc`. The real CLI (`pika-ttl-proxy redis …`) wires the
//! same entry point; tests will switch to it once it exists.
//!
//! ```text
//! cargo build --example redis_relay_proxy
//! target/debug/examples/redis_relay_proxy --listen 127.0.0.1:7000 --master 127.0.0.1:6379 \
//!     --state-dir /tmp/relay-state [--families-off] [--metrics-file /tmp/relay.prom]
//! ```
//!
//! Logs go to stderr (`RUST_LOG` filters, default `info`). With `--metrics-file` the Prometheus
//! rendering of every metric is rewritten once a second (atomically), for tests to read.

use clap::Parser;
use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::redis_relay::{serve, RedisRelayConfig, RelayShared};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Redis replication relay (test support)")]
struct Args {
    /// Address replicas connect to.
    #[arg(long)]
    listen: SocketAddr,
    /// The master.
    #[arg(long)]
    master: SocketAddr,
    /// Directory for per-replica state.
    #[arg(long)]
    state_dir: PathBuf,
    /// Proxy's own AUTH user for the master.
    #[arg(long)]
    master_user: Option<String>,
    /// Proxy's own AUTH password for the master.
    #[arg(long)]
    master_password: Option<String>,
    /// Switch every rewrite family off (the relay then forwards the master's bytes).
    #[arg(long)]
    families_off: bool,
    /// Bytes queued per replica before reading from the master pauses.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    output_buffer_limit: usize,
    /// Write the Prometheus rendering of the metrics here once a second.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let mut cfg = RedisRelayConfig::new(args.listen, args.master, args.state_dir);
    cfg.master_user = args.master_user;
    cfg.master_password = args.master_password;
    cfg.replica_output_buffer_limit = args.output_buffer_limit;
    let shared = RelayShared {
        families: if args.families_off {
            FamilySwitches::all_off()
        } else {
            FamilySwitches::all_on()
        },
        ..RelayShared::default()
    };
    let shutdown = CancellationToken::new();
    if let Some(path) = args.metrics_file {
        tokio::spawn(async move {
            let tmp = path.with_extension("tmp");
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if std::fs::write(&tmp, handle.render()).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        });
    }
    let stop = shutdown.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        stop.cancel();
    });
    serve(cfg, shared, shutdown).await?;
    Ok(())
}
