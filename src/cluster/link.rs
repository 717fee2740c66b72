//! Messages between nodes: what one node asks of another, encoded for the transport.
//!
//! Two kinds travel: *deliver* (an event for one of the receiving node's connections, stamped
//! with the room its member is in, so the receiver can check it) and *detach* (a member came
//! back on another node: the receiver's old connection no longer speaks for it). Each is one
//! JSON array, the payload last and untouched: `["d", realm, conn, room, event, payload]`,
//! `["x", realm, conn]`. Every message of this node leaves through one [`Publisher`] queue,
//! so one sender's messages keep their order to each receiver.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::transport::{Publisher, SendError};

/// One message to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// Deliver `event` to connection `conn` if it is in `room`.
    Deliver {
        /// The protocol whose connection it is.
        realm: Cow<'a, str>,
        /// The receiving node's connection.
        conn: Cow<'a, str>,
        /// The room the sender found the receiver's member in.
        room: Cow<'a, str>,
        /// The event name.
        event: Cow<'a, str>,
    },
    /// Connection `conn` lost its member to a connection on another node.
    Detach {
        /// The protocol.
        realm: Cow<'a, str>,
        /// The receiving node's connection.
        conn: Cow<'a, str>,
    },
}

impl<'a> Message<'a> {
    /// Reads a message and its payload (deliver only).
    pub fn decode(raw: &'a [u8]) -> Option<(Message<'a>, Option<&'a RawValue>)> {
        let parts: Vec<&'a RawValue> = serde_json::from_slice(raw).ok()?;
        let text = |i: usize| -> Option<Cow<'a, str>> {
            serde_json::from_str::<Cow<'a, str>>(parts.get(i)?.get()).ok()
        };
        match &*text(0)? {
            "d" if parts.len() == 6 => Some((
                Message::Deliver {
                    realm: text(1)?,
                    conn: text(2)?,
                    room: text(3)?,
                    event: text(4)?,
                },
                parts.get(5).copied(),
            )),
            "x" if parts.len() == 3 => Some((
                Message::Detach {
                    realm: text(1)?,
                    conn: text(2)?,
                },
                None,
            )),
            _ => None,
        }
    }
}

/// This node's way to other nodes.
pub struct Link {
    publisher: Publisher,
}

impl Link {
    /// A link publishing through `publisher`.
    pub fn new(publisher: Publisher) -> Arc<Self> {
        Arc::new(Self { publisher })
    }

    /// Waits (at most `limit`) until everything sent so far has left for Redis; for a
    /// graceful stop, so the last departures reach the other nodes.
    pub async fn flushed(&self, limit: std::time::Duration) -> bool {
        self.publisher.flushed(limit).await
    }

    /// Queues `message` (with `payload`, for a delivery) for node `node`, without waiting.
    /// The error is the reason to count the message as dropped under.
    pub fn send<T: ?Sized + Serialize>(
        &self,
        node: &str,
        message: &Message<'_>,
        payload: &T,
    ) -> Result<(), &'static str> {
        let encoded = match message {
            Message::Deliver {
                realm,
                conn,
                room,
                event,
            } => serde_json::to_vec(&("d", realm, conn, room, event, payload)),
            Message::Detach { realm, conn } => serde_json::to_vec(&("x", realm, conn)),
        }
        .map_err(|_| "encode_error")?;
        self.publisher
            .send(node.into(), Bytes::from(encoded))
            .map_err(|e| match e {
                SendError::Full => "cluster_queue_full",
                SendError::Closed => "cluster_stopped",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_round_trips_with_its_payload_untouched() {
        let m = Message::Deliver {
            realm: "chatroom".into(),
            conn: "abc".into(),
            room: "r \"1\"".into(),
            event: "offer".into(),
        };
        let payload = RawValue::from_string(r#"{"b":1,"a":[2]}"#.into()).expect("json");
        let raw = serde_json::to_vec(&("d", "chatroom", "abc", "r \"1\"", "offer", &payload))
            .expect("encodes");
        let (decoded, payload) = Message::decode(&raw).expect("decodes");
        assert_eq!(decoded, m);
        assert_eq!(payload.map(RawValue::get), Some(r#"{"b":1,"a":[2]}"#));
        assert!(Message::decode(b"[\"d\",\"x\"]").is_none());
        assert!(Message::decode(b"not json").is_none());
    }
}
