//! The WebRtcRoom protocol (Html, Android and iOS apps on socket.io 2.x).
//!
//! Wire spec: `protocols/webrtcroom/SPEC.md`. In short:
//! - `createAndJoinRoom {room}`: existing members get `joined {id, room}`, then the newcomer
//!   gets `created {id, room, peers: [{id}]}`; `room` is echoed with its JSON type.
//! - `offer` / `answer` / `candidate {from, to, ...}`: forwarded unchanged to member `to`.
//! - `exit {from, room}`: the sender leaves its room; the others get the message.
//! - disconnect: the others in its room get `exit {from: id, room: ""}`.
//!
//! Unlike the original, every message is checked: the sender must be in a room, `to` must be
//! in the same room, `from` must be the sender's own id. WebRtcRoom has no error event, so
//! anything refused is logged and counted, and nothing is sent.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::socket::DisconnectReason;
use socketioxide::{ProtocolVersion, SocketIo};

use crate::access::{self, Tokens};
use crate::adapters::mixed::{self, RealmStore, Side};
use crate::adapters::{
    deliver, wire, Bound, EventFrame, Gate, Protocol, Reach, SocketRealm, Stores,
};
use crate::config::{Limits, ProtocolConfig};
use crate::core::{Departure, Join, JoinOutcome, Peer};
use crate::stats;

const NAME: &str = "webrtcroom";

/// The adapter: its realm of rooms and its settings.
pub struct WebRtcRoom {
    rooms: Arc<RealmStore>,
    max_room_size: usize,
    gate: Gate,
    tokens: Option<Arc<Tokens>>,
}

impl WebRtcRoom {
    /// Binds the protocol to `config.namespace` of `io`.
    pub fn bind(io: &SocketIo, config: &ProtocolConfig, limits: Limits, stores: &Stores) -> Bound {
        // No reconnect grace: a member whose node died leaves at once, like a disconnect.
        let rooms = stores.open_view(
            Side::WebRtcRoom,
            std::time::Duration::ZERO,
            LABELS.sent,
            Arc::new(|d: Departure<Reach>| announce_exit(&d, "")),
        );
        let adapter = Arc::new(Self {
            rooms: Arc::new(rooms),
            max_room_size: config.max_room_size,
            gate: Gate::new(limits).with_send_buffer(config.engine.send_buffer),
            tokens: access::tokens_for(NAME, &config.token),
        });
        crate::adapters::bind(io, &config.namespace, adapter.clone());
        Bound {
            realm: SocketRealm::new(NAME, adapter.rooms.clone(), io, &config.namespace),
            routes: axum::Router::new(),
        }
    }
}

/// The id a client knows itself by. socket.io 2.x clients on a namespace other than `/`
/// expect `"/ns#sid"`; on `/` (and for newer clients) it is the plain session id.
fn wire_id(socket: &SocketRef) -> Arc<str> {
    let ns = socket.ns();
    if ns != "/" && socket.protocol() == ProtocolVersion::V4 {
        format!("{ns}#{}", socket.id).into()
    } else {
        socket.id.to_string().into()
    }
}

/// `createAndJoinRoom` payload.
#[derive(Deserialize)]
struct CreateAndJoin<'a> {
    #[serde(borrow)]
    room: &'a RawValue,
}

/// The fields of a relayed message that routing needs; the rest is forwarded untouched.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, deserialize_with = "wire::cow_str")]
    from: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "opt_cow_str")]
    to: Option<Cow<'a, str>>,
}

impl<'a> Envelope<'a> {
    /// The routing fields of a relayed message: a quick scan when the client put them
    /// first, serde (which also rejects duplicate keys) otherwise.
    fn read(object: &'a RawValue) -> Result<Self, Bad> {
        if let Some([from, to]) = wire::top_level_strs(object.get(), ["\"from\"", "\"to\""]) {
            let from = from.ok_or(Bad::Field)?;
            return Ok(Envelope {
                from: Cow::Borrowed(from),
                to: to.map(Cow::Borrowed),
            });
        }
        serde_json::from_str(object.get()).map_err(|_| Bad::Field)
    }
}

