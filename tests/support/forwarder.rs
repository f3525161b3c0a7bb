//! The baseline hop of the added-latency measurements: a plain TCP forwarder that copies bytes
//! between each accepted connection and its own connection upstream, both ways, without looking
//! at them. Built like the proxy's process (a multi-thread tokio runtime with the default worker
//! count, one task per connection, TCP_NODELAY on both sockets), so that the proxy's own work is
//! the only difference between the two hops. Shared by `benches/added_latency.rs` (Redis: one
//! port) and `tests/pika_throughput.rs` (Pika: P, P+2000 and P+10001), each of which runs it in a
//! process of its own.

use std::net::SocketAddr;
use std::time::Duration;

/// The proxy's read size on the master's stream, and on the replica's side.
pub const UPSTREAM_READ: usize = 64 * 1024;
pub const DOWNSTREAM_READ: usize = 4 * 1024;

/// `<listen addr>,<upstream addr>[;<listen addr>,<upstream addr>…]`.
pub fn parse_pairs(spec: &str) -> Result<Vec<(SocketAddr, SocketAddr)>, String> {
    let parse = |addr: &str| {
        addr.trim()
            .parse::<SocketAddr>()
            .map_err(|e| format!("{addr:?}: {e}"))
    };
    spec.split(';')
        .map(|pair| {
            let (listen, upstream) = pair
                .split_once(',')
                .ok_or_else(|| format!("{pair:?}: expected <listen addr>,<upstream addr>"))?;
            Ok((parse(listen)?, parse(upstream)?))
        })
        .collect()
}

/// Forwards every pair until the process ends; returns only on a setup error.
pub fn forward(pairs: &[(SocketAddr, SocketAddr)]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for (listen, upstream) in pairs {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("bind {listen}: {e}"))?;
            listeners.push(tokio::spawn(accept_loop(listener, *upstream)));
        }
        for listener in listeners {
            listener.await.map_err(|e| format!("listener task: {e}"))?;
        }
        Ok(())
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, upstream: SocketAddr) {
    loop {
        let (mut down, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept for {upstream}: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let mut up = match tokio::net::TcpStream::connect(upstream).await {
                Ok(up) => up,
                Err(e) => {
                    eprintln!("{peer}: connect to {upstream}: {e}");
                    return;
                }
            };
            for (side, sock) in [("downstream", &down), ("upstream", &up)] {
                if let Err(e) = sock.set_nodelay(true) {
                    eprintln!("{peer}: TCP_NODELAY on the {side} socket: {e}");
                }
            }
            if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
                &mut down,
                &mut up,
                DOWNSTREAM_READ,
                UPSTREAM_READ,
            )
            .await
            {
                eprintln!("{peer} <-> {upstream}: {e}");
            }
        });
    }
}
