//! The inputs of a link's state machine ([`LinkMachine`](super::LinkMachine)), decoded
//! from the frames the replica and the master send.
//!
//! Each frame is decoded here exactly once. A BinlogSync response in particular becomes one
//! [`BinlogResponse`]: its entries are decoded in one pass, with the DB they name and whether
//! they mix DBs or are all keepalives. That one view then serves the phase check, the mixed-DB
//! check, the rewrite ([`LinkRewriter::rewrite_records`](crate::pika_relay::rewrite::LinkRewriter)) and the
//! offset-map update.

use crate::pika::messages::{
    BinlogSyncRecord, BinlogSyncRequest, InnerRequest, InnerResponse, MessageError, MessageType,
    MetaSyncRequest, MetaSyncResponse, Slot, SyncPointRequest, TrySyncResponse,
};
use crate::pika_relay::error::{LinkError, Side};

/// A replica → master request, decoded.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    /// MetaSync (forwarded unchanged; the driver learns the replica's name from it).
    MetaSync(Option<MetaSyncRequest<'a>>),
    /// TrySync at the replica's own position.
    TrySync(SyncPointRequest<'a>),
    /// DBSync: the replica asks for a full sync.
    DbSync(SyncPointRequest<'a>),
    /// BinlogSync: first_send, an ack or a ping.
    BinlogSync(BinlogSyncRequest<'a>),
    /// Anything else (forwarded unchanged).
    Other,
}

impl<'a> Request<'a> {
    /// Decodes a request body.
    pub(crate) fn decode(body: &'a [u8]) -> Result<Request<'a>, LinkError> {
        let err = |e| LinkError::Message(Side::Replica, e);
        let req = InnerRequest::parse(body).map_err(err)?;
        Ok(match req.msg_type {
            MessageType::MetaSync => Request::MetaSync(req.meta_sync().map_err(err)?),
            MessageType::TrySync => Request::TrySync(
                req.try_sync()
                    .map_err(err)?
                    .ok_or_else(|| missing("try_sync"))?,
            ),
            MessageType::DbSync => Request::DbSync(
                req.db_sync()
                    .map_err(err)?
                    .ok_or_else(|| missing("db_sync"))?,
            ),
            MessageType::BinlogSync => Request::BinlogSync(
                req.binlog_sync()
                    .map_err(err)?
                    .ok_or_else(|| missing("binlog_sync"))?,
            ),
            _ => Request::Other,
        })
    }
}

fn missing(what: &str) -> LinkError {
    LinkError::Protocol(
        Side::Replica,
        format!("{what} message without its {what} field"),
    )
}

/// A master → replica response, decoded.
#[derive(Debug)]
pub(crate) enum Response<'a> {
    /// MetaSync reply (forwarded unchanged; it tells the master's release).
    MetaSync(Option<MetaSyncResponse<'a>>),
    /// TrySync reply.
    TrySync(Option<TrySyncResponse<'a>>),
    /// BinlogSync: items or keepalives.
    BinlogSync(BinlogResponse<'a>),
    /// Anything else (forwarded unchanged).
    Other,
}

impl<'a> Response<'a> {
    /// Decodes a response body in one walk; a BinlogSync response's entries are all decoded
    /// here.
    pub(crate) fn decode(body: &'a [u8]) -> Result<Response<'a>, LinkError> {
        let err = |e| LinkError::Message(Side::Master, e);
        let (resp, binlog) = decode_response(body).map_err(err)?;
        Ok(match resp.msg_type {
            MessageType::MetaSync => Response::MetaSync(resp.meta_sync().map_err(err)?),
            MessageType::TrySync => Response::TrySync(resp.try_sync().map_err(err)?),
            MessageType::BinlogSync => Response::BinlogSync(binlog.map_err(err)?),
            _ => Response::Other,
        })
    }
}

/// Reads a response's top level and decodes its `binlog_sync` entries on the way (one walk of
/// the body). An entry that does not decode only matters for a BinlogSync response, so its
/// error is returned beside the top level.
pub(crate) fn decode_response(
    body: &[u8],
) -> Result<(InnerResponse<'_>, Result<BinlogResponse<'_>, MessageError>), MessageError> {
    let mut binlog = Ok(BinlogResponse::default());
    let resp = InnerResponse::parse_with(body, |record, payload| {
        if let Ok(decoded) = binlog.as_mut() {
            match BinlogSyncRecord::decode(record, payload) {
                Ok(record) => {
                    if decoded.records.is_empty() {
                        // Room for as many entries as the body holds if they are at least half
                        // as long as the first (a SETEX then shorter INCRs): one allocation
                        // instead of a growth per doubling, each copying every record so far.
                        let len = record.record.len().max(1);
                        decoded.records.reserve((2 * body.len() / len + 1).min(512));
                    }
                    decoded.push(record)
                }
                Err(e) => binlog = Err(e),
            }
        }
    })?;
    Ok((resp, binlog))
}

/// The entries of one BinlogSync response, each decoded once, in order.
#[derive(Debug, Default)]
pub(crate) struct BinlogResponse<'a> {
    /// Every entry with its place in the body (what the rewrite splices by).
    pub records: Vec<BinlogSyncRecord<'a>>,
    /// The first entry's DB (Pika sends one DB per response); `None` without entries.
    pub slot: Option<Slot<'a>>,
    /// The first entry naming another DB than the first one, if any.
    pub other_slot: Option<Slot<'a>>,
    /// Every entry is a keepalive (empty binlog); false without entries.
    pub keepalive: bool,
}

impl<'a> BinlogResponse<'a> {
    /// Adds the next entry.
    fn push(&mut self, record: BinlogSyncRecord<'a>) {
        let this = record.entry.slot;
        match self.slot {
            None => {
                self.slot = Some(this);
                self.keepalive = true;
            }
            Some(first) if self.other_slot.is_none() && !same_slot(&first, &this) => {
                self.other_slot = Some(this)
            }
            Some(_) => {}
        }
        self.keepalive &= record.entry.is_keepalive();
        self.records.push(record);
    }

    /// The error for a response mixing DBs, if this one does.
    pub(crate) fn mixed(&self) -> Option<MessageError> {
        let (first, other) = (self.slot?, self.other_slot?);
        let name = |s: Slot<'_>| format!("{}:{}", String::from_utf8_lossy(s.db_name), s.slot_id);
        Some(MessageError::MixedSlots {
            first: name(first),
            other: name(other),
        })
    }
}

fn same_slot(a: &Slot<'_>, b: &Slot<'_>) -> bool {
    a.db_name == b.db_name && a.slot_id == b.slot_id
}
