//! The live dashboard: one HTML page (no external assets) fed once a second by server-sent
//! events carrying each protocol's rooms, members and running totals. Right after the first
//! snapshot comes a `history` event holding the last five minutes of totals, so the chart
//! starts full (the snapshot stays first: clients of the stream read it as its opening).

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

/// `GET /api/events`: one snapshot per second, the first followed by the `history` event.
pub async fn events(
    State(state): State<AdminState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let history = serde_json::to_string(&state.history.snapshot()).unwrap_or_else(|_| "[]".into());
    let history = Some(Event::default().event("history").data(history));
    let ticks = stream::unfold(
        (
            state,
            tokio::time::interval(Duration::from_secs(1)),
            history,
        ),
        |(state, mut interval, mut history)| async move {
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
            let mut data = json!({ "time": now, "realms": realms });
            if let Some(cluster) = &state.cluster {
                data["cluster"] = super::api::cluster_view(cluster);
            }
            let data = data.to_string();
            let events: Vec<Result<Event, Infallible>> =
                std::iter::once(Event::default().data(data))
                    .chain(history.take())
                    .map(Ok)
                    .collect();
            Some((stream::iter(events), (state, interval, history)))
        },
    )
    .flatten();
    Sse::new(ticks).keep_alive(KeepAlive::default())
}
