//! Cross-protocol ("mixed") rooms: a WebRtcRoom app and a chatroom client in one call.
//!
//! Off by default (`[cross_protocol] enabled = false`): each adapter then has a realm of its
//! own, and everything in this module is a pass-through. When on, both adapters open *one*
//! realm ("mixed") and see it through a [`RealmStore`], a thin per-protocol view that keeps
//! the two protocols apart where they must be:
//! - member keys are prefixed per protocol (`w:` / `c:`), because a chatroom client chooses
//!   its own id and could otherwise take a WebRtcRoom member's key;
//! - rooms are keyed `x:<name>` when shared (every name, or those matching
//!   `cross_protocol.rooms`) and `w:<name>` / `c:<name>` otherwise, so a non-matching room is
//!   two rooms, as without the feature;
//! - outcomes come back with the prefixes stripped and each member's protocol in its
//!   [`Label`], so the adapters' same-protocol code sees exactly what it saw before, and
//!   the few lines that meet a peer of the other protocol hand it to the translation below.
//!
//! The core and the stores stay protocol-neutral: they see opaque keys, and hand out one
//! more fact on a relay (the target's connector for its link to the sender, which a
//! WebRtcRoom sender cannot name but a chatroom receiver needs).
//!
//! Who offers: the WebRtcRoom joiner offers to everyone listed in `created.peers` (chatroom
//! members included, who get no `getOffer` for it); a chatroom joiner is asked (`getOffer`)
//! to offer to each WebRtcRoom member, who gets `joined` as for any newcomer. So every pair
//! has exactly one offerer, whichever protocol joined last.
//!
//! Translation table (the adapters call these functions; see both protocols' SPEC "Mixed
//! rooms"):
//!
//! | WebRtcRoom side                                   | chatroom side |
//! |---------------------------------------------------|---------------|
//! | `offer {from, to, room, sdp}`                     | `offer {remoteConnectorId, offer: {type:"offer", sdp}, memberId, streamType:"user"}` |
//! | `answer {from, to, room, sdp}`                    | `answer {remoteConnectorId, connectorId, answer: {type:"answer", sdp}, memberId}` |
//! | `candidate {from, to, room, candidate: {sdpMid, sdpMLineIndex, sdp}}` | `icecandidate {connectorId, candidate: {candidate, sdpMid, sdpMLineIndex}}` |
//! | `exit` / disconnect                               | `leave {connectorId, memberId}` |
//! | `exit {from, room}`                               | `leave`, or grace expiry |
//!
//! A WebRtcRoom app has one peer connection per peer and no connector ids: the gateway names
//! its end of a link `webrtcroom:<its id>` towards chatroom clients (stable, one per pair),
//! and finds the chatroom client's own connector in the link that client recorded with its
//! offer or answer.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use socketioxide::socket::Sid;

use super::{deliver, Reach};
use crate::config::CrossProtocolConfig;
use crate::core::{
    ConnId, ConnInfo, Departure, Disconnected, Join, JoinOutcome, Joined, Label, LinkNote,
    LinkedPeer, Peer, Rebind, RebindError, Rebound, Refusal, RoomView, Route, RouteError, Target,
};
use crate::stats;
use crate::store::{OnDeparted, Store, Unavailable};

/// The two protocols that may share a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// WebRtcRoom apps (socket.io 2.x).
    WebRtcRoom,
    /// The chatroom client (socket.io-client 4.x).
    Chatroom,
}

impl Side {
    /// The protocol's name (metrics, realm names).
    pub fn name(self) -> &'static str {
        match self {
            Side::WebRtcRoom => "webrtcroom",
            Side::Chatroom => "chatroom",
        }
    }

    /// The label its members carry in a mixed realm's outcomes.
    pub fn label(self) -> Label {
        match self {
            Side::WebRtcRoom => Label(1),
            Side::Chatroom => Label(2),
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Side::WebRtcRoom => "w:",
            Side::Chatroom => "c:",
        }
    }

    fn index(self) -> usize {
        match self {
            Side::WebRtcRoom => 0,
            Side::Chatroom => 1,
        }
    }
}

/// The prefix of a room both protocols share.
const SHARED_ROOM: &str = "x:";

/// Which rooms the protocols share.
#[derive(Debug, Clone)]
pub struct CrossProtocol {
    patterns: Vec<String>,
}

