//! The `pika-ttl-proxy` binary as operators use it: settings precedence and validation, the
//! admin API and the `families`/`healthcheck` clients against a live proxy relaying between
//! real redis-server processes, SIGHUP reload and SIGTERM shutdown.

#[allow(dead_code)]
mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use support::redis_server::RedisServer;
use support::{free_port, proxy_binary, wait_until, ChildGuard};

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(proxy_binary());
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("PIKA_TTL_PROXY_") && !envs.iter().any(|(e, _)| *e == k) {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run pika-ttl-proxy")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write file");
}

#[test]
fn settings_precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    write(
        &file,
        "listen = \"127.0.0.1:7101\"\nmaster = \"127.0.0.1:6379\"\nstate_dir = \"/tmp/s\"\nlog_level = \"debug\"\nreplica_output_buffer_limit = 1048576\n[families]\nhash = false\n",
    );
    let cfg = file.to_str().unwrap();
    // File only (plus defaults).
    let o = run(&["redis", "--config", cfg, "--print-config"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("listen = \"127.0.0.1:7101\""), "{s}");
    assert!(s.contains("log_level = \"debug\""), "{s}");
    assert!(
        s.contains("admin = \"127.0.0.1:9121\""),
        "default admin: {s}"
    );
    assert!(s.contains("hash = false"), "{s}");
    // Env beats file.
    let o = run(
        &["redis", "--config", cfg, "--print-config"],
        &[
            ("PIKA_TTL_PROXY_LISTEN", "127.0.0.1:7102"),
            ("PIKA_TTL_PROXY_DISABLE_FAMILIES", "zset,list"),
        ],
    );
    let s = stdout(&o);
    assert!(s.contains("listen = \"127.0.0.1:7102\""), "{s}");
    assert!(
        s.contains("zset = false") && s.contains("list = false") && s.contains("hash = true"),
        "{s}"
    );
    // Flag beats env.
    let o = run(
        &[
            "redis",
            "--config",
            cfg,
            "--listen",
            "127.0.0.1:7103",
            "--print-config",
        ],
        &[("PIKA_TTL_PROXY_LISTEN", "127.0.0.1:7102")],
    );
    assert!(stdout(&o).contains("listen = \"127.0.0.1:7103\""));
    // Secrets are never printed.
    let o = run(
        &["redis", "--config", cfg, "--print-config"],
        &[("PIKA_TTL_PROXY_MASTER_PASSWORD", "hunter2")],
    );
    assert!(!stdout(&o).contains("hunter2") && stdout(&o).contains("<redacted>"));
}