fn opt_cow_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    wire::cow_str(d).map(Some)
}

#[derive(Serialize)]
struct Created<'a> {
    id: &'a str,
    room: &'a RawValue,
    peers: Vec<PeerId<'a>>,
}

#[derive(Serialize)]
struct PeerId<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct Joined<'a> {
    id: &'a str,
    room: &'a RawValue,
}

#[derive(Serialize)]
struct Exit<'a> {
    from: &'a str,
    room: &'a str,
}

/// How a client's event was refused; each becomes a `bad_input` count.
#[derive(Debug, Clone, Copy)]
enum Bad {
    UnknownEvent,
    MissingPayload,
    NotAnObject,
    Field,
    Room,
}

impl Bad {
    fn kind(self) -> &'static str {
        match self {
            Bad::UnknownEvent => "unknown_event",
            Bad::MissingPayload => "missing_payload",
            Bad::NotAnObject => "not_an_object",
            Bad::Field => "bad_field",
            Bad::Room => "bad_room",
        }
    }
}

impl Protocol for WebRtcRoom {
    const NAME: &'static str = NAME;

    fn gate(&self) -> &Gate {
        &self.gate
    }

    fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_deref()
    }

    fn waits(&self) -> bool {
        self.rooms.waits()
    }

    fn on_connect(&self, socket: &SocketRef) {
        tracing::debug!(protocol = NAME, sid = %socket.id, transport = ?socket.transport_type(), "connected");
    }

    async fn on_event(&self, socket: &SocketRef, frame: EventFrame<'_>) {
        let result = match &*frame.name {
            "createAndJoinRoom" => self.create_and_join(socket, &frame).await,
            "offer" => self.relay(socket, &frame, "offer").await,
            "answer" => self.relay(socket, &frame, "answer").await,
            "candidate" => self.relay(socket, &frame, "candidate").await,
            "exit" => self.exit(socket, &frame).await,
            _ => Err(Bad::UnknownEvent),
        };
        if let Err(bad) = result {
            stats::bad_input(NAME, bad.kind());
            tracing::debug!(protocol = NAME, sid = %socket.id, event = %frame.name, kind = bad.kind(), "bad input ignored");
        }
    }

    async fn on_disconnect(&self, socket: &SocketRef, reason: DisconnectReason) {
        let departure = self.rooms.leave(socket.id).await;
        tracing::info!(protocol = NAME, sid = %socket.id, %reason, room = departure.as_ref().map(|d| &*d.room), "disconnected");
        if let Some(d) = departure {
            announce_exit(&d, "");
        }
    }
}

impl WebRtcRoom {
    async fn create_and_join(&self, socket: &SocketRef, frame: &EventFrame<'_>) -> Result<(), Bad> {
        if !frame.has_payload() {
            return Err(Bad::MissingPayload);
        }
        let object = frame.object().ok_or(Bad::NotAnObject)?;
        let req: CreateAndJoin = serde_json::from_str(object.get()).map_err(|_| Bad::Room)?;
        let room_key = room_key(req.room).ok_or(Bad::Room)?;
        if let Err(hit) = self.gate.check_name("room", &room_key) {
            stats::refused(NAME, hit.kind);
            tracing::debug!(protocol = NAME, sid = %socket.id, %hit, "join refused");
            return Ok(());
        }
        if let Err(refusal) = access::may_join(socket, &room_key, None) {
            stats::refused(NAME, refusal.kind());
            tracing::info!(protocol = NAME, sid = %socket.id, room = %room_key, %refusal, "join refused");
            return Ok(());
        }
        let id = wire_id(socket);
        let outcome = self
            .rooms
            .join(Join {
                room: room_key.clone(),
                member: id.clone(),
                conn: socket.id,
                handle: Reach::Local(socket.clone()),
                name: None,
                capacity: self.max_room_size,
                max_rooms: self.gate.limits().max_rooms,
            })
            .await;
        match outcome {
            Err(refusal) => {
                stats::refused(NAME, refusal.kind());
                tracing::info!(protocol = NAME, sid = %socket.id, room = %room_key, %refusal, "join refused");
            }
            Ok(JoinOutcome::AlreadyMember { peers }) => {
                // Idempotent: answer again, tell nobody else.
                self.send_created(socket, &id, req.room, &peers);
            }
            Ok(JoinOutcome::Joined(joined)) => {
                if let Some(left) = &joined.left {
                    stats::left(NAME);
                    tracing::info!(protocol = NAME, sid = %socket.id, room = %left.room, "left room to join another");
                    announce_exit(left, &left.room);
                }
                stats::joined(NAME);
                tracing::info!(protocol = NAME, sid = %socket.id, room = %room_key, members = joined.existing.len() + 1, "joined");
                let notice = Joined {
                    id: &id,
                    room: req.room,
                };
                for peer in &joined.existing {
                    // A chatroom member gets nothing: the newcomer offers to it (mixed rooms).
                    if let (Some(handle), false) = (&peer.handle, self.rooms.foreign(peer.label)) {
                        deliver(NAME, handle, "joined", &notice);
                    }
                }
                self.send_created(socket, &id, req.room, &joined.existing);
            }
        }
        Ok(())
    }