impl CrossProtocol {
    /// The rules of `config`, or `None` when the feature is off.
    pub fn from_config(config: &CrossProtocolConfig) -> Option<Arc<Self>> {
        config.enabled.then(|| {
            Arc::new(Self {
                patterns: config.rooms.clone(),
            })
        })
    }

    /// Whether room `name` is shared by both protocols.
    pub fn shares(&self, name: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| glob(p, name))
    }

    fn room_key(&self, side: Side, name: &str) -> Arc<str> {
        let prefix = if self.shares(name) {
            SHARED_ROOM
        } else {
            side.prefix()
        };
        format!("{prefix}{name}").into()
    }
}

/// `*` matches any run of characters (none included), `?` exactly one; all else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A member key of a mixed realm, split into its protocol and the id that protocol uses.
fn split_member(key: &str) -> (Option<Side>, &str) {
    if let Some(id) = key.strip_prefix(Side::WebRtcRoom.prefix()) {
        (Some(Side::WebRtcRoom), id)
    } else if let Some(id) = key.strip_prefix(Side::Chatroom.prefix()) {
        (Some(Side::Chatroom), id)
    } else {
        (None, key)
    }
}

/// A room key of a mixed realm without its prefix.
fn room_name(key: &str) -> &str {
    [SHARED_ROOM, "w:", "c:"]
        .iter()
        .find_map(|p| key.strip_prefix(p))
        .unwrap_or(key)
}

fn strip(key: &Arc<str>) -> (Label, Arc<str>) {
    match split_member(key) {
        (Some(side), id) => (side.label(), id.into()),
        (None, _) => (Label::default(), key.clone()),
    }
}

fn strip_peer(p: Peer<Reach>) -> Peer<Reach> {
    let (label, member) = strip(&p.member);
    Peer {
        member,
        label,
        handle: p.handle,
    }
}

fn strip_linked(l: LinkedPeer<Reach>) -> LinkedPeer<Reach> {
    let (label, member) = strip(&l.member);
    LinkedPeer { member, label, ..l }
}

fn strip_departure(d: Departure<Reach>) -> Departure<Reach> {
    let (label, member) = strip(&d.member);
    Departure {
        room: room_name(&d.room).into(),
        member,
        label,
        last_conn: d.last_conn,
        remaining: d.remaining.into_iter().map(strip_peer).collect(),
        linked: d.linked.into_iter().map(strip_linked).collect(),
    }
}

/// How long a member of the shared realm stays away when its node dies (cluster mode), by
/// key: a WebRtcRoom member leaves at once, as on a disconnect (its apps have no reconnect, and
/// its peers must hear `exit` now); a chatroom member gets the realm's grace (`None`).
pub fn reap_grace(key: &str) -> Option<Duration> {
    (split_member(key).0 == Some(Side::WebRtcRoom)).then_some(Duration::ZERO)
}

/// One protocol's view of its realm: a pass-through without cross-protocol rooms; with
/// them, the mixed realm with this protocol's keys (see the module docs).
pub struct RealmStore {
    store: Arc<Store<Reach>>,
    side: Side,
    mixed: Option<Arc<CrossProtocol>>,
}

impl RealmStore {
    /// The view of `side` over `store`; `mixed` when the store is the shared realm.
    pub fn new(store: Arc<Store<Reach>>, side: Side, mixed: Option<Arc<CrossProtocol>>) -> Self {
        Self { store, side, mixed }
    }

    /// Whether rooms may hold members of the other protocol.
    pub fn mixed(&self) -> bool {
        self.mixed.is_some()
    }

    /// The protocol a peer speaks, by its label: this view's own protocol unless the peer is
    /// marked as the other's.
    pub fn side_of(&self, label: Label) -> Side {
        if label == Side::WebRtcRoom.label() {
            Side::WebRtcRoom
        } else if label == Side::Chatroom.label() {
            Side::Chatroom
        } else {
            self.side
        }
    }

    /// Whether a peer with `label` speaks another protocol than this view's.
    pub fn foreign(&self, label: Label) -> bool {
        self.side_of(label) != self.side
    }

    /// Whether calls may wait (cluster mode).
    pub fn waits(&self) -> bool {
        self.store.waits()
    }

