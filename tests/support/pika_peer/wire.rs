//! Encoders for the protobuf messages the fake peers originate (the relay's codec only builds
//! what a relay originates). Serialized the way Pika's C++ code does: fields in number order,
//! explicit zeros written, BinlogOffset with fields 1–2 in TrySync/DBSync messages.

use pika_ttl_proxy::pika::messages::BinlogPosition;
use pika_ttl_proxy::pika::proto::{put_len_field, put_varint_field};

/// A message under construction.
#[derive(Default)]
pub struct Msg(pub Vec<u8>);

impl Msg {
    pub fn new() -> Self {
        Msg(Vec::new())
    }
    pub fn varint(mut self, field: u32, v: u64) -> Self {
        put_varint_field(&mut self.0, field, v);
        self
    }
    pub fn int32(self, field: u32, v: i32) -> Self {
        // int32 is sign-extended to 64 bits on the wire.
        self.varint(field, v as i64 as u64)
    }
    pub fn bytes(mut self, field: u32, b: &[u8]) -> Self {
        put_len_field(&mut self.0, field, b);
        self
    }
    pub fn msg(self, field: u32, m: Msg) -> Self {
        self.bytes(field, &m.0)
    }
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

pub fn node(ip: &str, port: u16) -> Msg {
    Msg::new().bytes(1, ip.as_bytes()).int32(2, i32::from(port))
}

pub fn slot(db: &str) -> Msg {
    Msg::new().bytes(1, db.as_bytes()).varint(2, 0)
}

pub fn position(p: BinlogPosition) -> Msg {
    Msg::new()
        .varint(1, u64::from(p.filenum))
        .varint(2, p.offset)
}

// ----- requests (replica → master) -----

pub fn meta_sync_request(ip: &str, port: u16) -> Vec<u8> {
    Msg::new()
        .varint(1, 1)
        .msg(2, Msg::new().msg(1, node(ip, port)))
        .done()
}

pub fn try_sync_request(ip: &str, port: u16, db: &str, at: BinlogPosition) -> Vec<u8> {
    Msg::new()
        .varint(1, 2)
        .msg(
            3,
            Msg::new()
                .msg(1, node(ip, port))
                .msg(2, slot(db))
                .msg(3, position(at)),
        )
        .done()
}

pub fn db_sync_request(ip: &str, port: u16, db: &str, at: BinlogPosition) -> Vec<u8> {
    Msg::new()
        .varint(1, 3)
        .msg(
            4,
            Msg::new()
                .msg(1, node(ip, port))
                .msg(2, slot(db))
                .msg(3, position(at)),
        )
        .done()
}

// ----- responses (master → replica) -----

/// MetaSync reply; `db_instance_num` is set by 4.0 masters only.
pub fn meta_sync_response(
    run_id: &str,
    replication_id: &str,
    db_instance_num: Option<i32>,
) -> Vec<u8> {
    let mut db = Msg::new().bytes(1, b"db0").int32(2, 1);
    if let Some(n) = db_instance_num {
        db = db.int32(3, n);
    }
    Msg::new()
        .varint(1, 1)
        .varint(2, 1)
        .msg(
            4,
            Msg::new()
                .varint(1, 1)
                .msg(2, db)
                .bytes(3, run_id.as_bytes())
                .bytes(4, replication_id.as_bytes()),
        )
        .done()
}

pub fn db_sync_response(db: &str, session_id: i32) -> Vec<u8> {
    Msg::new()
        .varint(1, 3)
        .varint(2, 1)
        .msg(5, Msg::new().msg(1, slot(db)).int32(2, session_id))
        .done()
}

/// TrySync reply; `session_id` only for kOk (1).
pub fn try_sync_response(
    reply_code: u64,
    db: &str,
    producer: BinlogPosition,
    session_id: Option<i32>,
) -> Vec<u8> {
    let mut inner = Msg::new()
        .varint(1, reply_code)
        .msg(2, slot(db))
        .msg(3, position(producer));
    if let Some(s) = session_id {
        inner = inner.int32(4, s);
    }
    Msg::new().varint(1, 2).varint(2, 1).msg(6, inner).done()
}

// ----- rsync2 (P+10001) -----

pub fn rsync_meta_request(reader_index: i32, db: &str) -> Vec<u8> {
    Msg::new()
        .varint(1, 1)
        .int32(2, reader_index)
        .bytes(3, db.as_bytes())
        .varint(4, 0)
        .done()
}

pub fn rsync_file_request(reader_index: i32, db: &str, file: &str, offset: u64) -> Vec<u8> {
    Msg::new()
        .varint(1, 2)
        .int32(2, reader_index)
        .bytes(3, db.as_bytes())
        .varint(4, 0)
        .msg(
            5,
            Msg::new()
                .bytes(1, file.as_bytes())
                .varint(2, 4_194_304)
                .varint(3, offset),
        )
        .done()
}

pub fn rsync_meta_response(reader_index: i32, uuid: &str, db: &str, files: &[&str]) -> Vec<u8> {
    let mut meta = Msg::new();
    for f in files {
        meta = meta.bytes(1, f.as_bytes());
    }
    Msg::new()
        .varint(1, 1)
        .int32(2, reader_index)
        .bytes(3, uuid.as_bytes())
        .bytes(4, db.as_bytes())
        .varint(5, 0)
        .varint(6, 1)
        .msg(7, meta)
        .done()
}

pub fn rsync_file_response(
    reader_index: i32,
    uuid: &str,
    db: &str,
    file: &str,
    offset: u64,
    data: &[u8],
) -> Vec<u8> {
    Msg::new()
        .varint(1, 2)
        .int32(2, reader_index)
        .bytes(3, uuid.as_bytes())
        .bytes(4, db.as_bytes())
        .varint(5, 0)
        .varint(6, 1)
        .msg(
            8,
            Msg::new()
                .varint(1, 1)
                .varint(2, data.len() as u64)
                .varint(3, offset)
                .bytes(4, data)
                .bytes(5, b"")
                .bytes(6, file.as_bytes()),
        )
        .done()
}
