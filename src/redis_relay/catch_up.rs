//! Rebuilding a replica's expiry table after a crash, from a checkpoint
//! ([`super::checkpoint`]) and the master's replication backlog.
//!
//! A relay killed without a clean stop has the replica's offset map (written ahead of every
//! send) but not its table. When the replica continues at upstream offset `u`, the newest
//! checkpoint at or before `u` (at `u_c`) is loaded and, if the master's backlog still holds
//! `u_c + 1` (asked on a short connection of its own: `INFO replication`), the upstream link
//! asks for `PSYNC <master-id> <u_c + 1>` instead of `u + 1`. The link then decides the bytes
//! from `u_c` to `u` against the checkpoint's table without sending them (the replica has
//! them) and streams normally from `u` on, with the table exact there (the Link's catch-up
//! mode, `link/catch_up.rs`). Without a usable checkpoint or backlog, the resume is as before
//! (`PSYNC <master-id> <u + 1>`, table unknown) and the log says why once.
//!
//! Entries in the caught-up stretch are decided with the catch-up's time as their exec time:
//! a relative TTL among them (a master before Redis 7 propagates `EXPIRE` as is) gets a
//! deadline in the table later than the replica's by the time since it was first relayed.

use super::checkpoint;
use super::link::CatchUpFrom;
use super::store::ReplicaState;
use super::upstream::Upstream;
use super::RedisRelayConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest `INFO replication` reply read.
const MAX_INFO_BYTES: usize = 1 << 20;

/// Prepares the catch-up of `state`'s table to `resolved_u`: installs the newest usable
/// checkpoint's table in `state` and returns where the upstream PSYNC must start. `None`: no
/// catch-up (logged with the reason, the table stays unknown), or none needed (the checkpoint
/// is exactly at `resolved_u`, and the table is installed there).
pub(crate) async fn plan(
    cfg: &RedisRelayConfig,
    replica: &str,
    state: &mut ReplicaState,
    resolved_u: u64,
) -> Option<CatchUpFrom> {
    let found = checkpoint::find(&cfg.state_dir, &state.own_id, &state.master_id, resolved_u);
    let (snapshot, db) = match found {
        Ok(found) => found,
        Err(why) => {
            tracing::info!(%replica, own_id = %state.own_id, u = resolved_u,
                "no usable checkpoint of the expiry table ({why}); keys from before the restart are unknown until the next full sync");
            return None;
        }
    };
    let from = snapshot.table_u;
    if from < resolved_u {
        if let Err(why) = probe(cfg, &state.master_id, from + 1).await {
            tracing::info!(%replica, own_id = %state.own_id, from, to = resolved_u,
                "cannot bring the expiry table's checkpoint to the resume position: {why}; keys from before the restart are unknown until the next full sync");
            return None;
        }
    }
    tracing::info!(%replica, own_id = %state.own_id, from, to = resolved_u,
        keys = snapshot.table.len(), complete = snapshot.table.is_complete(),
        "bringing the expiry table from its checkpoint to the resume position along the master's backlog");
    state.table = Arc::new(snapshot.table);
    state.table_u = Some(from);
    (from < resolved_u).then_some(CatchUpFrom { u: from, db })
}

/// Whether the master would continue `master_id`'s stream at offset `from`, asked on a
/// connection of its own.
async fn probe(cfg: &RedisRelayConfig, master_id: &str, from: u64) -> Result<(), String> {
    let mut up = Upstream::connect(cfg.master, cfg.connect_timeout)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(password) = cfg.master_password.as_deref() {
        up.authenticate(cfg.master_user.as_deref(), password, cfg.handshake_timeout)
            .await
            .map_err(|e| e.to_string())?;
    }
    up.send(&["INFO", "replication"])
        .await
        .map_err(|e| e.to_string())?;
    let info = up
        .read_bulk(cfg.handshake_timeout, MAX_INFO_BYTES)
        .await
        .map_err(|e| format!("INFO replication: {e}"))?;
    backlog_verdict(&String::from_utf8_lossy(&info), master_id, from)
}

/// Whether a master whose `INFO replication` is `info` accepts `PSYNC <master_id> <from>`,
/// by the rule Redis applies (`masterTryPartialResynchronization`).
pub(crate) fn backlog_verdict(info: &str, master_id: &str, from: u64) -> Result<(), String> {
    let fields: HashMap<&str, &str> = info
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .collect();
    let num = |name: &str| -> Result<u64, String> {
        fields
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("the master's INFO has no {name}"))
    };
    let same_history = fields.get("master_replid") == Some(&master_id)
        || (fields.get("master_replid2") == Some(&master_id) && from <= num("second_repl_offset")?);
    if !same_history {
        return Err("the master's replication id changed".into());
    }
    if fields.get("repl_backlog_active") == Some(&"0") {
        return Err("the master has no replication backlog".into());
    }
    let first = num("repl_backlog_first_byte_offset")?;
    let len = num("repl_backlog_histlen")?;
    if from < first || from > first.saturating_add(len) {
        return Err(format!(
            "the master's backlog holds {first}..{} and not {from}",
            first.saturating_add(len)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn info(replid: &str, first: u64, len: u64) -> String {
        format!(
            "# Replication\r\nrole:master\r\nmaster_replid:{replid}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\nrepl_backlog_first_byte_offset:{first}\r\nrepl_backlog_histlen:{len}\r\n"
        )
    }

    #[test]
    fn the_backlog_must_hold_the_checkpoint_offset_of_the_same_history() {
        assert!(backlog_verdict(&info(ID, 1, 1000), ID, 1).is_ok());
        assert!(backlog_verdict(&info(ID, 1, 1000), ID, 1001).is_ok());
        let why = backlog_verdict(&info(ID, 500, 1000), ID, 100).unwrap_err();
        assert!(why.contains("500..1500"), "{why}");
        assert!(backlog_verdict(&info(ID, 1, 1000), ID, 1002).is_err());
        let other = "1".repeat(40);
        assert!(backlog_verdict(&info(&other, 1, 1000), ID, 10).is_err());
        assert!(backlog_verdict("", ID, 10).is_err());
    }
}