    fn member_key<'a>(&self, id: &'a str) -> Cow<'a, str> {
        match &self.mixed {
            Some(_) => format!("{}{id}", self.side.prefix()).into(),
            None => id.into(),
        }
    }

    /// A join's or rebind's room and member as this realm stores them: left as they are (the
    /// same `Arc`s, nothing copied) unless rooms are shared across protocols.
    fn realm_keys(&self, room: &mut Arc<str>, member: &mut Arc<str>) {
        if let Some(rules) = &self.mixed {
            *room = rules.room_key(self.side, room);
            *member = self.member_key(member).into_owned().into();
        }
    }

    fn room_key(&self, name: &str) -> Arc<str> {
        match &self.mixed {
            Some(rules) => rules.room_key(self.side, name),
            None => name.into(),
        }
    }

    /// Puts a connection into a room (see [`Store::join`]).
    pub async fn join(&self, mut req: Join<Reach>) -> Result<JoinOutcome<Reach>, Refusal> {
        if self.mixed.is_none() {
            return self.store.join(req).await;
        }
        self.realm_keys(&mut req.room, &mut req.member);
        Ok(match self.store.join(req).await? {
            JoinOutcome::Joined(j) => JoinOutcome::Joined(Joined {
                existing: j.existing.into_iter().map(strip_peer).collect(),
                left: j.left.map(strip_departure),
            }),
            JoinOutcome::AlreadyMember { peers } => JoinOutcome::AlreadyMember {
                peers: peers.into_iter().map(strip_peer).collect(),
            },
        })
    }

    /// Takes the member bound to `conn` out of its room.
    pub async fn leave(&self, conn: ConnId) -> Option<Departure<Reach>> {
        let d = self.store.leave(conn).await?;
        Some(self.out_departure(d))
    }

    fn out_departure(&self, d: Departure<Reach>) -> Departure<Reach> {
        match self.mixed {
            Some(_) => strip_departure(d),
            None => d,
        }
    }

    /// Checks that `conn` may reach the member its protocol calls `id`, and returns how.
    ///
    /// WebRtcRoom names a peer by its member id; chatroom by its socket id. In a mixed room
    /// each also reaches the other protocol's members by the id it was given for them: a
    /// chatroom member's socket id (WebRtcRoom), a WebRtcRoom member's id (chatroom; the
    /// same as its socket id on the namespace `/`).
    pub async fn route(
        &self,
        conn: ConnId,
        id: &str,
        link: Option<LinkNote>,
    ) -> Result<Route<Reach>, RouteError> {
        // Parsed only where a socket id is looked up: not on a WebRtcRoom relay of its own realm.
        let sid = || Sid::from_str(id).ok();
        let first = match self.side {
            Side::WebRtcRoom => {
                let key = self.member_key(id);
                self.store
                    .route(conn, Target::Member(&key), link.clone())
                    .await
            }
            Side::Chatroom => match sid() {
                Some(sid) => {
                    self.store
                        .route(conn, Target::Conn(sid), link.clone())
                        .await
                }
                None => Err(RouteError::UnknownTarget),
            },
        };
        let route = match (first, self.mixed()) {
            (Err(RouteError::UnknownTarget), true) => match self.side {
                Side::WebRtcRoom => match sid() {
                    Some(sid) => self.store.route(conn, Target::Conn(sid), link).await,
                    None => Err(RouteError::UnknownTarget),
                },
                Side::Chatroom => {
                    let key: Arc<str> = format!("{}{id}", Side::WebRtcRoom.prefix()).into();
                    self.store.route(conn, Target::Member(&key), link).await
                }
            },
            (other, _) => other,
        }?;
        Ok(self.out_route(route))
    }

    /// Like [`RealmStore::route`], to whoever is bound to connection `target` (a socket id
    /// from an earlier route's handle): one lookup where `route` may take two.
    pub async fn route_to_conn(
        &self,
        conn: ConnId,
        target: &str,
        link: Option<LinkNote>,
    ) -> Result<Route<Reach>, RouteError> {
        let sid = Sid::from_str(target).map_err(|_| RouteError::UnknownTarget)?;
        let route = self.store.route(conn, Target::Conn(sid), link).await?;
        Ok(self.out_route(route))
    }

    fn out_route(&self, route: Route<Reach>) -> Route<Reach> {
        if self.mixed.is_none() {
            return route;
        }
        let (_, sender) = strip(&route.sender);
        let (target_label, target_member) = strip(&route.target_member);
        Route {
            sender,
            target_member,
            target_label,
            ..route
        }
    }

    /// The connection `conn` dropped (see [`Store::disconnect`]).
    pub async fn disconnect(&self, conn: ConnId, grace: Duration) -> Disconnected<Reach> {
        match self.store.disconnect(conn, grace).await {
            Disconnected::Left(d) => Disconnected::Left(self.out_departure(d)),
            Disconnected::Away { room, member } if self.mixed() => Disconnected::Away {
                room: room_name(&room).into(),
                member: strip(&member).1,
            },
            other => other,
        }
    }

    /// Binds an existing member to a new connection (see [`Store::rebind`]).
    pub async fn rebind(&self, mut req: Rebind<Reach>) -> Result<Rebound<Reach>, RebindError> {
        if self.mixed.is_none() {
            return self.store.rebind(req).await;
        }
        self.realm_keys(&mut req.room, &mut req.member);
        let r = self.store.rebind(req).await?;
        Ok(Rebound {
            room: room_name(&r.room).into(),
            previous_conn: r.previous_conn,
            unlinked: r.unlinked.into_iter().map(strip_peer).collect(),
            linked: r.linked.into_iter().map(strip_linked).collect(),
            gone: r.gone,
            last_conn: r.last_conn,
        })
    }

    /// Whether a member of `room` uses display name `name`.
    pub async fn name_taken(&self, room: &str, name: &str) -> Result<bool, Unavailable> {
        self.store.name_taken(&self.room_key(room), name).await
    }

    /// The room and member id of `conn`, if it is in one.
    pub fn membership(&self, conn: ConnId) -> Option<(Arc<str>, Arc<str>)> {
        let (room, member) = self.store.membership(conn)?;
        Some(match self.mixed {
            Some(_) => (room_name(&room).into(), strip(&member).1),
            None => (room, member),
        })
    }

    /// The rooms this protocol can see, with its own members, for operators. A shared room
    /// is listed by both protocols, each with its own members.
    pub fn snapshot(&self, describe: impl Fn(&Reach) -> ConnInfo) -> Vec<RoomView> {
        let rooms = self.store.snapshot(describe);
        match self.mixed {
            Some(_) => rooms.into_iter().filter_map(|r| self.own(r)).collect(),
            None => rooms,
        }
    }

    /// One room with this protocol's members, for operators.
    pub fn room_snapshot(
        &self,
        room: &str,
        describe: impl Fn(&Reach) -> ConnInfo,
    ) -> Option<RoomView> {
        let view = self.store.room_snapshot(&self.room_key(room), describe)?;
        match self.mixed {
            Some(_) => self.own(view),
            None => Some(view),
        }
    }

    /// A room of the mixed realm as this protocol sees it: `None` if it holds none of its
    /// members.
    fn own(&self, mut room: RoomView) -> Option<RoomView> {
        let visible =
            room.name.starts_with(SHARED_ROOM) || room.name.starts_with(self.side.prefix());
        if !visible {
            return None;
        }
        room.name = room_name(&room.name).to_owned();
        room.members
            .retain(|m| split_member(&m.id).0 == Some(self.side));
        for m in &mut room.members {
            m.id = split_member(&m.id).1.to_owned();
        }
        (!room.members.is_empty()).then_some(room)
    }

    /// Number of rooms and members this protocol has.
    pub fn sizes(&self) -> (usize, usize) {
        match self.mixed {
            None => self.store.sizes(),
            Some(_) => {
                let rooms = self.snapshot(|_| ConnInfo {
                    engine_io: 0,
                    transport: "",
                });
                (rooms.len(), rooms.iter().map(|r| r.members.len()).sum())
            }
        }
    }
}

