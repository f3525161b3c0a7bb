//! Checks of the deployment files that no Docker engine is needed for: the `Dockerfile` copies
//! the binary that `cargo build --release --locked` produces, its health check and entry point
//! are commands the binary accepts, and every `PIKA_TTL_PROXY_*` variable that the `Dockerfile`
//! and `docker-compose.example.yml` set is one the binary reads (it appears in the `--help` of the
//! subcommand that runs). The files are parsed by hand: only a few instructions matter.

#[allow(dead_code)]
mod support;

use std::path::PathBuf;
use std::process::Command;

use support::proxy_binary;

const ENV_PREFIX: &str = "PIKA_TTL_PROXY_";

fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `pika-ttl-proxy <args…> --help`, which must succeed.
fn help(subcommand: &str) -> String {
    let out = Command::new(proxy_binary())
        .args([subcommand, "--help"])
        .output()
        .expect("run the binary");
    assert!(out.status.success(), "{subcommand} --help failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// Whether `help` documents the environment variable `name` (clap prints `[env: NAME=value]`,
/// or `[env: NAME]` when values are hidden).
fn documents_env(help: &str, name: &str) -> bool {
    help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]"))
}

/// Every `PIKA_TTL_PROXY_…` variable named in `text`.
fn env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(ENV_PREFIX) {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // A bare prefix is prose (`PIKA_TTL_PROXY_*`), not a variable.
        if len > ENV_PREFIX.len() {
            names.push(tail[..len].to_string());
        }
        rest = &tail[len.max(ENV_PREFIX.len())..];
    }
    names
}

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile_instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((&pending, ""));
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        pending.clear();
    }
    assert!(pending.is_empty(), "Dockerfile ends inside a continuation");
    out
}

/// A JSON-array (exec form) argument list such as `["a", "b"]`.
fn exec_form(args: &str) -> Vec<String> {
    let inner = args
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not an exec-form list: {args}"));
    inner
        .split(',')
        .map(|s| {
            let s = s.trim();
            s.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or_else(|| panic!("not a quoted string: {s}"))
                .to_string()
        })
        .collect()
}

