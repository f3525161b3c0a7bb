//! Bringing a checkpointed expiry table forward along the master's own binlog, so that a relay
//! restarted after a crash knows every key exactly as of the position its replica resumes from.
//!
//! # Why the master's binlog and not a journal of our own
//!
//! A replica resumes from the last item it *applied*, which can be any item the relay forwarded
//! before it died. A journal of table changes would have to be on disk before each response is
//! forwarded (an fsync on the data path of every response) to cover every such position. The
//! master keeps its binlog anyway: the relay only writes a checkpoint of the table now and then
//! (at the END of a forwarded item, off the data path), and after a crash it reads the master's
//! items from that checkpoint to the replica's resume position through the engine, for their
//! effect on the table only.
//!
//! # How
//!
//! On its own P+2000 connection, under its own node name (the relay's listen address, which no
//! replica can have), the relay does what a replica does: MetaSync, TrySync at the checkpoint's
//! position, first_send, then an exact ack for every response, until an item ends at the target
//! position. Then it closes the connection: the master forgets that slave.
//!
//! # When it cannot
//!
//! The master purged the checkpoint's position, refuses the session, or does not answer within
//! the limit; or no item ends exactly at the target. The caller then starts without the table
//! (its warm-up scan learns the keys; entries on keys written in the backlog pass as
//! `unknown_key`) and logs why.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::rewrite::LinkRewriter;
use crate::pika::frame::FrameCodec;
use crate::pika::messages::{
    build_binlog_sync_request, build_keepalive_ack, build_meta_sync_request,
    build_try_sync_request, BinlogPosition, InnerResponse, LogicalOffset, MessageType,
    NewBinlogSyncRequest, Node, Slot, StatusCode, TrySyncReplyCode,
};

/// What one catch-up needs to know.
#[derive(Clone, Debug)]
pub(crate) struct CatchUp {
    /// The master's replication port (P+2000).
    pub master: SocketAddr,
    /// The master's `requirepass`, sent in MetaSync.
    pub password: Option<String>,
    /// The name the relay gives itself towards the master.
    pub node_ip: String,
    /// Its port.
    pub node_port: u16,
    /// The DB.
    pub db_name: Vec<u8>,
    /// The slot.
    pub slot_id: u32,
    /// Where the checkpoint is.
    pub from: BinlogPosition,
    /// Where the replica resumes: the END of an item.
    pub until: BinlogPosition,
}

/// How a catch-up ended, for the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Caught {
    /// Items run through the engine.
    pub items: u64,
    /// How long it took.
    pub took: Duration,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Conn {
    async fn send(&mut self, body: &[u8]) -> Result<(), String> {
        let mut out = BytesMut::new();
        self.codec
            .encode(body, &mut out)
            .map_err(|e| format!("encoding a request: {e}"))?;
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("writing to the master: {e}"))
    }

    async fn next(&mut self) -> Result<Bytes, String> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(body)) => return Ok(body),
                Ok(None) => {}
                Err(e) => return Err(format!("the master's framing: {e}")),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("the master closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading from the master: {e}")),
            }
        }
    }

    /// The next response of type `want`, skipping keepalives of other kinds.
    async fn expect(&mut self, want: MessageType) -> Result<Bytes, String> {
        loop {
            let body = self.next().await?;
            let resp = InnerResponse::parse(&body).map_err(|e| format!("a response: {e}"))?;
            if resp.msg_type != want {
                continue;
            }
            if resp.code != StatusCode::Ok {
                let why = resp
                    .reply
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .unwrap_or_default();
                return Err(format!("the master refused {want:?}: {why}"));
            }
            return Ok(body);
        }
    }
}

/// Reads the master's items after `job.from` up to `job.until` into `rewriter`'s table, within
/// `limit`.
pub(crate) async fn run(
    job: &CatchUp,
    rewriter: &mut LinkRewriter,
    limit: Duration,
) -> Result<Caught, String> {
    match tokio::time::timeout(limit, run_unbounded(job, rewriter)).await {
        Ok(result) => result,
        Err(_) => Err(format!("not done within {limit:?}")),
    }
}

/// A replica session of the relay's own on the master's P+2000, streaming from a position.
pub(crate) struct OwnSession {
    conn: Conn,
    node_ip: Vec<u8>,
    node_port: i32,
    db_name: Vec<u8>,
    slot_id: u32,
    session_id: i32,
}

