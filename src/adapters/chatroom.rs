//! The chatroom protocol (the Vue/React front-end exercise client on socket.io-client 4.x).
//!
//! Wire spec: `protocols/chatroom/SPEC.md`. In short:
//! - `join {id, username, roomname}`: existing members get `getOffer {memberId}`; the joiner
//!   gets nothing, or `error {type:"repeat"}` when its name is taken in the room.
//! - `offer` / `answer` / `icecandidate`: relayed to the socket `memberId`, fields renamed
//!   (`connectorId` ↔ `remoteConnectorId`, `memberId` becomes the sender's socket id).
//! - `leave [{remoteConnectorId, memberId}]`: the sender leaves; each listed member hears it.
//! - a dropped connection keeps its member for `reconnect_grace`; `reconnect {id, ...}` on a
//!   new connection takes it back, and linked peers are asked to renegotiate.
//! - `reconnectWork`: passed through to `memberId` as a `reconnect` event.
//! - `GET /checkUsername` and `/api/checkUsername`: is a name taken in a room.
//!
//! Unlike the original, nothing a client sends can crash the gateway or reach another room:
//! refused input is answered with `error {type, message}` and changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::socket::DisconnectReason;
use socketioxide::SocketIo;

use crate::access::{self, Tokens};
use crate::adapters::mixed::{self, RealmStore, Side};
use crate::adapters::{
    deliver, Bound, EventFrame, Gate, LimitHit, Protocol, Reach, SocketRealm, Stores,
};
use crate::config::{Limits, ProtocolConfig};
use crate::core::{
    Departure, Disconnected, Join, JoinOutcome, LinkNote, Rebind, RebindError, Refusal, Route,
    RouteError,
};
use crate::endpoints::source::Source;
use crate::stats;

const NAME: &str = "chatroom";

/// The original's message for a taken username ("this username already exists in this room").
const REPEAT_MESSAGE: &str = "此房间该用户名已存在";

/// The adapter: its realm of rooms and its settings.
pub struct Chatroom {
    rooms: Arc<RealmStore>,
    grace: Duration,
    max_room_size: usize,
    gate: Gate,
    tokens: Option<Arc<Tokens>>,
    /// `reconnect` requests waiting for the member's old connection to drop (see
    /// [`Chatroom::park`]), by member id; at most one per member.
    parked: Mutex<HashMap<Arc<str>, Parked>>,
    /// How long a parked `reconnect` waits: past the heartbeat's ping interval and timeout,
    /// a connection that is still bound has answered a ping, so it is alive.
    park_limit: Duration,
    /// The adapter itself, for the timer that decides a parked `reconnect`.
    me: Weak<Chatroom>,
}

/// A `reconnect` from another source than the member's still-bound connection.
struct Parked {
    socket: SocketRef,
    req: ReconnectReq,
}

/// The message of the `error {type:"reconnect"}` for a member that stayed connected.
const STILL_CONNECTED: &str = "this id is connected from another address";

impl Chatroom {
    /// Binds the protocol to `config.namespace` of `io`; returns its HTTP routes.
    pub fn bind(io: &SocketIo, config: &ProtocolConfig, limits: Limits, stores: &Stores) -> Bound {
        let rooms = stores.open_view(
            Side::Chatroom,
            config.grace(),
            LABELS.sent,
            Arc::new(expiry_notice),
        );
        let adapter = Arc::new_cyclic(|me| Self {
            rooms: Arc::new(rooms),
            grace: config.grace(),
            max_room_size: config.max_room_size,
            gate: Gate::new(limits).with_send_buffer(config.engine.send_buffer),
            tokens: access::tokens_for(NAME, &config.token),
            parked: Mutex::default(),
            park_limit: config.engine.ping_interval
                + config.engine.ping_timeout
                + Duration::from_secs(2),
            me: me.clone(),
        });
        crate::adapters::bind(io, &config.namespace, adapter.clone());
        let routes = Router::new()
            .route("/checkUsername", get(check_username))
            .route("/api/checkUsername", get(check_username))
            .with_state(adapter.clone());
        Bound {
            realm: SocketRealm::new(NAME, adapter.rooms.clone(), io, &config.namespace),
            routes,
        }
    }
}

// ---- payloads, as the client sends them --------------------------------------------------

#[derive(Deserialize)]
struct JoinReq {
    id: String,
    username: String,
    roomname: String,
}

#[derive(Deserialize)]
struct ReconnectReq {
    id: String,
    #[serde(default)]
    username: Option<String>,
    roomname: String,
}