/// The handlers of members that left without a request (grace ended, node died), one per
/// protocol, behind the one handler a mixed realm's store takes.
#[derive(Default)]
pub struct Departed {
    sides: [OnceLock<OnDeparted<Reach>>; 2],
}

impl Departed {
    /// Registers `side`'s handler (its adapter's, which takes un-prefixed departures).
    pub fn register(&self, side: Side, handler: OnDeparted<Reach>) {
        let _ = self.sides[side.index()].set(handler);
    }

    /// The store's handler: strips the keys and hands the departure to its member's
    /// protocol.
    pub fn handler(self: &Arc<Self>) -> OnDeparted<Reach> {
        let me = self.clone();
        Arc::new(move |d: Departure<Reach>| {
            let d = strip_departure(d);
            let side = if d.label == Side::Chatroom.label() {
                Side::Chatroom
            } else {
                Side::WebRtcRoom
            };
            if let Some(handler) = me.sides[side.index()].get() {
                handler(d);
            }
        })
    }
}

// ---- translation ---------------------------------------------------------------------

/// The connector id the gateway gives a WebRtcRoom member's end of its link with a chatroom
/// client (WebRtcRoom apps have no connector ids; one link per pair).
pub fn synthetic_connector(webrtcroom_id: &str) -> String {
    format!("webrtcroom:{webrtcroom_id}")
}

