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

/// Identifies one transport connection (one Socket.IO socket).
pub type ConnId = socketioxide::socket::Sid;