#[derive(Deserialize)]
struct OfferReq<'a> {
    #[serde(rename = "connectorId")]
    connector_id: String,
    #[serde(rename = "memberId")]
    member_id: String,
    #[serde(borrow, default, deserialize_with = "present")]
    offer: Option<&'a RawValue>,
    #[serde(rename = "streamType", default, deserialize_with = "nullable")]
    stream_type: Option<Option<String>>,
}

#[derive(Deserialize)]
struct AnswerReq<'a> {
    #[serde(
        rename = "remoteConnectorId",
        borrow,
        default,
        deserialize_with = "present"
    )]
    remote_connector_id: Option<&'a RawValue>,
    #[serde(rename = "connectorId")]
    connector_id: String,
    #[serde(rename = "memberId")]
    member_id: String,
    #[serde(borrow, default, deserialize_with = "present")]
    answer: Option<&'a RawValue>,
    #[serde(rename = "streamType", default)]
    stream_type: Option<String>,
}

#[derive(Deserialize)]
struct IceReq<'a> {
    #[serde(
        rename = "remoteConnectorId",
        borrow,
        default,
        deserialize_with = "present"
    )]
    remote_connector_id: Option<&'a RawValue>,
    #[serde(rename = "memberId")]
    member_id: String,
    #[serde(borrow, default, deserialize_with = "present")]
    candidate: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LeaveEntry<'a> {
    #[serde(
        rename = "remoteConnectorId",
        borrow,
        default,
        deserialize_with = "present"
    )]
    remote_connector_id: Option<&'a RawValue>,
    #[serde(rename = "memberId")]
    member_id: String,
}

#[derive(Deserialize)]
struct ReconnectWorkReq<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(rename = "connectorId", borrow, default, deserialize_with = "present")]
    connector_id: Option<&'a RawValue>,
    #[serde(rename = "memberId", default)]
    member_id: Option<String>,
}

/// For an optional field that is relayed: absent stays absent (left out when relayed), but a
/// JSON `null` is kept and relayed as `null`, as the original's JavaScript objects did.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Like [`present`] for a string field: `Some(None)` is an explicit `null`.
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

// ---- payloads, as the gateway sends them (field order as the original) ------------------

#[derive(Serialize)]
struct GetOffer<'a> {
    #[serde(rename = "memberId")]
    member_id: &'a str,
}

#[derive(Serialize)]
struct OfferOut<'a> {
    #[serde(rename = "remoteConnectorId")]
    remote_connector_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offer: Option<&'a RawValue>,
    #[serde(rename = "memberId")]
    member_id: &'a str,
    #[serde(rename = "streamType", skip_serializing_if = "Option::is_none")]
    stream_type: Option<Option<&'a str>>,
}

#[derive(Serialize)]
struct AnswerOut<'a> {
    #[serde(rename = "remoteConnectorId")]
    remote_connector_id: &'a str,
    #[serde(rename = "connectorId", skip_serializing_if = "Option::is_none")]
    connector_id: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a RawValue>,
    #[serde(rename = "memberId")]
    member_id: &'a str,
}

#[derive(Serialize)]
struct IceOut<'a> {
    #[serde(rename = "connectorId", skip_serializing_if = "Option::is_none")]
    connector_id: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct LeaveOut<'a, C: Serialize + ?Sized> {
    #[serde(rename = "connectorId", skip_serializing_if = "Option::is_none")]
    connector_id: Option<&'a C>,
    #[serde(rename = "memberId")]
    member_id: &'a str,
}

#[derive(Serialize)]
struct ReconnectOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "connectorId", skip_serializing_if = "Option::is_none")]
    connector_id: Option<&'a str>,
    #[serde(rename = "memberId", skip_serializing_if = "Option::is_none")]
    member_id: Option<&'a str>,
}

/// `reconnectWork` as relayed: the original rebuilt it from these four fields, in this order.
#[derive(Serialize)]
struct ReconnectWorkOut<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(rename = "connectorId", skip_serializing_if = "Option::is_none")]
    connector_id: Option<&'a RawValue>,
    #[serde(rename = "memberId")]
    member_id: &'a str,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// A refused request: the `error` event's `type` and `message`.
struct Refused {
    kind: &'static str,
    message: String,
    /// Set when a rule or limit refused the request (counted as `refused{reason}`); unset for
    /// malformed input (counted as `bad_input{kind}`).
    reason: Option<&'static str>,
}

fn refused(kind: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        kind,
        message: message.into(),
        reason: None,
    }
}

/// A request refused by rule or limit `reason`, answered with error type `kind`.
fn refused_by(kind: &'static str, reason: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        reason: Some(reason),
        ..refused(kind, message)
    }
}

