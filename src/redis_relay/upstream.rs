//! The proxy's link to the master, as seen by one replica connection: connect, authenticate,
//! send commands, read one-line replies (skipping the master's `\n` keepalives), and the
//! PSYNC reply grammar (`docs/redis-protocol.md#psync-replies`).

use super::stats::{self, Side};
use crate::logging::quote_answer;
use crate::resp::encode_command;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Longest reply line accepted during the handshake (Redis caps inline replies far lower).
const MAX_LINE: usize = 64 * 1024;

/// Whether `line` can start a RESP reply (RESP2 or RESP3 type byte).
fn is_resp_reply(line: &[u8]) -> bool {
    matches!(
        line.first(),
        Some(
            b'+' | b'-'
                | b':'
                | b'$'
                | b'*'
                | b'_'
                | b','
                | b'#'
                | b'!'
                | b'='
                | b'('
                | b'%'
                | b'~'
                | b'>'
                | b'|'
        )
    )
}

/// Why the upstream link failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// Connecting or I/O failed.
    Io(std::io::Error),
    /// No reply within the deadline.
    Timeout,
    /// The master closed the connection.
    Closed,
    /// The master sent something that is not a valid reply here.
    Protocol(String),
    /// The master's address answers, but not in RESP: something else listens there.
    NotRedis(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Io(e) => write!(f, "I/O error on the master link: {e}"),
            UpstreamError::Timeout => write!(f, "the master did not answer in time"),
            UpstreamError::Closed => write!(f, "the master closed the connection"),
            UpstreamError::Protocol(why) => write!(f, "unexpected bytes from the master: {why}"),
            UpstreamError::NotRedis(answer) => write!(
                f,
                "the master address is not a Redis server: it answered {answer}"
            ),
        }
    }
}

impl std::error::Error for UpstreamError {}

impl From<std::io::Error> for UpstreamError {
    fn from(e: std::io::Error) -> Self {
        UpstreamError::Io(e)
    }
}

/// One line from the master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A bare `\n` (keepalive while the master prepares a payload).
    Keepalive,
    /// A reply line without its line ending.
    Text(Vec<u8>),
}

/// The master's answer to `PSYNC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsyncReply {
    /// `+FULLRESYNC <id> <offset>`.
    FullResync {
        /// The master's replication ID.
        id: String,
        /// The offset the payload corresponds to.
        offset: u64,
    },
    /// `+CONTINUE [<id>]`.
    Continue {
        /// The master's (possibly new) replication ID, when it sent one.
        id: Option<String>,
    },
    /// Any error line (relayed to the replica as is).
    Error(String),
}

/// Parse a PSYNC reply line.
pub fn parse_psync_reply(line: &[u8]) -> Result<PsyncReply, UpstreamError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| UpstreamError::Protocol("PSYNC reply is not text".into()))?;
    if let Some(rest) = text.strip_prefix("+FULLRESYNC ") {
        let mut parts = rest.split(' ');
        let (Some(id), Some(off), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(UpstreamError::Protocol(format!("bad reply '{text}'")));
        };
        // Redis offsets are signed 64-bit; anything larger is not an offset.
        let offset = off
            .parse::<u64>()
            .ok()
            .filter(|o| i64::try_from(*o).is_ok())
            .ok_or_else(|| UpstreamError::Protocol(format!("bad offset in '{text}'")))?;
        if !super::persist::is_repl_id(id) {
            return Err(UpstreamError::Protocol(format!(
                "bad replication id in '{text}'"
            )));
        }
        return Ok(PsyncReply::FullResync {
            id: id.to_string(),
            offset,
        });
    }
    if text == "+CONTINUE" {
        return Ok(PsyncReply::Continue { id: None });
    }
    if let Some(id) = text.strip_prefix("+CONTINUE ") {
        if !super::persist::is_repl_id(id) {
            return Err(UpstreamError::Protocol(format!(
                "bad replication id in '{text}'"
            )));
        }
        return Ok(PsyncReply::Continue {
            id: Some(id.to_string()),
        });
    }
    if text.starts_with('-') {
        return Ok(PsyncReply::Error(text.to_string()));
    }
    Err(UpstreamError::Protocol(format!(
        "unexpected PSYNC reply '{text}'"
    )))
}

/// A connected upstream link.
#[derive(Debug)]
pub struct Upstream {
    /// Read half (the relay loop reads the stream from it directly).
    pub read: OwnedReadHalf,
    /// Write half.
    pub write: OwnedWriteHalf,
    /// Bytes read but not yet consumed.
    pub buf: BytesMut,
}