/// Why a translated message was not delivered; each is counted as a drop of the sender's
/// protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untranslatable {
    /// The chatroom client has not yet named its end of the link (its answer is still to
    /// come): a WebRtcRoom answer or candidate has nowhere to go, as the chatroom client's
    /// own early candidates do not either.
    NoConnector,
    /// The payload lacks what the other protocol needs (an SDP text, a candidate).
    Incomplete,
}

impl Untranslatable {
    /// Metrics label.
    pub fn kind(self) -> &'static str {
        match self {
            Untranslatable::NoConnector => "mixed_no_connector",
            Untranslatable::Incomplete => "mixed_incomplete",
        }
    }
}

/// What the gateway takes from a WebRtcRoom relay bound for a chatroom client.
#[derive(Deserialize)]
struct WebRtcRoomRelay<'a> {
    #[serde(default, borrow)]
    sdp: Option<&'a RawValue>,
    #[serde(default, borrow)]
    candidate: Option<WebRtcRoomCandidate<'a>>,
}

#[derive(Deserialize)]
struct WebRtcRoomCandidate<'a> {
    #[serde(rename = "sdpMid", default, borrow)]
    sdp_mid: Option<&'a RawValue>,
    #[serde(rename = "sdpMLineIndex", default, borrow)]
    sdp_mline_index: Option<&'a RawValue>,
    #[serde(default, borrow)]
    sdp: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Description<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    sdp: &'a RawValue,
}

#[derive(Serialize)]
struct ChatroomOffer<'a> {
    #[serde(rename = "remoteConnectorId")]
    remote_connector_id: &'a str,
    offer: Description<'a>,
    #[serde(rename = "memberId")]
    member_id: &'a str,
    #[serde(rename = "streamType")]
    stream_type: &'a str,
}

#[derive(Serialize)]
struct ChatroomAnswer<'a> {
    #[serde(rename = "remoteConnectorId")]
    remote_connector_id: &'a str,
    #[serde(rename = "connectorId")]
    connector_id: &'a str,
    answer: Description<'a>,
    #[serde(rename = "memberId")]
    member_id: &'a str,
}

#[derive(Serialize)]
struct ChatroomCandidate<'a> {
    #[serde(rename = "connectorId")]
    connector_id: &'a str,
    candidate: IceInit<'a>,
}

#[derive(Serialize)]
struct IceInit<'a> {
    candidate: &'a RawValue,
    #[serde(rename = "sdpMid", skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<&'a RawValue>,
    #[serde(rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    sdp_mline_index: Option<&'a RawValue>,
}

/// The link a WebRtcRoom offer or answer records on a chatroom target, as a chatroom
/// client's own would: the WebRtcRoom end's connector, stream "user". With it the chatroom
/// member's departure and return account for the WebRtcRoom peer like for any other.
pub fn webrtcroom_link(sender: &str, max_links: usize) -> LinkNote {
    LinkNote {
        connector: synthetic_connector(sender).into(),
        stream: "user".into(),
        max_links,
    }
}