/// Parses an event's payload object into `T`, or refuses it as `invalid`. One pass over its
/// bytes: `T` keeps what it forwards as `RawValue`s, so the whole object is checked while it is
/// decoded (a first pass to check it as a `RawValue` cost 13 % of a relay's instructions).
fn parse<'a, T: Deserialize<'a>>(frame: &EventFrame<'a>, what: &str) -> Result<T, Refused> {
    let not_object = || refused("invalid", format!("{what}: payload must be an object"));
    if !frame.starts_with(b'{') {
        return Err(not_object());
    }
    match frame.decode() {
        Some(decoded) => decoded.map_err(|e| refused("invalid", format!("{what}: {e}"))),
        None => Err(not_object()),
    }
}

fn limit(hit: LimitHit) -> Refused {
    refused_by("limit", hit.kind, hit.message)
}

fn non_empty(field: &str, value: &str) -> Result<(), Refused> {
    if value.is_empty() {
        return Err(refused("invalid", format!("{field} must not be empty")));
    }
    Ok(())
}

impl Protocol for Chatroom {
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

    fn refuse(&self, socket: &SocketRef, hit: &LimitHit) {
        let error = ErrorOut {
            kind: "limit",
            message: &hit.message,
        };
        send(socket, "error", &error);
    }

    fn on_connect(&self, socket: &SocketRef) {
        tracing::debug!(protocol = NAME, sid = %socket.id, transport = ?socket.transport_type(), "connected");
    }

    async fn on_event(&self, socket: &SocketRef, frame: EventFrame<'_>) {
        let result = match &*frame.name {
            "join" => self.join(socket, &frame).await,
            "offer" => self.offer(socket, &frame).await,
            "answer" => self.answer(socket, &frame).await,
            "icecandidate" => self.icecandidate(socket, &frame).await,
            "leave" => self.leave(socket, &frame).await,
            "reconnect" => self.reconnect(socket, &frame).await,
            "reconnectWork" => self.reconnect_work(socket, &frame).await,
            _ => Err(refused(
                "unknown_event",
                format!("unknown event {:?}", frame.name),
            )),
        };
        if let Err(r) = result {
            answer_refusal(socket, &frame.name, r);
        }
    }

    async fn on_disconnect(&self, socket: &SocketRef, reason: DisconnectReason) {
        self.parked_lock().retain(|_, p| p.socket.id != socket.id);
        let member = match self.rooms.disconnect(socket.id, self.grace).await {
            Disconnected::NotMember => {
                tracing::debug!(protocol = NAME, sid = %socket.id, %reason, "disconnected");
                return;
            }
            Disconnected::Left(d) => {
                tracing::info!(protocol = NAME, sid = %socket.id, %reason, room = %d.room, "disconnected; left");
                let member = d.member.clone();
                expiry_notice(d);
                member
            }
            Disconnected::Away { room, member } => {
                tracing::info!(protocol = NAME, sid = %socket.id, %reason, %room, %member, grace = ?self.grace, "disconnected; kept for the grace period");
                member
            }
        };
        // The member's connection is gone: a `reconnect` that waited for that takes it now.
        let waiting = self.parked_lock().remove(&member);
        if let Some(Parked { socket, req }) = waiting {
            if socket.connected() {
                if let Err(r) = self.reconnect_as(&socket, req, Wait::IfLive).await {
                    answer_refusal(&socket, "reconnect", r);
                }
            }
        }
    }
}

/// Sends to the client itself (its answers and errors).
fn send<T: Serialize + ?Sized>(socket: &SocketRef, event: &'static str, payload: &T) {
    deliver(NAME, &Reach::Local(socket.clone()), event, payload);
}

/// Counts a refused request and answers its sender with `error {type, message}`.
fn answer_refusal(socket: &SocketRef, event: &str, r: Refused) {
    match r.reason {
        Some(reason) => stats::refused(NAME, reason),
        None => stats::bad_input(NAME, r.kind),
    }
    tracing::debug!(protocol = NAME, sid = %socket.id, %event, kind = r.kind, message = %r.message, "refused");
    let error = ErrorOut {
        kind: r.kind,
        message: &r.message,
    };
    send(socket, "error", &error);
}

/// Whether connection `new` may take a member from its still-live connection `current` at
/// once: only from the same source (peer address and `User-Agent` of the opening request),
/// as when the client itself noticed a dead transport first and reconnected on the same
/// network. Anyone else must wait until the old connection drops.
fn same_source(current: &Reach, new: &Reach) -> bool {
    match (current, new) {
        (Reach::Local(current), Reach::Local(new)) => {
            Source::of_parts(current.req_parts()).same_as(&Source::of_parts(new.req_parts()))
        }
        // The shared store compares sources itself.
        _ => false,
    }
}

