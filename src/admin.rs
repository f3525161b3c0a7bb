//! The admin HTTP API: `/metrics`, `/healthz`, `/readyz`, `GET /families` and
//! `PUT /families/{name}` (`{"enabled": bool}`).
//!
//! Mutations need `Authorization: Bearer <token>` whenever a token is configured; the config
//! layer refuses to start on a non-loopback admin address without one.

use crate::families::{Family, FamilySwitches};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Whether the proxy can serve replicas correctly right now, and why not.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// Ready to serve.
    pub ready: bool,
    /// Why not (empty when ready): conditions that end by themselves (a sync in progress, a
    /// master link being re-established).
    pub reasons: Vec<String>,
    /// What is degraded but does not stop the proxy from serving (no replica yet, incomplete
    /// expiry knowledge): reported, never a reason for 503, since only an operator ends them.
    pub notes: Vec<String>,
    /// Replica sessions the relay knows.
    pub replicas: usize,
}

/// Where readiness comes from (the running relay).
pub type ReadinessSource = Arc<dyn Fn() -> Readiness + Send + Sync>;

/// Everything the handlers need.
#[derive(Clone)]
pub struct AdminState {
    /// Family switches shared with the relay.
    pub families: FamilySwitches,
    /// Prometheus rendering.
    pub prometheus: PrometheusHandle,
    /// The per-replica series, rendered after the recorder's.
    pub replicas: Arc<crate::replica_series::ReplicaSeries>,
    /// Readiness of the relay.
    pub readiness: ReadinessSource,
    /// Token required by mutations, if any.
    pub token: Option<Arc<str>>,
}

#[derive(Serialize)]
struct FamilyView {
    name: &'static str,
    enabled: bool,
    rewritten: u64,
    passed: u64,
    disabled: u64,
    unknown_key: u64,
}

#[derive(Deserialize)]
struct Switch {
    enabled: bool,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.prometheus.render() + &state.replicas.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let r = (state.readiness)();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

fn family_views(state: &AdminState) -> Vec<FamilyView> {
    let counts = crate::metrics::entry_counts(&state.prometheus.render());
    let count = |f: Family, outcome: &str| {
        counts
            .iter()
            .filter(|(fam, o, _)| fam == f.name() && o == outcome)
            .map(|(_, _, n)| *n)
            .sum()
    };
    Family::ALL
        .iter()
        .map(|&f| FamilyView {
            name: f.name(),
            enabled: state.families.is_enabled(f),
            rewritten: count(f, "rewritten"),
            passed: count(f, "passed"),
            disabled: count(f, "disabled"),
            unknown_key: count(f, "unknown_key"),
        })
        .collect()
}

async fn list_families(State(state): State<AdminState>) -> Response {
    Json(family_views(&state)).into_response()
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.as_bytes() == token.as_bytes())
}

async fn switch_family(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let family: Family = match name.parse() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::NOT_FOUND, format!("{e}")),
    };
    let switch: Switch = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"enabled\": true|false}}: {e}"),
            )
        }
    };
    let was = state.families.set(family, switch.enabled);
    metrics::gauge!(crate::metrics::names::FAMILY_ENABLED, "family" => family.name())
        .set(if switch.enabled { 1.0 } else { 0.0 });
    if was != switch.enabled {
        tracing::info!(
            family = family.name(),
            enabled = switch.enabled,
            "family switched through the admin API"
        );
    }
    Json(serde_json::json!({ "name": family.name(), "enabled": switch.enabled, "was": was }))
        .into_response()
}

/// The router, for tests and for [`serve`].
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/families", get(list_families))
        .route(
            "/families/{name}",
            get(
                |State(state): State<AdminState>, Path(name): Path<String>| async move {
                    match family_views(&state).into_iter().find(|f| f.name == name) {
                        Some(v) => Json(v).into_response(),
                        None => error(StatusCode::NOT_FOUND, format!("unknown family '{name}'")),
                    }
                },
            )
            .put(switch_family),
        )
        .with_state(state)
}

/// Serve the admin API on an already bound listener until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Bind the admin address (a separate step so a taken port fails before the relay starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
