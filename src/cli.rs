//! Client subcommands that talk to a running proxy's admin API: `families list|enable|disable`
//! and `healthcheck`. A tiny blocking HTTP/1.1 client is enough for one request per run.

use crate::config::{AdminClientArgs, FamiliesAction, FamiliesArgs};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Status code and body of one admin API answer.
pub struct HttpAnswer {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// One request to the admin API.
pub fn request(
    admin: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<HttpAnswer, String> {
    let mut addr = admin
        .to_socket_addrs()
        .map_err(|e| format!("admin address '{admin}' is not HOST:PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("admin address '{admin}' resolves to nothing"))?;
    // The relay's own setting may be a wildcard (to be scraped from elsewhere); the client,
    // run beside it with the same environment, reaches it on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("cannot reach the admin API at {admin}: {e}"))?;
    let timeout = Some(Duration::from_secs(10));
    stream
        .set_read_timeout(timeout)
        .and_then(|_| stream.set_write_timeout(timeout))
        .map_err(|e| format!("admin API at {admin}: {e}"))?;
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("admin API at {admin}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("admin API at {admin}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("admin API at {admin} sent no HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("admin API at {admin} sent a bad status line"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(HttpAnswer { status, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn fail(message: impl AsRef<str>) -> ExitCode {
    eprintln!("error: {}", message.as_ref());
    ExitCode::from(1)
}

/// `pika-ttl-proxy families …`.
pub fn families(args: &FamiliesArgs) -> ExitCode {
    let client = &args.client;
    let token = match client.token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let token = token.as_deref();
    let answer = match &args.action {
        FamiliesAction::List => request(&client.admin, "GET", "/families", token, None),
        FamiliesAction::Enable { name } | FamiliesAction::Disable { name } => {
            if name.parse::<crate::families::Family>().is_err() {
                eprintln!("error: {}", crate::families::UnknownFamily(name.clone()));
                return ExitCode::from(2);
            }
            let on = matches!(args.action, FamiliesAction::Enable { .. });
            request(
                &client.admin,
                "PUT",
                &format!("/families/{name}"),
                token,
                Some(&format!("{{\"enabled\":{on}}}")),
            )
        }
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    if answer.status != 200 {
        return fail(format!(
            "admin API answered {}: {}",
            answer.status,
            answer.body.trim()
        ));
    }
    let json: serde_json::Value = match serde_json::from_str(&answer.body) {
        Ok(v) => v,
        Err(e) => return fail(format!("admin API sent invalid JSON: {e}")),
    };
    match &args.action {
        FamiliesAction::List => {
            println!(
                "{:<16} {:<8} {:>12} {:>12} {:>12} {:>12}",
                "FAMILY", "STATE", "REWRITTEN", "PASSED", "DISABLED", "UNKNOWN_KEY"
            );
            for f in json.as_array().into_iter().flatten() {
                let n = |k: &str| f.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                let on = f.get("enabled").and_then(|v| v.as_bool()).unwrap_or(false);
                println!(
                    "{:<16} {:<8} {:>12} {:>12} {:>12} {:>12}",
                    f.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
                    if on { "on" } else { "off" },
                    n("rewritten"),
                    n("passed"),
                    n("disabled"),
                    n("unknown_key")
                );
            }
        }
        _ => {
            let name = json.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            let on = json
                .get("enabled")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            println!("{name}: {}", if on { "on" } else { "off" });
        }
    }
    ExitCode::SUCCESS
}

/// `pika-ttl-proxy healthcheck`.
pub fn healthcheck(args: &AdminClientArgs) -> ExitCode {
    match request(&args.admin, "GET", "/healthz", None, None) {
        Ok(a) if a.status == 200 => ExitCode::SUCCESS,
        Ok(a) => fail(format!("/healthz answered {}", a.status)),
        Err(e) => fail(e),
    }
}
