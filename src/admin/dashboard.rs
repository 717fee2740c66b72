//! The live dashboard: one HTML page (no external assets) fed once a second by server-sent
//! events carrying each protocol's rooms, members and running totals. The stream opens with
//! a `history` event holding the last five minutes of totals, so the chart starts full.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;

use super::api::realm_view;
use super::AdminState;
use crate::stats;

const PAGE: &str = include_str!("dashboard.html");

/// `GET /`: the page.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /api/events`: the `history` event, then one snapshot per second.
pub async fn events(
    State(state): State<AdminState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let history = serde_json::to_string(&state.history.snapshot()).unwrap_or_else(|_| "[]".into());
    let first = stream::once(async move { Ok(Event::default().event("history").data(history)) });
    let ticks = stream::unfold(
        (state, tokio::time::interval(Duration::from_secs(1))),
        |(state, mut interval)| async move {
            interval.tick().await;
            let now = super::history::now();
            let realms: Vec<_> = state
                .realms
                .iter()
                .map(|r| {
                    let mut view = realm_view(r.as_ref());
                    view["name"] = json!(r.name());
                    view["totals"] = json!(stats::totals(r.name()));
                    view
                })
                .collect();
            let data = json!({ "time": now, "realms": realms }).to_string();
            Some((Ok(Event::default().data(data)), (state, interval)))
        },
    );
    Sse::new(first.chain(ticks)).keep_alive(KeepAlive::default())
}