/// A parked `reconnect` that a newer one for the same member replaced.
fn refuse_parked(socket: &SocketRef) {
    answer_refusal(socket, "reconnect", still_connected());
}

/// The refusal of a `reconnect` whose member stayed connected from another source.
fn still_connected() -> Refused {
    refused_by("reconnect", "member_connected", STILL_CONNECTED)
}

/// Whether a `reconnect` for a member still connected from another source may wait.
#[derive(Clone, Copy)]
enum Wait {
    /// Park it until the member's connection drops (a first attempt).
    IfLive,
    /// Refuse it (the parking is over).
    No,
}

/// A member is gone for good: each connected peer linked to it gets `leave`.
fn expiry_notice(d: Departure<Reach>) {
    stats::left(NAME);
    tracing::info!(protocol = NAME, room = %d.room, member = %d.member, "member removed");
    tell_linked_peers(&d, "");
}

/// Tells a departed member's peers: each connected chatroom peer linked to it gets `leave`;
/// in a mixed room each connected WebRtcRoom member gets `exit {from, room: w_room}`, as
/// WebRtcRoom tells every member of the room.
fn tell_linked_peers(d: &Departure<Reach>, w_room: &str) {
    let gone = &*d.last_conn;
    for peer in &d.linked {
        if peer.label == Side::WebRtcRoom.label() {
            continue;
        }
        let leave = LeaveOut {
            connector_id: Some(&*peer.connector),
            member_id: gone,
        };
        deliver(NAME, &peer.handle, "leave", &leave);
    }
    tell_webrtcroom_members(d, w_room);
}

/// The WebRtcRoom members of a mixed room hear of a chatroom member's departure as `exit`.
fn tell_webrtcroom_members(d: &Departure<Reach>, w_room: &str) {
    for peer in &d.remaining {
        if let (Some(handle), true) = (&peer.handle, peer.label == Side::WebRtcRoom.label()) {
            mixed::exit_to_webrtcroom(handle, &d.last_conn, w_room);
        }
    }
}

impl Chatroom {
    async fn join(&self, socket: &SocketRef, frame: &EventFrame<'_>) -> Result<(), Refused> {
        let req: JoinReq = parse(frame, "join")?;
        self.join_as(socket, req).await
    }

    async fn join_as(&self, socket: &SocketRef, req: JoinReq) -> Result<(), Refused> {
        non_empty("id", &req.id)?;
        non_empty("username", &req.username)?;
        non_empty("roomname", &req.roomname)?;
        for (field, value) in [
            ("id", &req.id),
            ("username", &req.username),
            ("roomname", &req.roomname),
        ] {
            self.gate.check_name(field, value).map_err(limit)?;
        }
        access::may_join(socket, &req.roomname, Some(&req.username))
            .map_err(|r| refused_by("forbidden", r.kind(), r.to_string()))?;
        let outcome = self
            .rooms
            .join(Join {
                room: req.roomname.as_str().into(),
                member: req.id.as_str().into(),
                conn: socket.id,
                handle: Reach::Local(socket.clone()),
                name: Some(req.username.as_str().into()),
                capacity: self.max_room_size,
                max_rooms: self.gate.limits().max_rooms,
            })
            .await;
        let joined = match outcome {
            Ok(JoinOutcome::Joined(joined)) => joined,
            Ok(JoinOutcome::AlreadyMember { .. }) => return Ok(()),
            Err(refusal) => {
                tracing::info!(protocol = NAME, sid = %socket.id, room = %req.roomname, %refusal, "join refused");
                let reason = refusal.kind();
                return Err(match refusal {
                    Refusal::NameTaken => refused_by("repeat", reason, REPEAT_MESSAGE),
                    Refusal::RoomFull { capacity } => refused_by(
                        "limit",
                        reason,
                        format!("room is full ({capacity} members)"),
                    ),
                    Refusal::MemberIdInUse => {
                        refused_by("id_in_use", reason, "this id belongs to another connection")
                    }
                    Refusal::TooManyRooms { max } => refused_by(
                        "limit",
                        reason,
                        format!("too many rooms on this server ({max})"),
                    ),
                    Refusal::ConnectionClosed => refused_by("closed", reason, "connection closed"),
                    Refusal::Unavailable => refused_by(
                        "unavailable",
                        reason,
                        "the server cannot take joins right now, try again",
                    ),
                });
            }
        };
        if let Some(left) = &joined.left {
            stats::left(NAME);
            tracing::info!(protocol = NAME, sid = %socket.id, room = %left.room, "left room to join another");
            tell_linked_peers(left, &left.room);
        }
        stats::joined(NAME);
        tracing::info!(protocol = NAME, sid = %socket.id, room = %req.roomname, username = %req.username, members = joined.existing.len() + 1, "joined");
        let me = socket.id.to_string();
        let notice = GetOffer { member_id: &me };
        for peer in &joined.existing {
            if let Some(handle) = &peer.handle {
                if self.rooms.foreign(peer.label) {
                    // A WebRtcRoom member (mixed room) waits for the newcomer's offer.
                    mixed::joined_to_webrtcroom(handle, &me, &req.roomname);
                } else {
                    deliver(NAME, handle, "getOffer", &notice);
                }
            }
        }
        // The newcomer offers to each WebRtcRoom member, which cannot offer to it.
        let own = Reach::Local(socket.clone());
        for peer in &joined.existing {
            if let (Some(_), true) = (&peer.handle, self.rooms.foreign(peer.label)) {
                mixed::get_offer_to_chatroom(&own, &peer.member);
            }
        }
        Ok(())
    }

