//! The live dashboard: one HTML page (no external assets) fed once a second by server-sent
//! events carrying each protocol's rooms, members and running totals.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use futures_util::stream::{self, Stream};
use serde_json::json;

use super::api::realm_view;
use super::AdminState;
use crate::stats;

const PAGE: &str = include_str!("dashboard.html");

/// `GET /`: the page.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /api/events`: one snapshot per second.
pub async fn events(
    State(state): State<AdminState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = stream::unfold(
        (state, tokio::time::interval(Duration::from_secs(1))),
        |(state, mut interval)| async move {
            interval.tick().await;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
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
    Sse::new(ticks).keep_alive(KeepAlive::default())
}
