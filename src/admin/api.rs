//! `GET /api/rooms` and `GET /api/rooms/{protocol}/{room}`: rooms and members as JSON.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AdminState;
use crate::adapters::Realm;

/// One protocol's summary: connections, rooms and their members.
pub fn realm_view(realm: &dyn Realm) -> Value {
    let connections: Vec<Value> = realm
        .connections()
        .into_iter()
        .map(|(c, n)| json!({ "engine_io": c.engine_io, "transport": c.transport, "count": n }))
        .collect();
    let (room_count, members) = realm.sizes();
    json!({
        "connections": connections,
        "room_count": room_count,
        "member_count": members,
        "rooms": realm.rooms(),
    })
}

/// Every protocol's rooms.
pub async fn rooms(State(state): State<AdminState>) -> Json<Value> {
    let mut out = serde_json::Map::new();
    for realm in state.realms.iter() {
        out.insert(realm.name().to_owned(), realm_view(realm.as_ref()));
    }
    Json(Value::Object(out))
}

/// One room of one protocol.
pub async fn room(
    State(state): State<AdminState>,
    Path((protocol, room)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let Some(realm) = state.realms.iter().find(|r| r.name() == protocol) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no protocol {protocol:?} is served") })),
        );
    };
    match realm.room(&room) {
        Some(view) => (StatusCode::OK, Json(json!(view))),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no room {room:?} in {protocol}") })),
        ),
    }
}