/// The instructions of each stage, with its name (`FROM … AS name`).
fn stages(instructions: &[Instruction]) -> Vec<(Option<String>, Vec<&Instruction>)> {
    let mut out: Vec<(Option<String>, Vec<&Instruction>)> = Vec::new();
    for ins in instructions {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            out.push((name, Vec::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push(ins);
        }
    }
    out
}

/// `ENV` pairs of a stage (`ENV A=1 B=2` form).
fn env_pairs(stage: &[&Instruction]) -> Vec<(String, String)> {
    stage
        .iter()
        .filter(|i| i.keyword == "ENV")
        .flat_map(|i| {
            i.args.split_whitespace().map(|pair| {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV without '=': {pair}"));
                (k.to_string(), v.trim_matches('"').to_string())
            })
        })
        .collect()
}

#[test]
fn dockerfile_copies_the_binary_cargo_builds() {
    let instructions = dockerfile_instructions(&repo_file("Dockerfile"));
    let stages = stages(&instructions);
    assert!(stages.len() >= 2, "expected a multi-stage build");
    let (build_name, build) = &stages[0];
    let build_name = build_name.as_deref().expect("the build stage is named");
    let workdir = build
        .iter()
        .rev()
        .find(|i| i.keyword == "WORKDIR")
        .map(|i| i.args.clone())
        .expect("the build stage sets WORKDIR");
    let cargo_build = build
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("the build stage runs cargo build");
    assert!(
        cargo_build.args.contains("cargo build --release --locked"),
        "{}",
        cargo_build.args
    );
    // Anything that moves cargo's output elsewhere would break the copied path.
    for moved in ["--target", "--profile", "--target-dir", "CARGO_TARGET_DIR"] {
        assert!(
            !cargo_build.args.contains(moved),
            "cargo build uses {moved}: {}",
            cargo_build.args
        );
    }
    assert!(!build
        .iter()
        .any(|i| i.keyword == "ENV" && i.args.contains("CARGO_TARGET_DIR")));

    // What `cargo build --release` produces for the binary the tests run.
    let bin = proxy_binary();
    let bin_name = bin
        .file_name()
        .and_then(|n| n.to_str())
        .expect("binary file name");
    let produced = format!("target/release/{bin_name}");
    assert_eq!(produced, "target/release/pika-ttl-proxy");

    let (_, runtime) = stages.last().expect("runtime stage");
    let copy = runtime
        .iter()
        .find(|i| i.keyword == "COPY" && i.args.starts_with(&format!("--from={build_name} ")))
        .expect("the runtime stage copies from the build stage");
    let parts: Vec<&str> = copy.args.split_whitespace().collect();
    let [_, source, destination] = parts.as_slice() else {
        panic!(
            "COPY --from=… <source> <destination> expected: {}",
            copy.args
        );
    };
    let relative = source
        .strip_prefix(workdir.trim_end_matches('/'))
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or(source);
    assert_eq!(relative, produced, "copied binary path");
    assert_eq!(*destination, "/usr/local/bin/pika-ttl-proxy");

    // The image runs as a non-root user.
    let user = runtime
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .map(|i| i.args.clone())
        .expect("USER is set");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(uid != "root" && uid != "0", "runs as {user}");

    // The state directory is a volume and is where the proxy is told to keep its state.
    let env = env_pairs(runtime);
    let state_dir = env
        .iter()
        .find(|(k, _)| k == "PIKA_TTL_PROXY_STATE_DIR")
        .map(|(_, v)| v.clone())
        .expect("PIKA_TTL_PROXY_STATE_DIR is set");
    let volume = runtime
        .iter()
        .find(|i| i.keyword == "VOLUME")
        .expect("a VOLUME");
    assert!(volume.args.contains(&format!("\"{state_dir}\"")));
}

#[test]
fn dockerfile_commands_ports_and_env_are_the_binarys() {
    let instructions = dockerfile_instructions(&repo_file("Dockerfile"));
    let stages = stages(&instructions);
    let (_, runtime) = stages.last().expect("runtime stage");
    let find = |kw: &str| {
        runtime
            .iter()
            .find(|i| i.keyword == kw)
            .unwrap_or_else(|| panic!("no {kw}"))
    };

    assert_eq!(exec_form(&find("ENTRYPOINT").args), ["pika-ttl-proxy"]);
    let cmd = exec_form(&find("CMD").args);
    let subcommand = cmd.first().expect("CMD names a subcommand").clone();
    help(&subcommand);

    let healthcheck = &find("HEALTHCHECK").args;
    let (_, probe) = healthcheck
        .split_once("CMD ")
        .expect("HEALTHCHECK … CMD [...]");
    let probe = exec_form(probe);
    // The probe names no address: it must follow the admin address the relay is given.
    assert_eq!(probe, ["pika-ttl-proxy", "healthcheck"]);
    let env = env_pairs(runtime);
    let image_admin = env
        .iter()
        .find(|(k, _)| k == "PIKA_TTL_PROXY_ADMIN")
        .map(|(_, v)| v.clone())
        .expect("the image sets PIKA_TTL_PROXY_ADMIN");
    // The probe reads the admin address from the environment the container gives the relay:
    // with nothing listening on a moved port it fails to connect (exit 1), and succeeds once
    // an HTTP server answers there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port");
    let out = Command::new(proxy_binary())
        .args(&probe[1..])
        .env("PIKA_TTL_PROXY_ADMIN", closed.to_string())
        .output()
        .expect("run healthcheck");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&closed.to_string()),
        "{out:?}"
    );
    let healthy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let healthy_addr = healthy.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = healthy.accept().expect("accept");
        let mut buf = [0u8; 512];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
    });
    // A wildcard admin address (what a scraped container binds) is probed on loopback.
    let out = Command::new(proxy_binary())
        .args(&probe[1..])
        .env(
            "PIKA_TTL_PROXY_ADMIN",
            format!("0.0.0.0:{}", healthy_addr.port()),
        )
        .output()
        .expect("run healthcheck");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    server.join().expect("server thread");

    let exposed: Vec<u16> = runtime
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("numeric port"))
        .collect();
    let admin_port: u16 = image_admin
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("admin port");
    let listen_port: u16 = env
        .iter()
        .find(|(k, _)| k == "PIKA_TTL_PROXY_LISTEN")
        .and_then(|(_, v)| v.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("PIKA_TTL_PROXY_LISTEN with a port");
    // Redis listen port, admin, and Pika's P, P+2000, P+10001 for the default P = 9221.
    for port in [listen_port, admin_port, 9221, 11221, 19222] {
        assert!(
            exposed.contains(&port),
            "port {port} not in EXPOSE {exposed:?}"
        );
    }

    // Every variable the image sets is read by both relays it can run.
    let (redis_help, pika_help) = (help("redis"), help("pika"));
    let names = env_names(&repo_file("Dockerfile"));
    assert!(!names.is_empty());
    for name in &names {
        assert!(
            documents_env(&redis_help, name),
            "redis --help lacks {name}"
        );
        assert!(documents_env(&pika_help, name), "pika --help lacks {name}");
    }
}