    async fn offer(&self, socket: &SocketRef, frame: &EventFrame<'_>) -> Result<(), Refused> {
        let req: OfferReq = parse(frame, "offer")?;
        let stream = req.stream_type.clone().flatten();
        let link = self.link_note(&req.connector_id, stream.as_deref())?;
        if self.rooms.mixed() && stream.as_deref() == Some("display") {
            // Checked before the link is recorded: a refused screen leaves no trace.
            let target = self.route_to(socket, &req.member_id, None).await?;
            if self.rooms.foreign(target.target_label) {
                return Err(refused_by(
                    "unsupported",
                    "mixed_display",
                    "a WebRtcRoom member cannot receive a shared screen",
                ));
            }
        }
        let route = self.route_to(socket, &req.member_id, Some(link)).await?;
        let me = socket.id.to_string();
        if self.rooms.foreign(route.target_label) {
            return self.to_webrtcroom(socket, &route, |room| {
                mixed::chatroom_sdp_to_webrtcroom("offer", req.offer, &me, room, &route)
            });
        }
        let target = route.target;
        let out = OfferOut {
            remote_connector_id: &req.connector_id,
            offer: req.offer,
            member_id: &me,
            stream_type: req.stream_type.as_ref().map(|s| s.as_deref()),
        };
        relay(&target, "offer", &out);
        Ok(())
    }

    async fn answer(&self, socket: &SocketRef, frame: &EventFrame<'_>) -> Result<(), Refused> {
        let req: AnswerReq = parse(frame, "answer")?;
        let link = self.link_note(&req.connector_id, req.stream_type.as_deref())?;
        let route = self.route_to(socket, &req.member_id, Some(link)).await?;
        let me = socket.id.to_string();
        if self.rooms.foreign(route.target_label) {
            return self.to_webrtcroom(socket, &route, |room| {
                mixed::chatroom_sdp_to_webrtcroom("answer", req.answer, &me, room, &route)
            });
        }
        let target = route.target;
        let out = AnswerOut {
            remote_connector_id: &req.connector_id,
            connector_id: req.remote_connector_id,
            answer: req.answer,
            member_id: &me,
        };
        relay(&target, "answer", &out);
        Ok(())
    }

    async fn icecandidate(
        &self,
        socket: &SocketRef,
        frame: &EventFrame<'_>,
    ) -> Result<(), Refused> {
        let req: IceReq = parse(frame, "icecandidate")?;
        let route = self.route_to(socket, &req.member_id, None).await?;
        if self.rooms.foreign(route.target_label) {
            let me = socket.id.to_string();
            return self.to_webrtcroom(socket, &route, |room| {
                mixed::chatroom_candidate_to_webrtcroom(req.candidate, &me, room, &route)
            });
        }
        let target = route.target;
        let out = IceOut {
            connector_id: req.remote_connector_id,
            candidate: req.candidate,
        };
        relay(&target, "icecandidate", &out);
        Ok(())
    }

