//! Byte-for-byte TCP forwarding, used for port P (the replica's local-IP probes) and P+10001
//! (rsync2 full-sync file transfer). Each direction is copied as it arrives; an end-of-stream is
//! passed on as a half-close so request/response protocols finish cleanly. An optional tap sees
//! the master → replica bytes before they are written.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::error::Side;
use super::stats;

/// Sees each chunk from the master to the replica, before it is written to the replica.
pub type Tap = Box<dyn FnMut(&[u8]) + Send>;

/// How long to wait for the master to accept a forwarded connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Copy buffer size per direction.
const BUF_LEN: usize = 64 * 1024;

/// Connects to `master` and copies bytes both ways until both directions ended (or `cancel`).
/// `tap` sees every chunk sent from the master to the replica.
pub async fn forward(
    replica: TcpStream,
    master: SocketAddr,
    what: &'static str,
    cancel: CancellationToken,
    tap: Option<Tap>,
) {
    let peer = replica.peer_addr().ok();
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(master)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%master, ?peer, what, "cannot reach the master: {e}; closing the replica connection");
            return;
        }
        Err(_) => {
            tracing::warn!(%master, ?peer, what, "connecting to the master timed out; closing the replica connection");
            return;
        }
    };
    let _ = replica.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (replica_r, replica_w) = replica.into_split();
    let (master_r, master_w) = upstream.into_split();
    let up = copy(replica_r, master_w, Side::Master, None);
    let down = copy(master_r, replica_w, Side::Replica, tap);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cancel.cancelled() => {}
    }
    tracing::debug!(?peer, what, "passthrough connection closed");
}

/// Copies `from` to `to` (writing towards `to_side`) until end of stream or an error, then
/// half-closes `to`.
async fn copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    to_side: Side,
    mut tap: Option<Tap>,
) {
    let from_side = match to_side {
        Side::Master => Side::Replica,
        Side::Replica => Side::Master,
    };
    let mut buf = vec![0u8; BUF_LEN];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        stats::bytes("in", from_side, n);
        // The tap runs before the write: once the replica holds these bytes it may act on them
        // on another connection (a TrySync at the snapshot position), and the relay must
        // already know what it saw.
        if let Some(tap) = tap.as_mut() {
            tap(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        stats::bytes("out", to_side, n);
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tokio::net::TcpListener;

    use super::*;

    /// A replica that acts on bytes the moment it has them must find them already tapped, even
    /// when the tap is slow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tap_sees_bytes_before_the_replica_does() {
        let master = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let master_addr = master.local_addr().unwrap();
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let tapped = Arc::new(AtomicBool::new(false));
        let flag = tapped.clone();
        let tap: Tap = Box::new(move |_chunk: &[u8]| {
            std::thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
        });
        let cancel = CancellationToken::new();
        let relay_task = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                let (stream, _) = relay.accept().await.unwrap();
                forward(stream, master_addr, "test", cancel, Some(tap)).await;
            }
        });
        // The replica reads on its own thread, so it wakes without waiting for the runtime.
        let flag = tapped.clone();
        let replica = std::thread::spawn(move || {
            use std::io::Read;
            let mut replica = std::net::TcpStream::connect(relay_addr).unwrap();
            let mut got = [0u8; 4];
            replica.read_exact(&mut got).unwrap();
            flag.load(Ordering::SeqCst)
        });
        let (mut upstream, _) = master.accept().await.unwrap();
        upstream.write_all(b"info").await.unwrap();
        let tapped_first = tokio::task::spawn_blocking(move || replica.join().unwrap())
            .await
            .unwrap();
        assert!(
            tapped_first,
            "the replica had the bytes before the tap saw them"
        );
        cancel.cancel();
        relay_task.await.unwrap();
    }
}
