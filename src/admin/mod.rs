//! The operators' endpoint: liveness, readiness, Prometheus metrics, a JSON view of rooms and
//! members, and a live dashboard page.
//!
//! It listens on its own address (loopback by default) so that counts and room names are
//! never exposed on the public signalling ports, and it can require a bearer token. It sees
//! the protocols only through [`Realm`], so it knows nothing of any protocol's events.

mod api;
mod dashboard;
mod history;
pub mod host_check;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::access::{bearer, query_token, Secret};
use crate::adapters::Realm;
use crate::cluster::runtime::Status;
use crate::stats;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Renders the metrics registry.
    metrics: PrometheusHandle,
    /// Set once every listener is bound.
    ready: Arc<AtomicBool>,
    /// The protocols being served.
    realms: Arc<Vec<Arc<dyn Realm>>>,
    /// Required bearer token, if any.
    token: Option<Arc<str>>,
    /// Recent per-second totals, for the dashboard's chart.
    history: Arc<history::History>,
    /// The cluster as this node sees it (cluster mode only).
    cluster: Option<Arc<Status>>,
}

impl AdminState {
    /// State for the admin routes; starts sampling the totals for the dashboard (so call it
    /// inside the runtime).
    pub fn new(
        metrics: PrometheusHandle,
        ready: Arc<AtomicBool>,
        realms: Vec<Arc<dyn Realm>>,
        token: Option<Secret>,
        cluster: Option<Arc<Status>>,
    ) -> Self {
        let realms = Arc::new(realms);
        Self {
            metrics,
            ready,
            history: history::History::start(realms.clone()),
            realms,
            // The config refuses an empty token; this keeps an empty one from ever meaning
            // "no authentication" if a caller skips validation.
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(t.expose())),
            cluster,
        }
    }
}

/// Buckets of the handling-time histogram: from a microsecond to a tenth of a second.
const HANDLING_BUCKETS: [f64; 12] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 1e-1,
];

/// Buckets of the Redis round-trip histogram (cluster mode): 50 µs to 2 s.
const REDIS_BUCKETS: [f64; 11] = [
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 1e-1, 1.0, 2.0,
];

/// The process's own figures (RSS, CPU seconds, open file descriptors, start time, threads),
/// read from `/proc` at each scrape under the usual `process_*` names.
static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
    std::sync::LazyLock::new(metrics_process::Collector::default);

/// Installs the process-wide metrics recorder. Call once, before anything is counted, from
/// inside the runtime.
///
/// The recorder buffers histogram samples until an upkeep folds them into the buckets; a
/// task does that every few seconds, so memory does not grow with the number of messages
/// handled when nobody scrapes `/metrics` (found by the soak: ~16 bytes per message).
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("gateway_handling_seconds".into()),
            &HANDLING_BUCKETS,
        )
        .context("histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("gateway_cluster_redis_seconds".into()),
            &REDIS_BUCKETS,
        )
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    metrics::gauge!("gateway_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    PROCESS.describe();
    PROCESS.collect();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/rooms", get(api::rooms))
        .route("/api/cluster", get(api::cluster))
        .route("/api/rooms/{protocol}/{room}", get(api::room))
        .route("/api/events", get(dashboard::events))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // The dashboard page is static (no data): it is served without a token and hands the
    // `?token=` of its own URL to its event stream.
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(dashboard::page))
        .merge(guarded)
        .with_state(state)
}

/// Routes that may take the token from `?token=`: only the dashboard's event stream (a
/// browser's `EventSource` cannot set headers). Everything else needs the header, so the
/// token does not end up in proxies' access logs for API calls.
const QUERY_TOKEN_ROUTES: [&str; 1] = ["/api/events"];

/// Refuses a request without the configured bearer token.
async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let given = bearer(req.headers()).or_else(|| {
        QUERY_TOKEN_ROUTES
            .contains(&req.uri().path())
            .then(|| query_token(req.uri()))
            .flatten()
    });
    if given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "a valid bearer token is required" })),
        )
            .into_response()
    }
}

/// Compares in time that does not depend on where the first difference is, so response
/// timing does not reveal the token byte by byte (the length may still show).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == expected.len() && bool::from(given.ct_eq(expected))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, Json<serde_json::Value>) {
    if state.cluster.as_ref().is_some_and(|c| !c.ready()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "redis_unreachable" })),
        );
    }
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "starting" })),
        )
    }
}

async fn metrics(State(state): State<AdminState>) -> String {
    // Gauges are read from the live state at scrape time, so they can never lag behind it.
    PROCESS.collect();
    if let Some(cluster) = &state.cluster {
        cluster.record_metrics();
    }
    for realm in state.realms.iter() {
        let (rooms, members) = realm.sizes();
        stats::set_sizes(realm.name(), rooms, members);
        let counts = realm.connections();
        for eio in [3u8, 4] {
            for transport in ["polling", "websocket"] {
                let n = counts
                    .iter()
                    .find(|(c, _)| c.engine_io == eio && c.transport == transport)
                    .map_or(0, |(_, n)| *n);
                stats::set_connections(realm.name(), eio, transport, n);
            }
        }
    }
    state.metrics.render()
}