    async fn leave(&self, socket: &SocketRef, frame: &EventFrame<'_>) -> Result<(), Refused> {
        if !frame.starts_with(b'[') {
            return Err(refused("invalid", "leave: payload must be an array"));
        }
        let entries: Vec<&RawValue> = match frame.decode() {
            Some(Ok(entries)) => entries,
            Some(Err(e)) => return Err(refused("invalid", format!("leave: {e}"))),
            None => return Err(refused("invalid", "leave: payload must be an array")),
        };
        if self.rooms.membership(socket.id).is_none() {
            // As the original: a leave from a socket that never joined is ignored.
            stats::dropped(NAME, RouteError::NotJoined.kind());
            return Ok(());
        }
        // Resolve the listed peers while the sender is still in the room.
        let mut told = Vec::with_capacity(entries.len());
        for entry in entries {
            let Ok(e) = serde_json::from_str::<LeaveEntry>(entry.get()) else {
                stats::bad_input(NAME, "invalid_leave_entry");
                continue;
            };
            match self.route_to(socket, &e.member_id, None).await {
                // A WebRtcRoom member (mixed room) hears of it as `exit`, below.
                Ok(r) if self.rooms.foreign(r.target_label) => continue,
                Ok(r) => told.push((r.target, e.remote_connector_id)),
                Err(_) => continue,
            }
        }
        if let Some(d) = self.rooms.leave(socket.id).await {
            stats::left(NAME);
            tracing::info!(protocol = NAME, sid = %socket.id, room = %d.room, "left");
            tell_webrtcroom_members(&d, &d.room);
        }
        let me = socket.id.to_string();
        for (handle, connector) in told {
            let out = LeaveOut {
                connector_id: connector,
                member_id: &me,
            };
            relay(&handle, "leave", &out);
        }
        Ok(())
    }

    async fn reconnect(&self, socket: &SocketRef, frame: &EventFrame<'_>) -> Result<(), Refused> {
        let req: ReconnectReq = parse(frame, "reconnect")?;
        self.reconnect_as(socket, req, Wait::IfLive).await
    }

    /// `reconnect` as `socket`; `wait` says whether a member still connected from another
    /// source parks the request or refuses it (the parking is over).
    async fn reconnect_as(
        &self,
        socket: &SocketRef,
        req: ReconnectReq,
        wait: Wait,
    ) -> Result<(), Refused> {
        non_empty("id", &req.id)?;
        non_empty("roomname", &req.roomname)?;
        access::may_join(socket, &req.roomname, req.username.as_deref())
            .map_err(|r| refused_by("forbidden", r.kind(), r.to_string()))?;
        let name = req.username.as_deref().map(Arc::<str>::from);
        let rebound = self
            .rooms
            .rebind(Rebind {
                member: req.id.as_str().into(),
                room: req.roomname.as_str().into(),
                name,
                conn: socket.id,
                handle: Reach::Local(socket.clone()),
                may_replace_live: same_source,
            })
            .await;
        let r = match rebound {
            Ok(r) => r,
            Err(RebindError::Unknown) => {
                // Grace over or server restarted: tell the client to drop its peers, then
                // treat the request as a fresh join. A request that cannot be a join (no
                // username) is refused before the client is told anything.
                non_empty("username", req.username.as_deref().unwrap_or_default())?;
                let leave = ReconnectOut {
                    kind: "leave",
                    connector_id: None,
                    member_id: None,
                };
                send(socket, "reconnect", &leave);
                let join = JoinReq {
                    id: req.id,
                    username: req.username.unwrap_or_default(),
                    roomname: req.roomname,
                };
                return Box::pin(self.join_as(socket, join)).await;
            }
            Err(
                e @ (RebindError::Mismatch | RebindError::ConnBusy | RebindError::ConnectionClosed),
            ) => {
                return Err(refused("reconnect", e.to_string()));
            }
            Err(e @ RebindError::Unavailable) => {
                return Err(refused_by(
                    "unavailable",
                    "store_unavailable",
                    e.to_string(),
                ));
            }
            Err(RebindError::Live) => {
                return match wait {
                    Wait::IfLive => {
                        self.park(socket, req);
                        Ok(())
                    }
                    Wait::No => Err(still_connected()),
                };
            }
        };
        tracing::info!(protocol = NAME, sid = %socket.id, room = %r.room, member = %req.id, previous = ?r.previous_conn, "reconnected");
        let me = socket.id.to_string();
        let notice = GetOffer { member_id: &me };
        for peer in &r.unlinked {
            if let (Some(handle), false) = (&peer.handle, self.rooms.foreign(peer.label)) {
                deliver(NAME, handle, "getOffer", &notice);
            }
        }
        self.reconnect_webrtcroom_peers(socket, &r);
        for peer in r.linked.iter().filter(|p| !self.rooms.foreign(p.label)) {
            // Exactly as the original: no memberId. The real client answers with a
            // `reconnectWork` that copies it; with one, that renegotiation would reach the
            // returning member carrying the sender's connector id, which that client looks up
            // among its own connectors and throws (SPEC 3.4).
            let out = ReconnectOut {
                kind: "getOffer",
                connector_id: Some(&peer.connector),
                member_id: None,
            };
            deliver(NAME, &peer.handle, "reconnect", &out);
        }
        for gone in &r.gone {
            let gone = gone.to_string();
            let out = ReconnectOut {
                kind: "leave",
                connector_id: None,
                member_id: Some(&gone),
            };
            send(socket, "reconnect", &out);
        }
        Ok(())
    }

