//! A fresh dump for a replica's full sync.
//!
//! A Pika master answers a DBSync with its last dump whenever that dump's binlog file still
//! exists and is fewer than 50 files behind its tip (`TryDBSync`, `kDBSyncMaxGap`, in 3.5.4 and
//! 4.0.1): a replica that full-syncs then replays everything logged since that dump, which can
//! be gigabytes of history, through the relay. The relay reads those items long after the
//! master wrote them, when a look-up can only say what the key is *now*, so writes on keys
//! changed again since pass undecided. Before the relay forwards a replica's DBSync it
//! therefore asks the master for `BGSAVE` and waits, bounded by [`FRESH_DUMP_LIMIT`], until
//! `INFO stats` says `is_bgsaving:No`: the master then finds a dump at its tip and serves that.
//! A master that cannot do it (no answer, an error, too slow) is logged and left to choose its
//! dump as it would without the relay.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::BytesFrame;

use super::client_port::Client;

/// How long a DBSync waits for the master's dump: a Pika replica that hears nothing for 20 s
/// gives its request up and starts over.
pub(crate) const FRESH_DUMP_LIMIT: Duration = Duration::from_secs(15);

/// How often `INFO stats` is read while the dump runs.
const POLL: Duration = Duration::from_millis(100);

/// `is_bgsaving` from the text of `INFO stats`.
pub(crate) fn bgsaving(info: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(info).ok()?;
    let value = text
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("is_bgsaving:"))?;
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// Asks the master at `master` (its port P) for `BGSAVE` and waits until it has finished; the
/// time it took, or why it could not.
pub(crate) async fn fresh_dump(
    master: SocketAddr,
    password: Option<&str>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let dump = async {
        let mut client = Client::connect(master)
            .await
            .map_err(|e| format!("cannot connect to {master}: {e}"))?;
        if let Some(pw) = password {
            client
                .call(&[b"AUTH", pw.as_bytes()])
                .await
                .map_err(|e| e.to_string())?;
        }
        client.call(&[b"BGSAVE"]).await.map_err(|e| e.to_string())?;
        loop {
            let info = match client.call(&[b"INFO", b"stats"]).await {
                Ok(BytesFrame::BulkString(b) | BytesFrame::SimpleString(b)) => b,
                Ok(_) => return Err("INFO stats returned no text".to_string()),
                Err(e) => return Err(e.to_string()),
            };
            match bgsaving(&info) {
                Some(false) => return Ok(()),
                Some(true) => tokio::time::sleep(POLL).await,
                None => return Err("INFO stats names no is_bgsaving".to_string()),
            }
        }
    };
    match tokio::time::timeout(FRESH_DUMP_LIMIT, dump).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "the dump was still running after {FRESH_DUMP_LIMIT:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_bgsaving_is_read_from_info_stats() {
        let info =
            b"# Stats\r\ntotal_connections_received:3\r\nis_bgsaving:Yes\r\nis_compact:No\r\n";
        assert_eq!(bgsaving(info), Some(true));
        assert_eq!(bgsaving(b"# Stats\r\nis_bgsaving:No\r\n"), Some(false));
        assert_eq!(bgsaving(b"# Stats\r\n"), None);
    }
}
