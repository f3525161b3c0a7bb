//! The Pika 3.5.4 captures (`tests/fixtures/pika-3.5.4/`, documented frame by frame in their
//! README) as the codec tests read them: the session files, their frame bodies, the replica the
//! sessions ran with, and the README's table of the master's binlog items.

use bytes::Bytes;
use pika_ttl_proxy::pika::frame::FrameCodec;
use pika_ttl_proxy::pika::messages::BinlogPosition;
use pika_ttl_proxy::pika::proto::Field;
use std::sync::OnceLock;

pub const REPL1_UP: &str = "session1-repl1-replica-to-master.bin";
pub const REPL1_DOWN: &str = "session1-repl1-master-to-replica.bin";
pub const REPL2_UP: &str = "session1-repl2-replica-to-master.bin";
pub const REPL2_DOWN: &str = "session1-repl2-master-to-replica.bin";
pub const SESSION2_UP: &str = "session2-repl-replica-to-master.bin";
pub const SESSION2_DOWN: &str = "session2-repl-master-to-replica.bin";
pub const RSYNC_UP: &str = "session1-rsync-replica-to-master.bin";
pub const RSYNC_DOWN: &str = "session1-rsync-master-to-replica.bin";
pub const REPL_FILES: [&str; 6] = [
    REPL1_UP,
    REPL1_DOWN,
    REPL2_UP,
    REPL2_DOWN,
    SESSION2_UP,
    SESSION2_DOWN,
];
pub const UP_FILES: [&str; 3] = [REPL1_UP, REPL2_UP, SESSION2_UP];
pub const DOWN_FILES: [&str; 3] = [REPL1_DOWN, REPL2_DOWN, SESSION2_DOWN];

pub fn load(name: &str) -> Vec<u8> {
    pika_ttl_proxy::fixtures::read(&format!("pika-3.5.4/{name}")).unwrap_or_else(|e| panic!("{e}"))
}

/// Frame bodies with the offset of each frame's length prefix in the file.
pub fn frames(name: &str) -> Vec<(usize, Bytes)> {
    let data = load(name);
    let bodies = FrameCodec::new().decode_all(&data).unwrap();
    let mut at = 0;
    bodies
        .into_iter()
        .map(|body| {
            let frame_at = at;
            at += 4 + body.len();
            (frame_at, body)
        })
        .collect()
}

pub fn bodies(name: &str) -> Vec<Bytes> {
    frames(name).into_iter().map(|(_, b)| b).collect()
}

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Parses content that must be exactly one RESP multibulk; returns its arguments joined by
/// spaces.
pub fn resp_command(content: &[u8]) -> String {
    fn line(buf: &[u8], pos: &mut usize) -> String {
        let end = buf[*pos..].windows(2).position(|w| w == b"\r\n").unwrap() + *pos;
        let text = String::from_utf8(buf[*pos..end].to_vec()).unwrap();
        *pos = end + 2;
        text
    }
    let mut pos = 0;
    let head = line(content, &mut pos);
    let argc: usize = head.strip_prefix('*').unwrap().parse().unwrap();
    let mut args = Vec::new();
    for _ in 0..argc {
        let len: usize = line(content, &mut pos)
            .strip_prefix('$')
            .unwrap()
            .parse()
            .unwrap();
        args.push(String::from_utf8(content[pos..pos + len].to_vec()).unwrap());
        assert_eq!(&content[pos + len..pos + len + 2], b"\r\n");
        pos += len + 2;
    }
    assert_eq!(pos, content.len(), "trailing bytes after one command");
    args.join(" ")
}

pub fn all_fixture_bodies() -> &'static [(&'static str, Bytes)] {
    static ALL: OnceLock<Vec<(&'static str, Bytes)>> = OnceLock::new();
    ALL.get_or_init(|| {
        REPL_FILES
            .iter()
            .chain(&[RSYNC_UP, RSYNC_DOWN])
            .flat_map(|f| bodies(f).into_iter().map(move |b| (*f, b)))
            .collect()
    })
}

pub fn pos(offset: u64) -> BinlogPosition {
    BinlogPosition::new(0, offset)
}

/// The replica of the captured sessions, as its requests name it.
pub const REPLICA_IP: &[u8] = b"127.0.0.1";
pub const REPLICA_PORT: i32 = 19231;

pub fn find<'a>(fields: &[Field<'a>], number: u32) -> Vec<Field<'a>> {
    fields
        .iter()
        .filter(|f| f.number() == number)
        .copied()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The README's item table
// ---------------------------------------------------------------------------------------------

