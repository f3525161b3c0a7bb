//! Real `redis-server` processes on free loopback ports (killed on drop, also when a test
//! panics), their replication state, and helpers to compare whole data sets (values and absolute
//! expiry times).

use super::{free_port, wait_until, PATIENCE};
use redis::{Commands, Connection, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process; killed (SIGKILL) and reaped on drop.
pub struct RedisServer {
    pub port: u16,
    /// From `--requirepass` in the start arguments; used by every helper connection.
    pub password: Option<String>,
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl RedisServer {
    /// Start a server with persistence off, its log in `dir/<name>.log`, plus `extra` args.
    pub fn start(dir: &Path, name: &str, extra: &[String]) -> RedisServer {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let data = dir.join(format!("{name}-data"));
        std::fs::create_dir_all(&data).unwrap();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            data.display().to_string(),
            "--logfile".into(),
            log.display().to_string(),
            "--enable-debug-command".into(),
            "yes".into(),
        ];
        args.extend(extra.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let password = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].clone());
        let server = RedisServer {
            port,
            password,
            name: name.to_string(),
            log,
            child,
        };
        wait_until(&format!("{name} answers PING"), || {
            // Raw, so a server with requirepass (-NOAUTH) also counts as up.
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let mut reply = [0u8; 6];
            s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut reply).is_ok()
                && (&reply == b"+PONG\r" || &reply == b"-NOAUT")
        });
        server
    }

    /// A replica of `master_port`.
    pub fn start_replica(dir: &Path, name: &str, master_port: u16) -> RedisServer {
        Self::start(
            dir,
            name,
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ],
        )
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn conn(&self) -> Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    pub fn info(&self, section: &str) -> BTreeMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .unwrap();
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// `(port, state, offset)` of every replica the master lists.
    pub fn replicas(&self) -> Vec<(u16, String, u64)> {
        self.info("replication")
            .iter()
            .filter(|(k, _)| k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()))
            .map(|(_, v)| {
                let fields: BTreeMap<&str, &str> =
                    v.split(',').filter_map(|f| f.split_once('=')).collect();
                (
                    fields["port"].parse().unwrap(),
                    fields["state"].to_string(),
                    fields["offset"].parse().unwrap(),
                )
            })
            .collect()
    }

    pub fn master_offset(&self) -> u64 {
        self.info("replication")["master_repl_offset"]
            .parse()
            .unwrap()
    }

    pub fn link_up(&self) -> bool {
        self.info("replication")
            .get("master_link_status")
            .is_some_and(|s| s == "up")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One key's full observable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub kind: String,
    pub value: Vec<String>,
    pub expire_at_ms: i64,
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Every key of every DB (0..16) with type, value and `PEXPIRETIME`.
pub fn snapshot(conn: &mut Connection) -> BTreeMap<(u32, String), KeyState> {
    let mut all = BTreeMap::new();
    for db in 0..16u32 {
        redis::cmd("SELECT").arg(db).query::<()>(conn).unwrap();
        let keys: Vec<String> = {
            let iter: redis::Iter<String> = conn.scan().unwrap();
            iter.collect::<Result<Vec<_>, _>>().unwrap()
        };
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
            let mut value: Vec<String> = match kind.as_str() {
                "string" => vec![conn
                    .get::<_, Vec<u8>>(&key)
                    .unwrap()
                    .escape_ascii()
                    .to_string()],
                "hash" => {
                    let v: Vec<Value> = redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
                    let mut pairs: Vec<String> = v
                        .chunks(2)
                        .map(|c| format!("{}={}", text(&c[0]), text(&c[1])))
                        .collect();
                    pairs.sort();
                    pairs
                }
                "list" => conn.lrange(&key, 0, -1).unwrap(),
                "set" => conn.smembers(&key).unwrap(),
                "zset" => {
                    let v: Vec<Value> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query(conn)
                        .unwrap();
                    v.iter().map(text).collect()
                }
                other => vec![format!("<{other}>")],
            };
            if kind == "set" {
                value.sort();
            }
            let expire_at_ms: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(conn).unwrap();
            all.insert(
                (db, key),
                KeyState {
                    kind,
                    value,
                    expire_at_ms,
                },
            );
        }
    }
    redis::cmd("SELECT").arg(0).query::<()>(conn).unwrap();
    all
}

/// Assert two data sets are equal, naming the first differences.
pub fn assert_same_data(
    what: &str,
    master: &BTreeMap<(u32, String), KeyState>,
    replica: &BTreeMap<(u32, String), KeyState>,
) {
    if master == replica {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in master {
        match replica.get(k) {
            Some(r) if r == v => {}
            other => diffs.push(format!("{k:?}: master {v:?} replica {other:?}")),
        }
    }
    for k in replica.keys().filter(|k| !master.contains_key(*k)) {
        diffs.push(format!("{k:?}: only on the replica {:?}", replica[k]));
    }
    diffs.truncate(10);
    panic!(
        "{what}: data differs ({} keys on master):\n{}",
        master.len(),
        diffs.join("\n")
    );
}

/// Wait until the master lists a replica on every port of `ports`, online, with its offset
/// equal to `master_repl_offset`; returns that offset.
pub fn wait_acked(master: &RedisServer, ports: &[u16]) -> u64 {
    let start = Instant::now();
    loop {
        let offset = master.master_offset();
        let replicas = master.replicas();
        let all = ports.iter().all(|p| {
            replicas
                .iter()
                .any(|(port, state, off)| port == p && state == "online" && *off == offset)
        });
        if all {
            return offset;
        }
        let last = format!("master_repl_offset={offset} replicas={replicas:?}");
        if start.elapsed() > PATIENCE {
            panic!("replicas never acknowledged the master offset: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