    fn send_created(&self, socket: &SocketRef, id: &str, room: &RawValue, peers: &[Peer<Reach>]) {
        // A chatroom member (mixed rooms) is listed by its socket id, the id chatroom clients
        // know it by and the one the app's messages are routed by; one that is away (in its
        // reconnect grace) is left out: an offer could not reach it, and it is asked to offer
        // when it comes back.
        let ids: Vec<std::borrow::Cow<'_, str>> = peers
            .iter()
            .filter_map(|p| match (self.rooms.foreign(p.label), &p.handle) {
                (false, _) => Some(std::borrow::Cow::Borrowed(&*p.member)),
                (true, Some(handle)) => Some(handle.id()),
                (true, None) => None,
            })
            .collect();
        let created = Created {
            id,
            room,
            peers: ids.iter().map(|id| PeerId { id }).collect(),
        };
        deliver(NAME, &Reach::Local(socket.clone()), "created", &created);
    }

    async fn relay(
        &self,
        socket: &SocketRef,
        frame: &EventFrame<'_>,
        event: &'static str,
    ) -> Result<(), Bad> {
        if !frame.has_payload() {
            return Err(Bad::MissingPayload);
        }
        let object = frame.object().ok_or(Bad::NotAnObject)?;
        let envelope = Envelope::read(object)?;
        let to = envelope.to.ok_or(Bad::Field)?;
        let route = match self.rooms.route(socket.id, &to, None).await {
            Ok(route) => route,
            Err(e) => {
                stats::dropped(NAME, e.kind());
                tracing::debug!(protocol = NAME, sid = %socket.id, event, reason = %e, "relay dropped");
                return Ok(());
            }
        };
        if *route.sender != *envelope.from {
            stats::dropped(NAME, "spoofed_from");
            tracing::debug!(protocol = NAME, sid = %socket.id, event, "relay dropped: from is not the sender");
            return Ok(());
        }
        if self.rooms.foreign(route.target_label) {
            return self.relay_to_chatroom(socket, event, object, route).await;
        }
        if deliver(NAME, &route.target, event, object) {
            stats::relayed(NAME, event);
            tracing::debug!(protocol = NAME, sid = %socket.id, event, to = %to, "relayed");
        }
        Ok(())
    }