    /// Holds a `reconnect` for a member whose connection is still bound, from another source.
    ///
    /// A client that moved to another network reconnects before the gateway has noticed that
    /// its old connection is dead; so might someone who presents another member's id while
    /// that member is still connected. The request waits: when the old connection drops, it
    /// is carried out (`on_disconnect`); if the old connection is still there after
    /// `park_limit` (it answered the heartbeat, so it is alive), the request is refused with
    /// `error {type:"reconnect"}`. Meanwhile nothing changes for the member or its peers. At
    /// the limit the request is tried once more rather than refused outright, so a drop that
    /// slipped in between the rebind attempt and the parking is not missed.
    fn park(&self, socket: &SocketRef, req: ReconnectReq) {
        let member: Arc<str> = req.id.as_str().into();
        tracing::info!(protocol = NAME, sid = %socket.id, %member, wait = ?self.park_limit, "reconnect for a connected member from another source; waiting for its connection to drop");
        let replaced = self.parked_lock().insert(
            member.clone(),
            Parked {
                socket: socket.clone(),
                req,
            },
        );
        if let Some(old) = replaced.filter(|old| old.socket.id != socket.id) {
            refuse_parked(&old.socket);
        }
        let me = self.me.clone();
        let (sid, wait) = (socket.id, self.park_limit);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(adapter) = me.upgrade() else {
                return;
            };
            let expired = {
                let mut parked = adapter.parked_lock();
                match parked.get(&member) {
                    Some(p) if p.socket.id == sid => parked.remove(&member),
                    _ => None,
                }
            };
            let Some(Parked { socket, req }) = expired else {
                return;
            };
            if socket.connected() {
                if let Err(r) = adapter.reconnect_as(&socket, req, Wait::No).await {
                    answer_refusal(&socket, "reconnect", r);
                }
            }
        });
    }

    fn parked_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Parked>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn reconnect_work(
        &self,
        socket: &SocketRef,
        frame: &EventFrame<'_>,
    ) -> Result<(), Refused> {
        let req: ReconnectWorkReq = parse(frame, "reconnectWork")?;
        let Some(member_id) = req.member_id else {
            // What the real client sends after `reconnect {type:"getOffer"}`: no target. The
            // original dropped it too; peer connections survive a short blip without it.
            stats::dropped(NAME, "no_target");
            return Ok(());
        };
        let route = self.route_to(socket, &member_id, None).await?;
        if self.rooms.foreign(route.target_label) {
            return Err(refused_by(
                "unsupported",
                "mixed_renegotiation",
                "a WebRtcRoom member cannot renegotiate",
            ));
        }
        let target = route.target;
        let out = ReconnectWorkOut {
            kind: req.kind,
            data: req.data,
            connector_id: req.connector_id,
            member_id: &member_id,
        };
        relay(&target, "reconnect", &out);
        Ok(())
    }

    /// How to reach member socket `member_id`, if the sender may (in a mixed room, a
    /// WebRtcRoom member by its id).
    async fn route_to(
        &self,
        socket: &SocketRef,
        member_id: &str,
        link: Option<LinkNote>,
    ) -> Result<Route<Reach>, Refused> {
        let result = self.rooms.route(socket.id, member_id, link).await;
        result.map_err(|e| {
            stats::dropped(NAME, e.kind());
            match e {
                RouteError::NotJoined => refused("not_joined", "join a room first"),
                RouteError::TooManyLinks { .. } => refused_by("limit", e.kind(), e.to_string()),
                RouteError::Unavailable => refused_by("unavailable", e.kind(), e.to_string()),
                _ => refused("unknown_member", format!("{member_id} is not in your room")),
            }
        })
    }

    /// Delivers a relay to a WebRtcRoom member of a mixed room with `translate`, which gets
    /// the sender's room name (WebRtcRoom messages carry it).
    fn to_webrtcroom(
        &self,
        socket: &SocketRef,
        route: &Route<Reach>,
        translate: impl FnOnce(&str) -> Result<(), mixed::Untranslatable>,
    ) -> Result<(), Refused> {
        let room = self
            .rooms
            .membership(socket.id)
            .map(|(room, _)| room)
            .unwrap_or_default();
        // Counted once, as the refusal (`bad_input{kind="invalid"}`).
        translate(&room).map_err(|why| {
            tracing::debug!(protocol = NAME, sid = %socket.id, to = %route.target_member, reason = why.kind(), "relay to a WebRtcRoom member dropped");
            refused("invalid", "the WebRtcRoom member needs an SDP text or a candidate line")
        })
    }

    /// A chatroom member came back on a new socket: the WebRtcRoom members of its (mixed)
    /// room knew it by its old socket id, and cannot renegotiate. Each such pair starts
    /// over: the WebRtcRoom member hears `exit` for the old id and `joined` for the new one,
    /// the chatroom client drops its old connector to that member (if it had one) and is
    /// asked to offer again.
    fn reconnect_webrtcroom_peers(&self, socket: &SocketRef, r: &crate::core::Rebound<Reach>) {
        if !self.rooms.mixed() {
            return;
        }
        let me = socket.id.to_string();
        let own = Reach::Local(socket.clone());
        let linked = r
            .linked
            .iter()
            .filter(|p| self.rooms.foreign(p.label))
            .map(|p| (&p.member, &p.handle, true));
        let unlinked = r
            .unlinked
            .iter()
            .filter(|p| self.rooms.foreign(p.label))
            .filter_map(|p| Some((&p.member, p.handle.as_ref()?, false)));
        for (member, handle, known) in linked.chain(unlinked) {
            if *r.last_conn != *me {
                mixed::exit_to_webrtcroom(handle, &r.last_conn, "");
            }
            mixed::joined_to_webrtcroom(handle, &me, &r.room);
            if known {
                let out = ReconnectOut {
                    kind: "leave",
                    connector_id: None,
                    member_id: Some(member),
                };
                send(socket, "reconnect", &out);
            }
            mixed::get_offer_to_chatroom(&own, member);
        }
    }

    /// The link an offer or answer records on its target: the sender's connector, by stream
    /// kind. Both are kept as long as the link, so they are held to `max_name_length` (the
    /// client sends a UUID and one of three short kinds).
    fn link_note(&self, connector: &str, stream: Option<&str>) -> Result<LinkNote, Refused> {
        self.gate
            .check_name("connectorId", connector)
            .map_err(limit)?;
        let stream = stream.unwrap_or("");
        self.gate.check_name("streamType", stream).map_err(limit)?;
        Ok(LinkNote {
            connector: connector.into(),
            stream: stream.into(),
            max_links: self.gate.limits().max_links,
        })
    }
}