/// Delivers a WebRtcRoom `offer` / `answer` / `candidate` from `sender` to the chatroom
/// member `route` reaches, in the chatroom's words.
pub fn webrtcroom_to_chatroom(
    event: &str,
    object: &RawValue,
    sender: &str,
    route: &Route<Reach>,
) -> Result<(), Untranslatable> {
    let relay: WebRtcRoomRelay =
        serde_json::from_str(object.get()).map_err(|_| Untranslatable::Incomplete)?;
    let connector = synthetic_connector(sender);
    let to = &route.target;
    match event {
        "offer" => {
            let sdp = relay.sdp.ok_or(Untranslatable::Incomplete)?;
            let out = ChatroomOffer {
                remote_connector_id: &connector,
                offer: Description { kind: "offer", sdp },
                member_id: sender,
                stream_type: "user",
            };
            relay_to_chatroom(to, "offer", &out);
            Ok(())
        }
        "answer" => {
            let sdp = relay.sdp.ok_or(Untranslatable::Incomplete)?;
            let own = route
                .target_connector
                .as_deref()
                .ok_or(Untranslatable::NoConnector)?;
            let out = ChatroomAnswer {
                remote_connector_id: &connector,
                connector_id: own,
                answer: Description {
                    kind: "answer",
                    sdp,
                },
                member_id: sender,
            };
            relay_to_chatroom(to, "answer", &out);
            Ok(())
        }
        _ => {
            let c = relay.candidate.ok_or(Untranslatable::Incomplete)?;
            let line = c.sdp.ok_or(Untranslatable::Incomplete)?;
            let own = route
                .target_connector
                .as_deref()
                .ok_or(Untranslatable::NoConnector)?;
            let out = ChatroomCandidate {
                connector_id: own,
                candidate: IceInit {
                    candidate: line,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_mline_index,
                },
            };
            relay_to_chatroom(to, "icecandidate", &out);
            Ok(())
        }
    }
}

const CHATROOM: &str = "chatroom";

fn relay_to_chatroom<T: Serialize>(to: &Reach, event: &'static str, payload: &T) {
    if deliver(CHATROOM, to, event, payload) {
        stats::relayed(CHATROOM, event);
    }
}
const WEBRTCROOM: &str = "webrtcroom";

/// A WebRtcRoom `offer` / `answer` as the gateway builds it from a chatroom client's.
#[derive(Serialize)]
struct WebRtcRoomSdp<'a> {
    from: &'a str,
    to: &'a str,
    room: &'a str,
    sdp: &'a RawValue,
}

#[derive(Serialize)]
struct WebRtcRoomCandidateOut<'a> {
    from: &'a str,
    to: &'a str,
    room: &'a str,
    candidate: CandidateOut<'a>,
}

#[derive(Serialize)]
struct CandidateOut<'a> {
    #[serde(rename = "sdpMid", skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<&'a RawValue>,
    #[serde(rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    sdp_mline_index: Option<&'a RawValue>,
    sdp: &'a RawValue,
}

/// The SDP text of a chatroom `offer` / `answer` description (`{type, sdp}`).
#[derive(Deserialize)]
struct DescriptionIn<'a> {
    #[serde(borrow)]
    sdp: &'a RawValue,
}

/// A chatroom candidate (`RTCIceCandidateInit`).
#[derive(Deserialize)]
struct IceIn<'a> {
    #[serde(borrow)]
    candidate: &'a RawValue,
    #[serde(rename = "sdpMid", default, borrow)]
    sdp_mid: Option<&'a RawValue>,
    #[serde(rename = "sdpMLineIndex", default, borrow)]
    sdp_mline_index: Option<&'a RawValue>,
}

/// Whether `value` is a JSON string (an SDP or a candidate line must be one).
fn is_string(value: &RawValue) -> bool {
    value.get().starts_with('"')
}

/// Delivers a chatroom `offer` / `answer` (`description` is its `offer` / `answer` field)
/// from socket `sender` in `room` to the WebRtcRoom member `route` reaches.
pub fn chatroom_sdp_to_webrtcroom(
    event: &'static str,
    description: Option<&RawValue>,
    sender: &str,
    room: &str,
    route: &Route<Reach>,
) -> Result<(), Untranslatable> {
    let d: DescriptionIn = description
        .and_then(|d| serde_json::from_str(d.get()).ok())
        .ok_or(Untranslatable::Incomplete)?;
    if !is_string(d.sdp) {
        return Err(Untranslatable::Incomplete);
    }
    let out = WebRtcRoomSdp {
        from: sender,
        to: &route.target_member,
        room,
        sdp: d.sdp,
    };
    if deliver(WEBRTCROOM, &route.target, event, &out) {
        stats::relayed(WEBRTCROOM, event);
    }
    Ok(())
}

