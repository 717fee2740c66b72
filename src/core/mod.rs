//! The protocol-neutral heart of the gateway: rooms, members and who may talk to whom.
//!
//! The core never sees an event name or a payload. Adapters call it with plain facts ("this
//! connection wants to join room R as member M", "this connection wants to reach member T")
//! and get back outcomes ("these members were already there", "refused: room full") that they
//! then speak in their protocol's words.
//!
//! Rules the core enforces for every protocol:
//! - a connection is a member of at most one room at a time;
//! - a relay goes only between two members of the same room, and the sender is the
//!   connection that sent it, never what its payload claims;
//! - a room exists exactly as long as it has members, so memory follows the live rooms, not
//!   the number of rooms ever created;
//! - a member whose connection drops may be kept for a grace period and come back on a new
//!   connection; only the timer of its *current* absence can remove it.

mod presence;
mod room;

pub use presence::{Disconnected, Rebind, RebindError, Rebound};
pub use room::{
    ConnInfo, Departure, Join, JoinOutcome, Joined, LinkNote, LinkedPeer, MemberView, Peer,
    Refusal, RoomView, Rooms, Route, RouteError, Target,
};

/// An opaque mark on a member, set by the layer above a realm when members of several
/// protocols share it (cross-protocol rooms: it says which protocol a peer speaks). The core
/// and the stores never read it and always hand out the default; see `adapters::mixed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Label(pub u8);

/// Identifies one transport connection (one Socket.IO socket).
pub type ConnId = socketioxide::socket::Sid;

/// How the core reaches a connection: an adapter's handle, stored with the member.
///
/// The core asks one thing of it: whether the connection is still open, checked under the
/// state lock whenever a connection is bound to a member. A connection's disconnect is
/// handled after it stops being open and takes the same lock, so a join or rebind racing a
/// disconnect either comes first (and the disconnect undoes it) or is refused: no member is
/// ever left bound to a dead connection.
pub trait Handle: Clone {
    /// Whether the connection may still be bound to a member.
    fn is_open(&self) -> bool;
}