impl Upstream {
    /// Connect to the master.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Upstream, UpstreamError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Upstream {
            read,
            write,
            buf: BytesMut::with_capacity(16 * 1024),
        })
    }

    /// Send one command.
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), UpstreamError> {
        let mut out = BytesMut::new();
        encode_command(args, &mut out);
        self.write.write_all(&out).await?;
        stats::bytes(Side::Upstream, false, out.len());
        Ok(())
    }

    /// Read one line (a keepalive or a reply line), waiting at most `timeout` for it.
    pub async fn read_line(&mut self, timeout: Duration) -> Result<Line, UpstreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let mut text = &line[..pos];
                if let Some(stripped) = text.strip_suffix(b"\r") {
                    text = stripped;
                }
                return Ok(if text.is_empty() {
                    Line::Keepalive
                } else {
                    Line::Text(text.to_vec())
                });
            }
            if self.buf.len() > MAX_LINE {
                return Err(UpstreamError::Protocol(format!(
                    "reply line longer than {MAX_LINE} bytes"
                )));
            }
            self.buf.reserve(4096);
            let n = tokio::time::timeout_at(deadline, self.read.read_buf(&mut self.buf))
                .await
                .map_err(|_| UpstreamError::Timeout)??;
            if n == 0 {
                // A server that writes a banner without a line end and hangs up is named by
                // what it wrote, not reported as a master that merely closed.
                if !self.buf.is_empty() && !is_resp_reply(&self.buf) {
                    return Err(UpstreamError::NotRedis(quote_answer(&self.buf)));
                }
                return Err(UpstreamError::Closed);
            }
            stats::bytes(Side::Upstream, true, n);
        }
    }

    /// Read the reply to a command sent during the handshake: the first non-keepalive line.
    /// A line that is no RESP reply means another kind of server listens at the master's
    /// address; relaying it would only make the replica drop the link and retry forever.
    pub async fn read_reply(&mut self, timeout: Duration) -> Result<Vec<u8>, UpstreamError> {
        loop {
            if let Line::Text(t) = self.read_line(timeout).await? {
                if !is_resp_reply(&t) {
                    return Err(UpstreamError::NotRedis(quote_answer(&t)));
                }
                return Ok(t);
            }
        }
    }

    /// Read a bulk-string reply (`$<len>` and its body, as for `INFO`), at most `max` bytes.
    pub async fn read_bulk(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<u8>, UpstreamError> {
        let header = self.read_reply(timeout).await?;
        let len = header
            .strip_prefix(b"$")
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                UpstreamError::Protocol(format!(
                    "expected a bulk reply, got '{}'",
                    String::from_utf8_lossy(&header)
                ))
            })?;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.buf.len() < len + 2 {
            self.buf.reserve(len + 2 - self.buf.len());
            let n = tokio::time::timeout_at(deadline, self.read.read_buf(&mut self.buf))
                .await
                .map_err(|_| UpstreamError::Timeout)??;
            if n == 0 {
                return Err(UpstreamError::Closed);
            }
            stats::bytes(Side::Upstream, true, n);
        }
        let body = self.buf.split_to(len + 2);
        Ok(body[..len].to_vec())
    }

    /// Authenticate with the proxy's own credentials.
    pub async fn authenticate(
        &mut self,
        user: Option<&str>,
        password: &str,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        match user {
            Some(user) => self.send(&["AUTH", user, password]).await?,
            None => self.send(&["AUTH", password]).await?,
        }
        let reply = self.read_reply(timeout).await?;
        if reply.first() == Some(&b'+') {
            Ok(())
        } else {
            Err(UpstreamError::Protocol(format!(
                "AUTH with the configured master credentials failed: {}",
                String::from_utf8_lossy(&reply)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psync_replies() {
        assert_eq!(
            parse_psync_reply(b"+FULLRESYNC a507f8eeec018d9f9cffcad79efd27081110735e 209").unwrap(),
            PsyncReply::FullResync {
                id: "a507f8eeec018d9f9cffcad79efd27081110735e".into(),
                offset: 209
            }
        );
        assert_eq!(
            parse_psync_reply(b"+CONTINUE").unwrap(),
            PsyncReply::Continue { id: None }
        );
        assert_eq!(
            parse_psync_reply(b"+CONTINUE 2222222222222222222222222222222222222222").unwrap(),
            PsyncReply::Continue {
                id: Some("2".repeat(40))
            }
        );
        assert_eq!(
            parse_psync_reply(b"-NOMASTERLINK Can't SYNC while not connected with my master")
                .unwrap(),
            PsyncReply::Error("-NOMASTERLINK Can't SYNC while not connected with my master".into())
        );
        assert!(parse_psync_reply(b"+FULLRESYNC short 1").is_err());
        assert!(
            parse_psync_reply(b"+FULLRESYNC a507f8eeec018d9f9cffcad79efd27081110735e -1").is_err()
        );
        assert!(parse_psync_reply(b"+OK").is_err());
        assert!(parse_psync_reply(
            b"+FULLRESYNC a507f8eeec018d9f9cffcad79efd27081110735e 9223372036854775808"
        )
        .is_err());
    }

    #[tokio::test]
    async fn lines_and_keepalives() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 14];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"*1\r\n$4\r\nPING\r\n");
            s.write_all(b"\n\n+PONG\r\n$1").await.unwrap();
            s.write_all(b"72\r\n").await.unwrap();
        });
        let mut up = Upstream::connect(addr, Duration::from_secs(5))
            .await
            .unwrap();
        up.send(&["PING"]).await.unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(up.read_line(t).await.unwrap(), Line::Keepalive);
        assert_eq!(up.read_reply(t).await.unwrap(), b"+PONG");
        assert_eq!(up.read_line(t).await.unwrap(), Line::Text(b"$172".to_vec()));
        server.await.unwrap();
        assert!(matches!(up.read_line(t).await, Err(UpstreamError::Closed)));
    }

    #[tokio::test]
    async fn a_foreign_server_is_named_by_what_it_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for answer in [&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], b"\x00\xffbanner"] {
                let (mut s, _) = listener.accept().await.unwrap();
                s.write_all(answer).await.unwrap();
            }
        });
        let t = Duration::from_secs(5);
        let mut up = Upstream::connect(addr, t).await.unwrap();
        let e = up.read_reply(t).await.unwrap_err().to_string();
        assert!(
            e.contains("not a Redis server") && e.contains("\"HTTP/1.1 400 Bad Request\""),
            "{e}"
        );
        let mut up = Upstream::connect(addr, t).await.unwrap();
        let e = up.read_reply(t).await.unwrap_err().to_string();
        assert!(e.contains("\"\\x00\\xffbanner\""), "{e}");
        server.await.unwrap();
        assert_eq!(quote_answer(&[b'a'; 60]).chars().count(), 48 + 3);
    }
}