    /// A relay to a chatroom member of a mixed room, in the chatroom's words. An offer or
    /// answer also records the link on the target, as a chatroom client's would (a second
    /// routing step, only for these messages: links are not kept between WebRtcRoom members).
    async fn relay_to_chatroom(
        &self,
        socket: &SocketRef,
        event: &'static str,
        object: &RawValue,
        route: crate::core::Route<Reach>,
    ) -> Result<(), Bad> {
        let route = match event {
            "offer" | "answer" => {
                let link = mixed::webrtcroom_link(&route.sender, self.gate.limits().max_links);
                let to = route.target.id();
                match self.rooms.route_to_conn(socket.id, &to, Some(link)).await {
                    Ok(r) => r,
                    Err(e) => {
                        stats::dropped(NAME, e.kind());
                        tracing::debug!(protocol = NAME, sid = %socket.id, event, reason = %e, "relay dropped");
                        return Ok(());
                    }
                }
            }
            _ => route,
        };
        if let Err(why) = mixed::webrtcroom_to_chatroom(event, object, &route.sender, &route) {
            stats::dropped(NAME, why.kind());
            tracing::debug!(protocol = NAME, sid = %socket.id, event, reason = why.kind(), "relay to a chatroom member dropped");
        }
        Ok(())
    }

    async fn exit(&self, socket: &SocketRef, frame: &EventFrame<'_>) -> Result<(), Bad> {
        if !frame.has_payload() {
            return Err(Bad::MissingPayload);
        }
        let object = frame.object().ok_or(Bad::NotAnObject)?;
        let envelope = Envelope::read(object)?;
        let Some((_, me)) = self.rooms.membership(socket.id) else {
            stats::dropped(NAME, "not_joined");
            return Ok(());
        };
        if *me != *envelope.from {
            stats::dropped(NAME, "spoofed_from");
            return Ok(());
        }
        if let Some(departure) = self.rooms.leave(socket.id).await {
            stats::left(NAME);
            tracing::info!(protocol = NAME, sid = %socket.id, room = %departure.room, "left");
            for peer in &departure.remaining {
                if let (Some(handle), false) = (&peer.handle, self.rooms.foreign(peer.label)) {
                    deliver(NAME, handle, "exit", object);
                }
            }
            tell_chatroom_peers(&departure);
        }
        Ok(())
    }
}

/// Tells the chatroom members of a mixed room that had linked to a departed WebRtcRoom
/// member, with `leave` on their own end of the link (none outside mixed rooms).
fn tell_chatroom_peers(d: &Departure<Reach>) {
    for peer in d
        .linked
        .iter()
        .filter(|l| l.label == Side::Chatroom.label())
    {
        mixed::leave_to_chatroom(&peer.handle, &peer.connector, &d.member);
    }
}

/// Tells the members still in a room that `d.member` is gone.
fn announce_exit(d: &Departure<Reach>, room: &str) {
    let exit = Exit {
        from: &d.member,
        room,
    };
    for peer in &d.remaining {
        if let (Some(handle), false) = (&peer.handle, peer.label == Side::Chatroom.label()) {
            deliver(NAME, handle, "exit", &exit);
        }
    }
    tell_chatroom_peers(d);
}

/// The room's identity: a non-empty string, or a number (the original joined `String(room)`).
fn room_key(room: &RawValue) -> Option<Arc<str>> {
    let text = room.get();
    if text.starts_with('"') {
        let s: String = serde_json::from_str(text).ok()?;
        (!s.is_empty()).then(|| s.into())
    } else {
        let n: serde_json::Number = serde_json::from_str(text).ok()?;
        Some(n.to_string().into())
    }
}

/// What this protocol counts beyond [`super::SHARED_LABELS`], so that every series exists
/// from the start.
pub const LABELS: stats::Known = stats::Known {
    sent: &["created", "joined", "exit", "offer", "answer", "candidate"],
    relayed: &["offer", "answer", "candidate"],
    dropped: &["spoofed_from"],
    refused: &[],
    bad_input: &[
        "unknown_event",
        "missing_payload",
        "not_an_object",
        "bad_field",
        "bad_room",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("valid json")
    }

    #[test]
    fn room_keys() {
        assert_eq!(room_key(&raw("\"房间1\"")).as_deref(), Some("房间1"));
        assert_eq!(room_key(&raw("5")).as_deref(), Some("5"));
        for bad in ["\"\"", "null", "true", "{}", "[]"] {
            assert!(room_key(&raw(bad)).is_none(), "{bad}");
        }
    }
}
