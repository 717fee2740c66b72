//! Who opened a connection, as its peer sees it: the peer address of the opening request, and its
//! `User-Agent`.
//!
//! A session id or a chatroom user id is all a client has to name itself, and the session id
//! of a WebRtcRoom member is told to every member of its room. The source is what the gateway
//! can check on top of that without any change to the clients: `session_binding.rs` refuses
//! requests on a polling session from another address, and the chatroom adapter lets a
//! `reconnect` replace a still-live connection at once only from the same source.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{header, request::Parts, Extensions, HeaderMap};

/// The source of one request (or of the connection it opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Peer address; `None` when the request did not come from a listener (the in-process
    /// hop of `legacy_ws.rs`), which then matches nothing.
    pub ip: Option<IpAddr>,
    /// The `User-Agent` header, as sent (empty when absent).
    pub agent: Vec<u8>,
}

impl Source {
    /// The source of a request, from its extensions (the listener's `ConnectInfo`) and headers.
    pub fn of(extensions: &Extensions, headers: &HeaderMap) -> Self {
        Self {
            ip: peer_ip(extensions),
            agent: headers
                .get(header::USER_AGENT)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// The source of the request that opened a Socket.IO connection.
    pub fn of_parts(parts: &Parts) -> Self {
        Self::of(&parts.extensions, &parts.headers)
    }

    /// Same address and same `User-Agent`, both known.
    pub fn same_as(&self, other: &Source) -> bool {
        self.ip.is_some() && self.ip == other.ip && self.agent == other.agent
    }
}

/// The peer address the listener recorded for a request, if any.
pub fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn source(ip: Option<[u8; 4]>, agent: Option<&'static str>) -> Source {
        let mut extensions = Extensions::new();
        if let Some(ip) = ip {
            extensions.insert(ConnectInfo(SocketAddr::from((ip, 1234))));
        }
        let mut headers = HeaderMap::new();
        if let Some(agent) = agent {
            headers.insert(header::USER_AGENT, HeaderValue::from_static(agent));
        }
        Source::of(&extensions, &headers)
    }

    #[test]
    fn same_source_needs_a_known_address_and_the_same_agent() {
        let a = source(Some([127, 0, 0, 1]), Some("x"));
        assert!(a.same_as(&source(Some([127, 0, 0, 1]), Some("x"))));
        assert!(!a.same_as(&source(Some([127, 0, 0, 2]), Some("x"))));
        assert!(!a.same_as(&source(Some([127, 0, 0, 1]), Some("y"))));
        assert!(!a.same_as(&source(Some([127, 0, 0, 1]), None)));
        assert!(!source(None, None).same_as(&source(None, None)));
    }
}