fn relay<T: Serialize + ?Sized>(to: &Reach, event: &'static str, payload: &T) {
    if deliver(NAME, to, event, payload) {
        stats::relayed(NAME, event);
    }
}

#[derive(Deserialize)]
struct CheckQuery {
    username: Option<String>,
    roomname: Option<String>,
}

#[derive(Serialize)]
struct CheckReply {
    success: bool,
    #[serde(rename = "isRepeat", skip_serializing_if = "Option::is_none")]
    is_repeat: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

/// `GET /checkUsername?username=U&roomname=R`: is `U` taken in room `R`.
async fn check_username(
    State(adapter): State<Arc<Chatroom>>,
    Query(query): Query<CheckQuery>,
) -> (StatusCode, Json<CheckReply>) {
    match query {
        CheckQuery {
            username: Some(u),
            roomname: Some(r),
        } => match adapter.rooms.name_taken(&r, &u).await {
            Ok(taken) => (
                StatusCode::OK,
                Json(CheckReply {
                    success: true,
                    is_repeat: Some(taken),
                    message: None,
                }),
            ),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(CheckReply {
                    success: false,
                    is_repeat: None,
                    message: Some("room state unavailable, try again"),
                }),
            ),
        },
        _ => (
            StatusCode::BAD_REQUEST,
            Json(CheckReply {
                success: false,
                is_repeat: None,
                message: Some("username and roomname are required"),
            }),
        ),
    }
}

/// What this protocol counts beyond [`super::SHARED_LABELS`], so that every series exists
/// from the start.
pub const LABELS: stats::Known = stats::Known {
    sent: &[
        "error",
        "getOffer",
        "leave",
        "reconnect",
        "offer",
        "answer",
        "icecandidate",
    ],
    relayed: &["offer", "answer", "icecandidate", "leave", "reconnect"],
    dropped: &["no_target"],
    refused: &["member_connected"],
    bad_input: &[
        "invalid",
        "unknown_event",
        "invalid_leave_entry",
        "reconnect",
    ],
};
