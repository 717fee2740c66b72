//! Where room state lives, behind the one interface the adapters use.
//!
//! A realm (one protocol's rooms) asks its [`Store`] to join, leave, route, mark a dropped
//! connection away, rebind a returning member, and describe the rooms for operators. Two
//! implementations answer, with the same rules and the same outcomes:
//! - [`memory`]: this process's memory, the default; the core's rules ([`crate::core::Rooms`])
//!   run over an in-memory table. Every call completes without waiting.
//! - [`shared`] over [`redis`]: cluster mode. The same rules run as one atomic Lua script each,
//!   so several nodes can share every room; members are found by *address* (node + connection)
//!   and the adapter's [`Locator`] turns an address into something it can deliver to (its
//!   own socket, or a link to the node that holds it).
//!
//! The adapters never learn which one they have: they hold a `Store` and await its calls.

pub mod memory;
pub mod redis;
pub mod shared;

use std::sync::Arc;
use std::time::Duration;

use crate::core::{
    ConnId, ConnInfo, Departure, Disconnected, Handle, Join, JoinOutcome, LinkNote, Rebind,
    RebindError, Rebound, Refusal, RoomView, Rooms, Route, RouteError, Target,
};
pub use shared::{Locator, SharedRooms};

/// What a realm does with a member that left without a request of its own: its grace period
/// ended, or the node that held it died. The adapter tells the member's peers.
pub type OnDeparted<H> = Arc<dyn Fn(Departure<H>) + Send + Sync>;

/// The shared state could not be reached; nothing was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("room state unavailable")]
pub struct Unavailable;

/// One realm's room state, in memory or shared through Redis.
pub enum Store<H> {
    /// One node: the core's rules over this process's memory.
    Memory {
        /// The rooms.
        rooms: Arc<Rooms<H>>,
        /// Told of members whose grace period ended.
        on_departed: OnDeparted<H>,
    },
    /// Cluster mode: the rooms of every node, in Redis.
    Shared(Arc<SharedRooms<H>>),
}

impl<H: Handle + Send + Sync + 'static> Store<H> {
    /// A realm in this process's memory.
    pub fn in_memory(on_departed: OnDeparted<H>) -> Self {
        Store::Memory {
            rooms: Arc::new(Rooms::new()),
            on_departed,
        }
    }

    /// Whether calls may wait (on Redis). Callers that must keep one connection's requests in
    /// order then queue them; in memory every call completes at once.
    pub fn waits(&self) -> bool {
        matches!(self, Store::Shared(_))
    }

    /// Puts a connection into a room, leaving the room it was in first.
    pub async fn join(&self, req: Join<H>) -> Result<JoinOutcome<H>, Refusal> {
        match self {
            Store::Memory { rooms, .. } => rooms.join(req),
            Store::Shared(s) => Box::pin(s.join(req)).await,
        }
    }

    /// Takes the member bound to `conn` out of its room.
    pub async fn leave(&self, conn: ConnId) -> Option<Departure<H>> {
        match self {
            Store::Memory { rooms, .. } => rooms.leave(conn),
            Store::Shared(s) => Box::pin(s.leave(conn)).await,
        }
    }

    /// Checks that `conn` may reach `to` and returns how (recording `link` on the target).
    pub async fn route(
        &self,
        conn: ConnId,
        to: Target<'_>,
        link: Option<LinkNote>,
    ) -> Result<Route<H>, RouteError> {
        match self {
            Store::Memory { rooms, .. } => rooms.route(conn, to, link),
            Store::Shared(s) => Box::pin(s.route(conn, to, link)).await,
        }
    }

    /// The connection `conn` dropped: its member leaves now (zero `grace`) or is kept away
    /// for `grace`; if the grace ends first, the realm's [`OnDeparted`] hears of it.
    pub async fn disconnect(&self, conn: ConnId, grace: Duration) -> Disconnected<H> {
        match self {
            Store::Memory { rooms, on_departed } => {
                let on_departed = on_departed.clone();
                rooms.disconnect(conn, grace, move |d| on_departed(d))
            }
            Store::Shared(s) => Box::pin(s.disconnect(conn, grace)).await,
        }
    }

    /// Binds an existing member to a new connection.
    pub async fn rebind(&self, req: Rebind<H>) -> Result<Rebound<H>, RebindError> {
        match self {
            Store::Memory { rooms, .. } => rooms.rebind(req),
            Store::Shared(s) => Box::pin(s.rebind(req)).await,
        }
    }

    /// Whether a member of `room` uses display name `name`.
    pub async fn name_taken(&self, room: &str, name: &str) -> Result<bool, Unavailable> {
        match self {
            Store::Memory { rooms, .. } => Ok(rooms.name_taken(room, name)),
            Store::Shared(s) => Box::pin(s.name_taken(room, name)).await,
        }
    }

    /// The room and member key of `conn`, if it is in one. Never waits: a node knows which
    /// of its own connections are members.
    pub fn membership(&self, conn: ConnId) -> Option<(Arc<str>, Arc<str>)> {
        match self {
            Store::Memory { rooms, .. } => rooms.membership(conn),
            Store::Shared(s) => s.membership(conn),
        }
    }

    /// Every room with its members, for operators.
    pub fn snapshot(&self, describe: impl Fn(&H) -> ConnInfo) -> Vec<RoomView> {
        match self {
            Store::Memory { rooms, .. } => rooms.snapshot(describe),
            Store::Shared(s) => s.snapshot(describe),
        }
    }

    /// One room with its members, for operators.
    pub fn room_snapshot(&self, room: &str, describe: impl Fn(&H) -> ConnInfo) -> Option<RoomView> {
        match self {
            Store::Memory { rooms, .. } => rooms.room_snapshot(room, describe),
            Store::Shared(s) => s.snapshot(describe).into_iter().find(|r| r.name == room),
        }
    }

    /// Number of rooms and members.
    pub fn sizes(&self) -> (usize, usize) {
        match self {
            Store::Memory { rooms, .. } => rooms.sizes(),
            Store::Shared(s) => s.sizes(),
        }
    }
}