#[test]
fn print_config_output_loads_back_with_config() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write(&token, "s3cret\n");
    let o = run(
        &[
            "pika",
            "--listen",
            "127.0.0.1:7101",
            "--master",
            "127.0.0.1:9221",
            "--admin",
            "0.0.0.0:9121",
            "--admin-token-file",
            token.to_str().unwrap(),
            "--state-dir",
            "/tmp/s",
            "--disable-family",
            "hash",
            "--print-config",
        ],
        &[("PIKA_TTL_PROXY_MASTER_PASSWORD", "hunter2")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    assert!(!printed.contains("hunter2") && printed.contains("<redacted>"));
    let file = dir.path().join("printed.toml");
    write(&file, &printed);
    let again = run(
        &["pika", "--config", file.to_str().unwrap(), "--print-config"],
        &[],
    );
    assert!(again.status.success(), "{printed}\n{}", stderr(&again));
    let keys = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&stdout(&again)), keys(&printed));
    // The file names its relay.
    let other = run(
        &[
            "redis",
            "--config",
            file.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    assert_eq!(other.status.code(), Some(2));
    assert!(stderr(&other).contains("'mode'"), "{}", stderr(&other));
}

#[test]
fn each_relay_help_lists_only_its_flags() {
    let help = |mode: &str| {
        let o = run(&[mode, "--help"], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let (redis, pika) = (help("redis"), help("pika"));
    let redis_only = ["--master-user", "--replica-output-buffer-limit"];
    let pika_only = [
        "--warmup ",
        "--warmup-rate",
        "--empty-at-origin",
        "--binlog-file-size",
    ];
    let both = [
        "--listen",
        "--master ",
        "--admin ",
        "--state-dir",
        "--config",
        "--checkpoint-interval",
    ];
    for flag in redis_only {
        assert!(redis.contains(flag) && !pika.contains(flag), "{flag}");
    }
    for flag in pika_only {
        assert!(pika.contains(flag) && !redis.contains(flag), "{flag}");
    }
    for flag in both {
        assert!(redis.contains(flag) && pika.contains(flag), "{flag}");
    }
    // A flag of the other relay is a usage error, not silently ignored.
    let o = run(&["redis", "--warmup", "scan", "--print-config"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn invalid_settings_exit_2_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "redis",
                "--listen",
                "127.0.0.1:7000",
                "--master",
                "127.0.0.1:7000",
                "--state-dir",
                state,
            ],
            "'listen'",
        ),
        (
            &[
                "redis",
                "--listen",
                "nonsense",
                "--master",
                "127.0.0.1:6379",
                "--state-dir",
                state,
            ],
            "'listen'",
        ),
        (
            &["redis", "--listen", "127.0.0.1:7000", "--state-dir", state],
            "'master'",
        ),
        (
            &[
                "redis",
                "--listen",
                "127.0.0.1:7000",
                "--master",
                "127.0.0.1:6379",
                "--state-dir",
                state,
                "--admin",
                "0.0.0.0:9121",
            ],
            "'admin'",
        ),
        (
            &[
                "redis",
                "--listen",
                "127.0.0.1:7000",
                "--master",
                "127.0.0.1:6379",
                "--state-dir",
                state,
                "--disable-family",
                "strings",
            ],
            "'disable-family'",
        ),
        (
            &[
                "pika",
                "--listen",
                "127.0.0.1:60000",
                "--master",
                "127.0.0.1:9221",
                "--state-dir",
                state,
            ],
            "'listen'",
        ),
        (
            &[
                "redis",
                "--listen",
                "127.0.0.1:7000",
                "--master",
                "127.0.0.1:6379",
                "--state-dir",
                state,
                "--config",
                "/nonexistent.toml",
            ],
            "'config'",
        ),
    ];
    for (args, setting) in cases {
        let o = run(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: invalid setting ") && err.contains(setting),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn an_unwritable_state_dir_is_refused_at_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("regular-file");
    write(&file, "x");
    let under_file = file.join("state");
    // Tests run as root, so permission bits prove nothing: a path under a regular file cannot
    // be created by anyone, and /proc exists but takes no new files even from root.
    for state in [under_file.to_str().unwrap(), "/proc"] {
        for mode in ["redis", "pika"] {
            let o = run(
                &[
                    mode,
                    "--listen",
                    "127.0.0.1:7000",
                    "--master",
                    "127.0.0.1:6379",
                    "--admin",
                    "127.0.0.1:1",
                    "--state-dir",
                    state,
                ],
                &[],
            );
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{mode} {state}: {err}");
            assert!(
                err.starts_with("error: invalid setting 'state-dir': ") && err.contains(state),
                "{mode} {state}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig}");
}

fn admin_get(admin: &str, path: &str) -> (u16, String) {
    let a = pika_ttl_proxy::cli::request(admin, "GET", path, None, None).expect("admin API");
    (a.status, a.body)
}

#[test]
fn admin_api_and_family_switches_on_a_live_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start(dir.path(), "master", &[]);
    let listen = free_port();
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let config = dir.path().join("proxy.toml");
    write(&config, "[families]\nzset = false\n");
    let token_file = dir.path().join("token");
    write(&token_file, "s3cret\n");
    let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
    let mut proxy = ChildGuard(
        Command::new(proxy_binary())
            .args([
                "redis",
                "--listen",
                &format!("127.0.0.1:{listen}"),
                "--master",
                &format!("127.0.0.1:{}", master.port),
                "--admin",
                &admin,
                "--state-dir",
                dir.path().join("state").to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--admin-token-file",
                token_file.to_str().unwrap(),
                "--log-format",
                "json",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_until("admin API up", || {
        pika_ttl_proxy::cli::request(&admin, "GET", "/healthz", None, None).is_ok()
    });
    let hc = run(&["healthcheck", "--admin", &admin], &[]);
    assert!(hc.status.success());

    // No replica yet: ready to accept one (a probe gating traffic must let replicas in),
    // with a note.
    let (status, body) = admin_get(&admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("no replica is attached"), "{body}");

    let replica = RedisServer::start_replica(dir.path(), "replica", listen);
    wait_until("replica streaming and ready", || {
        let (status, body) = admin_get(&admin, "/readyz");
        status == 200 && body.contains("\"replicas\":1") && body.contains("\"notes\":[]")
    });
    let mut m = master.conn();
    let _: () = redis::cmd("SETEX")
        .arg("key1")
        .arg(10)
        .arg(100)
        .query(&mut m)
        .unwrap();
    let _: i64 = redis::cmd("INCR").arg("key1").query(&mut m).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert_eq!(acked, 1, "WAIT through the proxy");

    // Metrics: rewrite counted, lag gauges present.
    let (_, metrics) = admin_get(&admin, "/metrics");
    assert!(metrics.contains("pika_ttl_proxy_entries_total{dialect=\"redis\",family=\"string-counter\",outcome=\"rewritten\"} 1"), "{metrics}");
    assert!(
        metrics.contains("pika_ttl_proxy_replica_lag_bytes{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pika_ttl_proxy_family_enabled{family=\"zset\"} 0"),
        "{metrics}"
    );

    // Families through the CLI: the file's zset=false is in effect; token needed to switch.
    let list = run(&["families", "list", "--admin", &admin], &[]);
    let text = stdout(&list);
    assert!(
        text.lines()
            .any(|l| l.starts_with("zset") && l.contains("off")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("string-counter") && l.contains(" on ") && l.contains(" 1 ")),
        "{text}"
    );
    let denied = run(&["families", "disable", "hash", "--admin", &admin], &[]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(stderr(&denied).contains("401"), "{}", stderr(&denied));
    let ok = run(
        &[
            "families",
            "disable",
            "string-counter",
            "--admin",
            &admin,
            "--admin-token",
            "s3cret",
        ],
        &[],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(stdout(&ok).trim(), "string-counter: off");
    // The token from the file the proxy itself reads.
    let from_file = run(
        &[
            "families",
            "disable",
            "hash",
            "--admin",
            &admin,
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    assert_eq!(stdout(&from_file).trim(), "hash: off");
    let missing = run(
        &[
            "families",
            "enable",
            "hash",
            "--admin",
            &admin,
            "--admin-token-file",
            "/nonexistent/token",
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("'admin-token-file'"));
    let back_on = run(
        &["families", "enable", "hash", "--admin", &admin],
        &[(
            "PIKA_TTL_PROXY_ADMIN_TOKEN_FILE",
            token_file.to_str().unwrap(),
        )],
    );
    assert!(back_on.status.success(), "{}", stderr(&back_on));
    let _: i64 = redis::cmd("INCR").arg("key1").query(&mut m).unwrap();
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    let (_, metrics) = admin_get(&admin, "/metrics");
    assert!(
        metrics.contains("family=\"string-counter\",outcome=\"disabled\"} 1"),
        "{metrics}"
    );
    let bad = run(&["families", "enable", "nope", "--admin", &admin], &[]);
    assert_eq!(bad.status.code(), Some(2));

    // SIGHUP re-reads the file: zset back on, and the file says nothing of string-counter → on.
    write(&config, "[families]\nzset = true\nlist = false\n");
    signal(&proxy.0, "-HUP");
    wait_until("SIGHUP applied", || {
        let text = stdout(&run(&["families", "list", "--admin", &admin], &[]));
        text.lines()
            .any(|l| l.starts_with("list") && l.contains("off"))
            && text
                .lines()
                .any(|l| l.starts_with("zset") && l.contains(" on "))
    });

    // Replica data equals the master's.
    let mut r = replica.conn();
    let v: String = redis::cmd("GET").arg("key1").query(&mut r).unwrap();
    assert_eq!(v, "102");

    // SIGTERM: clean exit 0, JSON log lines.
    signal(&proxy.0, "-TERM");
    let status = proxy.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap();
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "JSON log lines: {log}"
    );
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(!log.contains("s3cret"));
}

#[test]
fn a_master_that_is_no_redis_server_is_named_with_what_it_answered() {
    use std::io::Read;
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let master = http.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in http.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("proxy.log");
    let _proxy = ChildGuard(
        Command::new(proxy_binary())
            .args([
                "redis",
                "--listen",
                &listen,
                "--master",
                &master,
                "--admin",
                &format!("127.0.0.1:{}", free_port()),
                "--state-dir",
                dir.path().join("state").to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("the relay listens", || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    // What a replica sends first; the proxy relays PING to the master.
    let mut replica = std::net::TcpStream::connect(&listen).unwrap();
    replica.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    wait_until("the foreign master is named in the log", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains("not a Redis server")
            && log.contains("\"HTTP/1.1 400 Bad Request\"")
            && log.contains(&master)
    });
}

fn start_redis_proxy(dir: &Path, listen: u16, master: u16, admin: &str, log: &str) -> ChildGuard {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .unwrap();
    ChildGuard(
        Command::new(proxy_binary())
            .args([
                "redis",
                "--listen",
                &format!("127.0.0.1:{listen}"),
                "--master",
                &format!("127.0.0.1:{master}"),
                "--admin",
                admin,
                "--state-dir",
                dir.join("state").to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[test]
fn readyz_is_not_stuck_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start(dir.path(), "master", &[]);
    let listen = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut proxy = start_redis_proxy(dir.path(), listen, master.port, &admin, "proxy.log");
    let _replica = RedisServer::start_replica(dir.path(), "replica", listen);
    wait_until("replica streaming with complete knowledge", || {
        pika_ttl_proxy::cli::request(&admin, "GET", "/readyz", None, None).is_ok_and(|a| {
            a.status == 200 && a.body.contains("\"replicas\":1") && a.body.contains("\"notes\":[]")
        })
    });
    // A crash: no table saved, and (removed here) no checkpoint to rebuild one from. No write
    // follows; the replica resumes partially.
    signal(&proxy.0, "-KILL");
    let _ = proxy.0.wait();
    for file in std::fs::read_dir(dir.path().join("state")).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains(".checkpoint") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let _proxy = start_redis_proxy(dir.path(), listen, master.port, &admin, "proxy.log");
    wait_until(
        "ready again after the crash, knowledge noted as incomplete",
        || {
            pika_ttl_proxy::cli::request(&admin, "GET", "/readyz", None, None).is_ok_and(|a| {
                a.status == 200
                    && a.body.contains("\"replicas\":1")
                    && a.body.contains("expiry knowledge incomplete")
            })
        },
    );
}