impl OwnSession {
    /// Does what a replica does up to its first_send: MetaSync, TrySync at `from`, first_send.
    pub(crate) async fn open(job: &CatchUp, from: BinlogPosition) -> Result<OwnSession, String> {
        let stream = TcpStream::connect(job.master)
            .await
            .map_err(|e| format!("connecting to {}: {e}", job.master))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            codec: FrameCodec::new(),
        };
        let node = Node {
            ip: job.node_ip.as_bytes(),
            port: i32::from(job.node_port),
        };
        let slot = Slot {
            db_name: &job.db_name,
            slot_id: job.slot_id,
        };
        conn.send(&build_meta_sync_request(
            node,
            job.password.as_deref().map(str::as_bytes),
        ))
        .await?;
        conn.expect(MessageType::MetaSync).await?;
        conn.send(&build_try_sync_request(node, slot, from)).await?;
        let body = conn.expect(MessageType::TrySync).await?;
        let resp = InnerResponse::parse(&body).map_err(|e| format!("TrySync reply: {e}"))?;
        let ts = resp
            .try_sync()
            .map_err(|e| format!("TrySync reply: {e}"))?
            .ok_or("a TrySync reply without its try_sync field")?;
        if ts.reply_code != TrySyncReplyCode::Ok {
            return Err(format!(
                "the master cannot resume at {from} ({:?})",
                ts.reply_code
            ));
        }
        let mut session = OwnSession {
            conn,
            node_ip: job.node_ip.as_bytes().to_vec(),
            node_port: i32::from(job.node_port),
            db_name: job.db_name.clone(),
            slot_id: job.slot_id,
            session_id: ts.session_id.unwrap_or(0),
        };
        let at_from = LogicalOffset {
            filenum: from.filenum,
            offset: from.offset,
            term: 0,
            index: 0,
        };
        session.request(at_from, at_from, true).await?;
        Ok(session)
    }

    async fn request(
        &mut self,
        start: LogicalOffset,
        end: LogicalOffset,
        first_send: bool,
    ) -> Result<(), String> {
        let body = build_binlog_sync_request(&NewBinlogSyncRequest {
            node: Node {
                ip: &self.node_ip,
                port: self.node_port,
            },
            db_name: &self.db_name,
            slot_id: self.slot_id,
            ack_range_start: start,
            ack_range_end: end,
            session_id: self.session_id,
            first_send,
        });
        self.conn.send(&body).await
    }

    /// Acks the items `first..=last`: the master sends the next ones.
    pub(crate) async fn ack(
        &mut self,
        first: LogicalOffset,
        last: LogicalOffset,
    ) -> Result<(), String> {
        self.request(first, last, false).await
    }

    /// The next BinlogSync response with items; keepalives are answered on the way.
    pub(crate) async fn next_items(&mut self) -> Result<Bytes, String> {
        loop {
            let body = self.conn.expect(MessageType::BinlogSync).await?;
            let resp = InnerResponse::parse(&body).map_err(|e| format!("BinlogSync: {e}"))?;
            if !resp
                .is_keepalive()
                .map_err(|e| format!("BinlogSync: {e}"))?
            {
                return Ok(body);
            }
            let ack = build_keepalive_ack(
                Node {
                    ip: &self.node_ip,
                    port: self.node_port,
                },
                &self.db_name,
                self.slot_id,
                self.session_id,
            );
            self.conn.send(&ack).await?;
        }
    }
}

async fn run_unbounded(job: &CatchUp, rewriter: &mut LinkRewriter) -> Result<Caught, String> {
    let started = Instant::now();
    let mut session = OwnSession::open(job, job.from).await?;
    let mut items = 0u64;
    loop {
        let body = session.next_items().await?;
        let done = rewriter
            .replay_response(&body, job.until)
            .map_err(|e| format!("an item: {e}"))?;
        items += done.applied;
        if let (Some(first), Some(last)) = (done.first, done.last) {
            session.ack(first, last).await?;
        }
        if done.reached {
            return Ok(Caught {
                items,
                took: started.elapsed(),
            });
        }
        if done.overshot {
            return Err(format!(
                "no item of the master ends at the resume position {}",
                job.until
            ));
        }
    }
}
