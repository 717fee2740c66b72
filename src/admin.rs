//! The operators' endpoint: liveness, readiness and Prometheus metrics.
//!
//! It listens on its own address (loopback by default) so that counts and room names are
//! never exposed on the public signalling ports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Renders the metrics registry.
    pub metrics: PrometheusHandle,
    /// Set once every listener is bound.
    pub ready: Arc<AtomicBool>,
}

/// Installs the process-wide metrics recorder. Call once, before anything is counted.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, Json<serde_json::Value>) {
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
    state.metrics.render()
}