/// Delivers a chatroom `icecandidate` from socket `sender` in `room` to the WebRtcRoom
/// member `route` reaches, as `candidate`.
pub fn chatroom_candidate_to_webrtcroom(
    candidate: Option<&RawValue>,
    sender: &str,
    room: &str,
    route: &Route<Reach>,
) -> Result<(), Untranslatable> {
    let c: IceIn = candidate
        .and_then(|c| serde_json::from_str(c.get()).ok())
        .ok_or(Untranslatable::Incomplete)?;
    if !is_string(c.candidate) {
        return Err(Untranslatable::Incomplete);
    }
    let out = WebRtcRoomCandidateOut {
        from: sender,
        to: &route.target_member,
        room,
        candidate: CandidateOut {
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            sdp: c.candidate,
        },
    };
    if deliver(WEBRTCROOM, &route.target, "candidate", &out) {
        stats::relayed(WEBRTCROOM, "candidate");
    }
    Ok(())
}

#[derive(Serialize)]
struct Exit<'a> {
    from: &'a str,
    room: &'a str,
}

#[derive(Serialize)]
struct Leave<'a> {
    #[serde(rename = "connectorId")]
    connector_id: &'a str,
    #[serde(rename = "memberId")]
    member_id: &'a str,
}

#[derive(Serialize)]
struct JoinedOut<'a> {
    id: &'a str,
    room: &'a str,
}

#[derive(Serialize)]
struct GetOffer<'a> {
    #[serde(rename = "memberId")]
    member_id: &'a str,
}

/// Tells a WebRtcRoom member that chatroom member socket `from` left (`room` as its apps
/// get it: the room's name, or "" when the member was dropped).
pub fn exit_to_webrtcroom(to: &Reach, from: &str, room: &str) {
    deliver(WEBRTCROOM, to, "exit", &Exit { from, room });
}

/// Tells a chatroom member that WebRtcRoom member `member` left; `connector` is the chatroom
/// member's own end of their link.
pub fn leave_to_chatroom(to: &Reach, connector: &str, member: &str) {
    let out = Leave {
        connector_id: connector,
        member_id: member,
    };
    deliver(CHATROOM, to, "leave", &out);
}

/// Tells a WebRtcRoom member that chatroom member socket `id` joined its room: it will get
/// that member's offer.
pub fn joined_to_webrtcroom(to: &Reach, id: &str, room: &str) {
    deliver(WEBRTCROOM, to, "joined", &JoinedOut { id, room });
}

/// Asks a chatroom client to offer to WebRtcRoom member `member`.
pub fn get_offer_to_chatroom(to: &Reach, member: &str) {
    deliver(CHATROOM, to, "getOffer", &GetOffer { member_id: member });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t) in [
            ("*", ""),
            ("*", "abc"),
            ("mix-*", "mix-1"),
            ("mix-*", "mix-"),
            ("a?c", "abc"),
            ("*房间", "大房间"),
            ("a*b*c", "aXXbYYc"),
            ("exact", "exact"),
        ] {
            assert!(glob(p, t), "{p} ~ {t}");
        }
        for (p, t) in [
            ("mix-*", "mix"),
            ("a?c", "ac"),
            ("exact", "exact2"),
            ("a*b*c", "aXXbYY"),
        ] {
            assert!(!glob(p, t), "{p} !~ {t}");
        }
    }

    #[test]
    fn keys_keep_protocols_apart() {
        let rules = CrossProtocol {
            patterns: vec!["mix-*".into()],
        };
        assert_eq!(&*rules.room_key(Side::WebRtcRoom, "mix-1"), "x:mix-1");
        assert_eq!(&*rules.room_key(Side::Chatroom, "mix-1"), "x:mix-1");
        assert_eq!(&*rules.room_key(Side::WebRtcRoom, "solo"), "w:solo");
        assert_eq!(&*rules.room_key(Side::Chatroom, "solo"), "c:solo");
        // A chatroom id that looks like a prefixed key stays a chatroom member's.
        assert_eq!(
            split_member("c:w:abc"),
            (Some(Side::Chatroom), "w:abc"),
            "only the first prefix is the protocol's"
        );
        assert_eq!(room_name("x:w:r"), "w:r");
    }
}
