//! `GET /api/rooms` and `GET /api/rooms/{protocol}/{room}`: rooms and members as JSON.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AdminState;
use crate::adapters::Realm;
use crate::cluster::runtime::Status;
use crate::core::RoomView;

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
        "rooms": redacted(realm.rooms()),
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

/// This node and the nodes it sees (cluster mode).
pub fn cluster_view(status: &Status) -> Value {
    json!({ "node": status.node, "ready": status.ready(), "nodes": status.nodes() })
}

/// `GET /api/cluster`: the nodes of the cluster; 404 on a single node.
pub async fn cluster(State(state): State<AdminState>) -> (StatusCode, Json<Value>) {
    match &state.cluster {
        Some(status) => (StatusCode::OK, Json(cluster_view(status))),
        None => (
            StatusCode::NOT_FOUND,
            Json(
                json!({ "error": "single node: cluster mode is off (cluster.redis_url is empty)" }),
            ),
        ),
    }
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
        Some(view) => (StatusCode::OK, Json(json!(redacted(vec![view])[0]))),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no room {room:?} in {protocol}") })),
        ),
    }
}

/// Rooms as operators may see them: member and connection ids replaced by short tags.
///
/// A chatroom user id is the member's only credential (`reconnect {id}` takes the member
/// over) and a WebRtcRoom member id is its Engine.IO session id; neither may leave the
/// process, even to operators (the admin endpoint has no token by default). A tag is a keyed
/// hash, stable for the life of the process, so a member can still be followed across
/// refreshes, but it cannot be turned back into the id.
fn redacted(mut rooms: Vec<RoomView>) -> Vec<RoomView> {
    for member in rooms.iter_mut().flat_map(|r| r.members.iter_mut()) {
        member.id = tag(&member.id);
        member.connection = tag(&member.connection);
    }
    rooms
}

/// Eight hex digits of a keyed hash of `id`; the key is random per process.
fn tag(id: &str) -> String {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let hash = KEY.get_or_init(RandomState::new).hash_one(id);
    format!("{:08x}", hash >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_short_and_not_the_id() {
        let (a, b) = (tag("user-alice"), tag("user-bob"));
        assert_eq!(a, tag("user-alice"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 8);
        assert!(!a.contains("alice"));
    }
}
