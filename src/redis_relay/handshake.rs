//! What to do with each command a replica sends before its stream starts
//! (`docs/redis-protocol.md#handshake`).
//!
//! The proxy plays master towards the replica and replica towards the master, over one upstream
//! link per replica connection:
//!
//! * `PING` and `AUTH` are relayed to the master and its reply is relayed back, so the master
//!   decides about authentication exactly as for a direct replica.
//! * `REPLCONF listening-port` is relayed (the master then lists the replica under its own port).
//!   `capa` is answered locally and replaced upstream by `capa eof` (only when the replica can
//!   read EOF framing, because the payload is relayed in the master's framing) and `capa psync2`
//!   (the proxy itself answers `+CONTINUE <id>` downstream). Capabilities the proxy cannot relay
//!   are not passed on; dual-channel replication is refused with an error so a replica that
//!   asks for it falls back to a single link. `rdb-only` and `rdb-filter-only` are relayed.
//!   `ip-address` is recorded but not relayed: the master sees the proxy's address. Other
//!   options get the error a Redis 7.0 master gives for an option it does not know.
//! * `PSYNC` / `SYNC` end the handshake.

use crate::resp::Command;
use bytes::Bytes;

/// What the replica announced during the handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaHello {
    /// `REPLCONF listening-port`.
    pub listening_port: Option<u16>,
    /// `REPLCONF ip-address`.
    pub ip_address: Option<String>,
    /// `capa eof`: the replica reads `$EOF:` framing.
    pub capa_eof: bool,
    /// `capa psync2`: the replica understands `+CONTINUE <new-id>`.
    pub capa_psync2: bool,
    /// `rdb-only 1`: the replica wants the payload and no stream.
    pub rdb_only: bool,
    /// `rdb-filter-only`: the payload will not contain the keys (the table cannot be seeded).
    pub rdb_filtered: bool,
}

/// A replication request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncRequest {
    /// `PSYNC <id> <offset> [FAILOVER]`.
    Psync {
        /// The replication ID the replica has cached (`?` for none).
        id: String,
        /// The offset it asks for (last processed + 1; `-1` for none).
        offset: i64,
        /// Whether the third `FAILOVER` argument was present.
        failover: bool,
    },
    /// Legacy `SYNC` (used by `redis-cli --replica`): no `+FULLRESYNC` line, no offsets.
    Sync,
}

/// The proxy's answer to one handshake command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these arguments to the master and relay its one-line reply.
    Relay(Vec<Bytes>),
    /// Reply with this line (without CRLF), send nothing upstream.
    Reply(&'static str),
    /// Reply with this error line (without CRLF).
    Error(String),
    /// No reply at all (`REPLCONF ACK` before a sync).
    Silent,
    /// Start replication.
    Sync(SyncRequest),
    /// `QUIT`: reply `+OK` and close.
    Quit,
}

fn lit(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Decide what to do with `cmd`, recording announcements in `hello`.
pub fn plan(cmd: &Command, hello: &mut ReplicaHello) -> Step {
    let name = cmd.name();
    if name.eq_ignore_ascii_case(b"PING") || name.eq_ignore_ascii_case(b"AUTH") {
        return Step::Relay(cmd.args.clone());
    }
    if name.eq_ignore_ascii_case(b"REPLCONF") {
        return replconf(&cmd.args[1..], hello);
    }
    if name.eq_ignore_ascii_case(b"PSYNC") {
        return psync(&cmd.args[1..]);
    }
    if name.eq_ignore_ascii_case(b"SYNC") {
        return if cmd.args.len() == 1 {
            Step::Sync(SyncRequest::Sync)
        } else {
            Step::Error("ERR wrong number of arguments for 'sync' command".into())
        };
    }
    if name.eq_ignore_ascii_case(b"QUIT") {
        return Step::Quit;
    }
    Step::Error(format!(
        "ERR this port relays replication only; '{}' is not accepted here",
        String::from_utf8_lossy(name)
    ))
}

fn psync(args: &[Bytes]) -> Step {
    let failover = match args.len() {
        2 => false,
        3 if args[2].eq_ignore_ascii_case(b"FAILOVER") => true,
        _ => return Step::Error("ERR wrong number of arguments for 'psync' command".into()),
    };
    let id = String::from_utf8_lossy(&args[0]).into_owned();
    let offset = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<i64>().ok());
    match offset {
        Some(offset) => Step::Sync(SyncRequest::Psync {
            id,
            offset,
            failover,
        }),
        None => Step::Error("ERR value is not an integer or out of range".into()),
    }
}

