//! A RESP connection to the master's client port P: what the relay asks the master outside the
//! replication protocol (its clock, binlog position and keys for the warm-up, its binlog tip for
//! lag, its release).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::PikaRelayConfig;
use crate::engine::PikaRelease;
use crate::pika::messages::BinlogPosition;
use crate::resp::encode_command;

/// A RESP connection to the master's client port.
pub(crate) struct Client {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
        })
    }

    pub(crate) fn queue(&mut self, args: &[&[u8]]) {
        encode_command(args, &mut self.out);
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    pub(crate) async fn reply(&mut self) -> std::io::Result<BytesFrame> {
        loop {
            match decode_bytes_mut(&mut self.buf) {
                Ok(Some((frame, _, _))) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(format!("bad reply: {e:?}"))),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the master closed the connection",
                ));
            }
        }
    }

    pub(crate) async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<BytesFrame> {
        self.queue(args);
        self.flush().await?;
        match self.reply().await? {
            BytesFrame::Error(e) => Err(std::io::Error::other(format!(
                "{} failed: {e}",
                String::from_utf8_lossy(args[0])
            ))),
            frame => Ok(frame),
        }
    }

    /// The master's clock from `TIME`, or `None` when it does not answer it.
    pub(crate) async fn master_clock_ms(&mut self) -> std::io::Result<Option<i64>> {
        self.queue(&[b"TIME"]);
        self.flush().await?;
        Ok(clock_ms(&self.reply().await?))
    }

    /// The text of `INFO replication`.
    pub(crate) async fn info_replication(&mut self) -> std::io::Result<bytes::Bytes> {
        match self.call(&[b"INFO", b"replication"]).await? {
            BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Ok(b),
            _ => Err(std::io::Error::other("INFO returned no text")),
        }
    }

    /// `db<N>:binlog_offset=<filenum> <offset>,…` from `INFO replication`.
    pub(crate) async fn binlog_offset(&mut self, db_name: &str) -> std::io::Result<BinlogPosition> {
        let text = self.info_replication().await?;
        parse_binlog_offset(&text, db_name).ok_or_else(|| {
            std::io::Error::other(format!("INFO replication has no {db_name}:binlog_offset"))
        })
    }
}

/// The ms since the epoch a `TIME` reply names (`None` for anything else, e.g. an error).
pub(crate) fn clock_ms(frame: &BytesFrame) -> Option<i64> {
    let BytesFrame::Array(parts) = frame else {
        return None;
    };
    let num = |f: Option<&BytesFrame>| -> Option<i64> {
        match f? {
            BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => {
                std::str::from_utf8(b).ok()?.parse().ok()
            }
            BytesFrame::Integer(i) => Some(*i),
            _ => None,
        }
    };
    Some(num(parts.first())? * 1000 + num(parts.get(1))? / 1000)
}

/// Finds `<db>:binlog_offset=<filenum> <offset>` in an `INFO replication` text.
pub fn parse_binlog_offset(info: &[u8], db_name: &str) -> Option<BinlogPosition> {
    let text = std::str::from_utf8(info).ok()?;
    let prefix = format!("{db_name}:binlog_offset=");
    let line = text.lines().find_map(|l| l.trim().strip_prefix(&prefix))?;
    let value = line.split(',').next()?;
    let mut parts = value.split_whitespace();
    let filenum = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(BinlogPosition::new(filenum, offset))
}

impl Client {
    /// `pika_version` from `INFO server`, or `None` when the server names none (not a Pika).
    pub(crate) async fn pika_version(&mut self) -> std::io::Result<Option<String>> {
        let frame = self.call(&[b"INFO", b"server"]).await?;
        let text = match frame {
            BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => b,
            _ => return Err(std::io::Error::other("INFO returned no text")),
        };
        Ok(std::str::from_utf8(&text).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.trim().strip_prefix("pika_version:"))
                .map(|v| v.trim().to_string())
        }))
    }
}

/// The releases whose replication this proxy knows: the 3.x line from 3.1 (the protocol on
/// P+2000 with offsets and acks) to 3.5, and 4.0.
pub const KNOWN_RELEASES: &str = "3.1–3.5 and 4.0";

/// The release family of a `pika_version` string, or why it is not one the proxy knows.
/// (4.0.1 reports itself as 4.0.0: its version header was never bumped.)
pub fn release_of(version: &str) -> Result<PikaRelease, String> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(3)), Some(Ok(1..=5))) => Ok(PikaRelease::V3),
        (Some(Ok(4)), Some(Ok(0))) => Ok(PikaRelease::V4),
        (Some(Ok(_)), Some(Ok(_))) => Err(format!(
            "Pika {version}, a release this proxy does not know (it knows {KNOWN_RELEASES})"
        )),
        _ => Err(format!("an unreadable pika_version '{version}'")),
    }
}

/// Asks the master at `addr` (its port P) which release it runs.
pub(crate) async fn master_release(
    addr: SocketAddr,
    password: Option<&str>,
) -> std::io::Result<Option<Result<PikaRelease, String>>> {
    let mut client = Client::connect(addr).await?;
    if let Some(pw) = password {
        client.call(&[b"AUTH", pw.as_bytes()]).await?;
    }
    Ok(client.pika_version().await?.map(|v| release_of(&v)))
}

/// How long a link start waits for the master's `INFO server`.
const RELEASE_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The master's release as its client port P names it. `Err` refuses the link: a release the
/// proxy does not know (unless allowed). A master that cannot be asked, or names no
/// `pika_version`, is logged and left to its MetaSync answer.
pub(crate) async fn release_for_link(
    cfg: &PikaRelayConfig,
    peer: SocketAddr,
) -> Result<Option<PikaRelease>, String> {
    let asked = tokio::time::timeout(
        RELEASE_QUERY_TIMEOUT,
        master_release(cfg.master, cfg.master_password.as_deref()),
    )
    .await;
    match asked {
        Ok(Ok(Some(Ok(release)))) => Ok(Some(release)),
        Ok(Ok(Some(Err(why)))) if cfg.allow_unknown_version => {
            tracing::warn!(%peer, master = %cfg.master, "the master runs {why}; relaying it as allowed by --allow-unknown-pika-version");
            Ok(None)
        }
        Ok(Ok(Some(Err(why)))) => Err(why),
        Ok(Ok(None)) => {
            tracing::warn!(%peer, master = %cfg.master, "the master's INFO server names no pika_version; its release is taken from its MetaSync answer");
            Ok(None)
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, master = %cfg.master, "could not ask the master for its release on port P: {e}; it is taken from its MetaSync answer");
            Ok(None)
        }
        Err(_) => {
            tracing::warn!(%peer, master = %cfg.master, "the master did not answer INFO server within {RELEASE_QUERY_TIMEOUT:?}; its release is taken from its MetaSync answer");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_the_proxy_knows() {
        assert_eq!(release_of("3.5.4"), Ok(PikaRelease::V3));
        assert_eq!(release_of("3.1.0"), Ok(PikaRelease::V3));
        assert_eq!(release_of("4.0.0"), Ok(PikaRelease::V4));
        assert_eq!(release_of("4.0.2-alpha"), Ok(PikaRelease::V4));
        assert!(release_of("3.0.16").is_err());
        assert!(release_of("4.1.0").unwrap_err().contains("does not know"));
        assert!(release_of("5.0.0").is_err());
        assert!(release_of("banana").is_err());
    }
}