/// The subcommand of an exec-form `command: [...]` line when it runs the proxy.
fn proxy_subcommand(line: &str) -> Option<String> {
    let value = line.trim().trim_start_matches('#').trim();
    let list = value.strip_prefix("command:")?.trim();
    let first = exec_form(list).into_iter().next()?;
    matches!(first.as_str(), "redis" | "pika").then_some(first)
}

/// `key: "value"` on a compose line, unquoted.
fn yaml_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let value = line.trim().trim_start_matches('#').trim();
    let rest = value.strip_prefix(key)?.strip_prefix(':')?;
    Some(
        rest.split(" #")
            .next()
            .unwrap_or(rest)
            .trim()
            .trim_matches('"'),
    )
}

#[test]
fn compose_example_env_names_are_read_by_the_subcommand_that_runs() {
    let text = repo_file("docker-compose.example.yml");
    let mut helps: std::collections::HashMap<String, String> = Default::default();
    let mut current: Option<String> = None;
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        if let Some(sub) = proxy_subcommand(line) {
            current = Some(sub);
            continue;
        }
        for name in env_names(line) {
            let subs = match &current {
                Some(s) => vec![s.clone()],
                None => vec!["redis".to_string(), "pika".to_string()],
            };
            for sub in subs {
                let h = helps.entry(sub.clone()).or_insert_with(|| help(&sub));
                assert!(
                    documents_env(h, &name),
                    "line {}: {name} is not read by `pika-ttl-proxy {sub}`",
                    n + 1
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} names checked");
    assert!(helps.contains_key("redis") && helps.contains_key("pika"));
}

#[test]
fn compose_example_wires_replica_and_prometheus_to_the_proxy() {
    let text = repo_file("docker-compose.example.yml");
    // The active (uncommented) part only.
    let active: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let service_line = active
        .iter()
        .position(|l| *l == "  pika-ttl-proxy:")
        .expect("a pika-ttl-proxy service");
    let service: Vec<&str> = active[service_line + 1..]
        .iter()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .copied()
        .collect();
    assert!(service.iter().any(|l| l.trim() == "build: ."));
    let setting = |key: &str| {
        service
            .iter()
            .find_map(|l| yaml_value(l, key))
            .unwrap_or_else(|| panic!("{key} not set"))
    };
    let port = |addr: &str| addr.rsplit_once(':').map(|(_, p)| p.to_string());
    let listen_port = port(setting("PIKA_TTL_PROXY_LISTEN")).expect("listen port");
    let admin_port = port(setting("PIKA_TTL_PROXY_ADMIN")).expect("admin port");
    assert!(
        service
            .iter()
            .any(|l| yaml_value(l, "PIKA_TTL_PROXY_ADMIN_TOKEN_FILE").is_some()),
        "a non-loopback admin API needs a token"
    );

    let replicaof = active
        .iter()
        .find(|l| l.contains("\"--replicaof\""))
        .expect("a replica");
    let replicaof = exec_form(
        replicaof
            .trim()
            .strip_prefix("command:")
            .expect("command: line"),
    );
    let at = replicaof
        .iter()
        .position(|a| a == "--replicaof")
        .expect("--replicaof");
    assert_eq!(replicaof[at + 1], "pika-ttl-proxy");
    assert_eq!(replicaof[at + 2], listen_port);

    let scrape = format!("\"pika-ttl-proxy:{admin_port}\"");
    assert!(
        active.iter().any(|l| l.contains(&scrape)),
        "Prometheus does not scrape {scrape}"
    );
    assert!(active.iter().any(|l| l.trim() == "grafana:"));
}

#[test]
fn the_release_binary_carries_no_debug_info_and_benches_keep_it() {
    let manifest: toml::Table = repo_file("Cargo.toml").parse().expect("Cargo.toml");
    let profile = |name: &str| {
        manifest
            .get("profile")
            .and_then(|p| p.get(name))
            .cloned()
            .unwrap_or_else(|| panic!("[profile.{name}]"))
    };
    let debug_off = |v: Option<&toml::Value>| {
        matches!(
            v,
            None | Some(toml::Value::Integer(0)) | Some(toml::Value::Boolean(false))
        ) || matches!(v, Some(toml::Value::String(s)) if s == "none")
    };
    let release = profile("release");
    let split = release.get("split-debuginfo").and_then(|v| v.as_str());
    assert!(
        debug_off(release.get("debug")) || matches!(split, Some("packed" | "unpacked")),
        "[profile.release] ships debug info: {release:?}"
    );
    let bench = profile("bench");
    assert!(
        !debug_off(bench.get("debug")),
        "[profile.bench] needs debug info for profiling: {bench:?}"
    );
}