/// One binlog item: logic id, start, end, content_len, master exec_time, command.
pub type ItemRow = (u64, u64, u64, u32, u32, &'static str);

/// "Master binlog session1-master-binlog-write2file0.bin" table (lids 1–49).
pub const SESSION1_ITEMS: [ItemRow; 49] = [
    (1, 0, 95, 53, 1795469984, "pksetexat k1 1795469994 100"),
    (2, 95, 159, 22, 1795469985, "INCR k1"),
    (3, 159, 255, 54, 1795469986, "SET s1 abc EX 30 NX"),
    (4, 255, 328, 31, 1795469987, "APPEND k1 x"),
    (5, 328, 406, 36, 1795469988, "HSET h1 f v"),
    (6, 406, 491, 43, 1795469989, "expireat h1 1795470009"),
    (7, 491, 572, 39, 1795469990, "HINCRBY h1 n 5"),
    (8, 572, 644, 30, 1795469991, "LPUSH l1 a"),
    (9, 644, 729, 43, 1795469992, "expireat l1 1795470007"),
    (10, 729, 800, 29, 1795469993, "SADD s2 m"),
    (11, 800, 878, 36, 1795469994, "ZADD z1 1 m"),
    (12, 878, 973, 53, 1795470051, "pksetexat k3 1795470054 100"),
    (13, 973, 1051, 36, 1795470051, "HSET h3 f v"),
    (14, 1051, 1136, 43, 1795470051, "expireat h3 1795470054"),
    (15, 1136, 1229, 51, 1795470051, "pksetexat k5 1795470054 7"),
    (16, 1229, 1293, 22, 1795470052, "INCR k3"),
    (17, 1293, 1374, 39, 1795470052, "HINCRBY h3 n 1"),
    (18, 1374, 1447, 31, 1795470052, "APPEND k5 x"),
    (19, 1447, 1542, 53, 1795470052, "SET s3 abc EX 4 NX"),
    (20, 1542, 1622, 38, 1795470088, "SET during_down 1"),
    (21, 1622, 1687, 23, 1795470088, "INCR ctr"),
    (22, 1687, 1780, 51, 1795470117, "pksetexat a1 1795470147 v"),
    (23, 1780, 1873, 51, 1795470117, "pksetexat a2 1795470147 v"),
    (24, 1873, 1967, 52, 1795470117, "SET a3 v XX EX 30"),
    (25, 1967, 2061, 52, 1795470117, "SET a1 w XX EX 30"),
    (26, 2061, 2139, 36, 1795470117, "SET a4 v NX"),
    (27, 2139, 2232, 51, 1795470117, "pksetexat a5 1795470132 v"),
    (28, 2232, 2304, 30, 1795470117, "setnx a6 v"),
    (29, 2304, 2376, 30, 1795470117, "setnx a6 w"),
    (30, 2376, 2461, 43, 1795470117, "EXPIREAT a6 2000000000"),
    (31, 2461, 2546, 43, 1795470117, "expireat a6 2000000000"),
    (32, 2546, 2613, 25, 1795470117, "PERSIST a6"),
    (33, 2613, 2686, 31, 1795470117, "INCRBY a7 3"),
    (34, 2686, 2767, 39, 1795470117, "INCRBYFLOAT a7 1.5"),
    (35, 2767, 2831, 22, 1795470117, "DECR a8"),
    (36, 2831, 2904, 31, 1795470117, "GETSET a8 9"),
    (37, 2904, 2987, 41, 1795470117, "SETRANGE a8 2 zz"),
    (38, 2987, 3057, 28, 1795470117, "set m1 1"),
    (39, 3057, 3127, 28, 1795470117, "set m2 2"),
    (40, 3127, 3190, 21, 1795470117, "DEL m1"),
    (41, 3190, 3253, 21, 1795470117, "DEL m2"),
    (42, 3253, 3320, 25, 1795470117, "DEL nosuch"),
    (43, 3320, 3413, 51, 1795470117, "HMSET h9 a 1 b 2"),
    (44, 3413, 3493, 38, 1795470117, "HSETNX h9 c 3"),
    (45, 3493, 3582, 47, 1795470117, "HINCRBYFLOAT h9 a 0.5"),
    (46, 3582, 3661, 37, 1795470117, "RPUSH l9 x y"),
    (47, 3661, 3732, 29, 1795470117, "SREM s2 m"),
    (48, 3732, 3813, 39, 1795470117, "ZINCRBY z1 2 m"),
    (49, 3813, 3898, 43, 1795470117, "expireat a7 1795470217"),
];

/// Session 2's two items.
pub const SESSION2_ITEMS: [ItemRow; 2] = [
    (1, 0, 93, 51, 1795470174, "pksetexat t1 1795470224 1"),
    (2, 93, 157, 22, 1795470174, "incr t1"),
];

pub fn items_of(file: &str) -> &'static [ItemRow] {
    if file.starts_with("session2") {
        &SESSION2_ITEMS
    } else {
        &SESSION1_ITEMS
    }
}

pub fn row(table: &[ItemRow], lid: u64) -> ItemRow {
    *table.iter().find(|r| r.0 == lid).unwrap()
}