fn replconf(args: &[Bytes], hello: &mut ReplicaHello) -> Step {
    if args.len() % 2 != 0 {
        return Step::Error("ERR syntax error".into());
    }
    let mut upstream: Vec<Bytes> = Vec::new();
    let mut capa_seen = false;
    let mut capa_eof_here = false;
    for pair in args.chunks(2) {
        let (opt, val) = (&pair[0], &pair[1]);
        if opt.eq_ignore_ascii_case(b"listening-port") {
            let Some(port) = std::str::from_utf8(val)
                .ok()
                .and_then(|v| v.parse::<u16>().ok())
            else {
                return Step::Error("ERR value is not an integer or out of range".into());
            };
            hello.listening_port = Some(port);
            upstream.extend([lit("listening-port"), val.clone()]);
        } else if opt.eq_ignore_ascii_case(b"ip-address") {
            hello.ip_address = Some(String::from_utf8_lossy(val).into_owned());
        } else if opt.eq_ignore_ascii_case(b"capa") {
            capa_seen = true;
            if val.eq_ignore_ascii_case(b"eof") {
                hello.capa_eof = true;
                capa_eof_here = true;
            } else if val.eq_ignore_ascii_case(b"psync2") {
                hello.capa_psync2 = true;
            } else if val.eq_ignore_ascii_case(b"dual-channel") {
                return Step::Error(
                    "ERR dual-channel replication is not supported through this proxy".into(),
                );
            }
            // Any other capability is dropped, as a master that does not know it would.
        } else if opt.eq_ignore_ascii_case(b"rdb-only") {
            hello.rdb_only = val.as_ref() == b"1";
            upstream.extend([lit("rdb-only"), val.clone()]);
        } else if opt.eq_ignore_ascii_case(b"rdb-filter-only") {
            hello.rdb_filtered = true;
            upstream.extend([lit("rdb-filter-only"), val.clone()]);
        } else if opt.eq_ignore_ascii_case(b"ack") || opt.eq_ignore_ascii_case(b"getack") {
            // Before a sync there is nothing to acknowledge; a master does not reply to ACK.
            return Step::Silent;
        } else {
            return Step::Error(format!(
                "ERR Unrecognized REPLCONF option: {}",
                String::from_utf8_lossy(opt)
            ));
        }
    }
    if capa_seen {
        if capa_eof_here {
            upstream.extend([lit("capa"), lit("eof")]);
        }
        upstream.extend([lit("capa"), lit("psync2")]);
    }
    if upstream.is_empty() {
        return Step::Reply("+OK");
    }
    let mut cmd = vec![lit("REPLCONF")];
    cmd.extend(upstream);
    Step::Relay(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &[&str]) -> Command {
        let args: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let mut raw = bytes::BytesMut::new();
        crate::resp::encode_command(&args, &mut raw);
        Command {
            raw: raw.freeze(),
            args,
        }
    }

    fn words(step: &Step) -> Vec<String> {
        match step {
            Step::Relay(args) => args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            other => panic!("not a relay: {other:?}"),
        }
    }

    #[test]
    fn real_replica_handshake() {
        let mut hello = ReplicaHello::default();
        assert_eq!(words(&plan(&cmd(&["PING"]), &mut hello)), ["PING"]);
        assert_eq!(
            words(&plan(&cmd(&["AUTH", "default", "secret"]), &mut hello)),
            ["AUTH", "default", "secret"]
        );
        assert_eq!(
            words(&plan(
                &cmd(&["REPLCONF", "listening-port", "16312"]),
                &mut hello
            )),
            ["REPLCONF", "listening-port", "16312"]
        );
        assert_eq!(
            plan(&cmd(&["REPLCONF", "ip-address", "127.0.0.9"]), &mut hello),
            Step::Reply("+OK")
        );
        assert_eq!(
            words(&plan(
                &cmd(&["REPLCONF", "capa", "eof", "capa", "psync2"]),
                &mut hello
            )),
            ["REPLCONF", "capa", "eof", "capa", "psync2"]
        );
        assert_eq!(
            plan(&cmd(&["PSYNC", "?", "-1"]), &mut hello),
            Step::Sync(SyncRequest::Psync {
                id: "?".into(),
                offset: -1,
                failover: false
            })
        );
        assert_eq!(
            hello,
            ReplicaHello {
                listening_port: Some(16312),
                ip_address: Some("127.0.0.9".into()),
                capa_eof: true,
                capa_psync2: true,
                rdb_only: false,
                rdb_filtered: false,
            }
        );
    }

    #[test]
    fn capabilities_the_proxy_cannot_relay() {
        let mut hello = ReplicaHello::default();
        // No eof: the master must not choose EOF framing for this replica.
        assert_eq!(
            words(&plan(&cmd(&["REPLCONF", "capa", "psync2"]), &mut hello)),
            ["REPLCONF", "capa", "psync2"]
        );
        assert!(!hello.capa_eof);
        assert_eq!(
            words(&plan(
                &cmd(&["REPLCONF", "capa", "eof", "capa", "something-new"]),
                &mut hello
            )),
            ["REPLCONF", "capa", "eof", "capa", "psync2"]
        );
        assert!(matches!(
            plan(
                &cmd(&["REPLCONF", "capa", "eof", "capa", "dual-channel"]),
                &mut hello
            ),
            Step::Error(_)
        ));
        assert!(matches!(
            plan(&cmd(&["REPLCONF", "rdb-channel", "1"]), &mut hello),
            Step::Error(e) if e.contains("Unrecognized REPLCONF option: rdb-channel")
        ));
        assert!(matches!(
            plan(&cmd(&["REPLCONF", "capa"]), &mut hello),
            Step::Error(_)
        ));
    }

    #[test]
    fn redis_cli_replica_sequence() {
        let mut hello = ReplicaHello::default();
        assert_eq!(
            words(&plan(&cmd(&["REPLCONF", "capa", "eof"]), &mut hello)),
            ["REPLCONF", "capa", "eof", "capa", "psync2"]
        );
        assert_eq!(
            words(&plan(
                &cmd(&["REPLCONF", "rdb-filter-only", ""]),
                &mut hello
            )),
            ["REPLCONF", "rdb-filter-only", ""]
        );
        assert!(hello.rdb_filtered);
        assert_eq!(
            plan(&cmd(&["SYNC"]), &mut hello),
            Step::Sync(SyncRequest::Sync)
        );
        assert_eq!(
            plan(&cmd(&["psync", "abc", "101", "FAILOVER"]), &mut hello),
            Step::Sync(SyncRequest::Psync {
                id: "abc".into(),
                offset: 101,
                failover: true
            })
        );
        assert!(matches!(
            plan(&cmd(&["PSYNC", "abc", "x"]), &mut hello),
            Step::Error(_)
        ));
        assert!(matches!(
            plan(&cmd(&["GET", "k"]), &mut hello),
            Step::Error(_)
        ));
        assert_eq!(plan(&cmd(&["quit"]), &mut hello), Step::Quit);
    }
}
