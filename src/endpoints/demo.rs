//! The demo pages: one per protocol, compiled into the binary so they work from the gateway
//! alone, offline. Each page speaks its protocol exactly as that protocol's apps do, so two
//! browser tabs on the same room show each other's camera.
//!
//! Served at `/demo/<protocol>/`, and at `/demo/` when the address carries one protocol.
//! `config.json` tells the page its protocol and namespace.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The files of one protocol's page.
struct Page {
    index: &'static str,
    app: &'static str,
    client_lib: &'static [u8],
}

const STYLE: &str = include_str!("../../demo/style.css");
const COMMON: &str = include_str!("../../demo/common.js");

fn page(protocol: &str) -> Option<Page> {
    match protocol {
        "webrtcroom" => Some(Page {
            index: include_str!("../../demo/webrtcroom/index.html"),
            app: include_str!("../../demo/webrtcroom/app.js"),
            client_lib: include_bytes!(concat!(env!("OUT_DIR"), "/socket.io.v2.js")),
        }),
        "chatroom" => Some(Page {
            index: include_str!("../../demo/chatroom/index.html"),
            app: include_str!("../../demo/chatroom/app.js"),
            client_lib: include_bytes!(concat!(env!("OUT_DIR"), "/socket.io.v4.js")),
        }),
        _ => None,
    }
}

fn typed(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Routes serving `protocol`'s page under `base` (e.g. `/demo` or `/demo/chatroom`).
pub fn routes(base: &str, protocol: &'static str, namespace: &str) -> Router {
    let Some(Page {
        index,
        app,
        client_lib,
    }) = page(protocol)
    else {
        return Router::new();
    };
    let config = json!({ "protocol": protocol, "namespace": namespace });
    let slash = format!("{base}/");
    let target = slash.clone();
    Router::new()
        .route(
            base,
            get(move || async move { Redirect::permanent(&target) }),
        )
        .route(
            &slash,
            get(move || async move { typed(index, "text/html; charset=utf-8") }),
        )
        .route(
            &format!("{base}/app.js"),
            get(move || async move { typed(app, "text/javascript; charset=utf-8") }),
        )
        .route(
            &format!("{base}/style.css"),
            get(|| async { typed(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            &format!("{base}/common.js"),
            get(|| async { typed(COMMON, "text/javascript; charset=utf-8") }),
        )
        .route(
            &format!("{base}/socket.io.js"),
            get(move || async move { typed(client_lib, "text/javascript; charset=utf-8") }),
        )
        .route(
            &format!("{base}/config.json"),
            get(move || async move { Json(config) }),
        )
}
