//! Who a request comes from: the source address per-source limits are counted against.
//!
//! Usually that is the TCP peer. Behind a reverse proxy or load balancer every client would
//! share the proxy's address, so peers listed in `limits.trusted_proxies` may name the real
//! client in `Forwarded` (RFC 7239) or `X-Forwarded-For`. Only trusted peers are believed:
//! anyone else could write any address there. The chain is read from the right (the hop
//! closest to us) and the first address that is not itself a trusted proxy is the client.
//!
//! In cluster mode a request may reach the node that owns its session through another node
//! (`forward.rs`). The owner then takes the client address that node signed with the cluster
//! secret as the peer (`ConnectInfo`), before anything here reads it, so everything below
//! treats a forwarded request as the client's own; unsigned or badly signed forwarding headers
//! are dropped unread.
//!
//! IPv6 sources are grouped by /64: one host usually owns a whole /64, so counting single
//! addresses would let it take any number of slots.
//!
//! The same module says who *opened* a session ([`Source`]: that client address and the
//! `User-Agent`). A session id or a chatroom user id is all a client has to name itself, and
//! the session id of a WebRtcRoom member is told to every member of its room; the source is
//! what the gateway can check on top of that without any change to the clients:
//! `session_binding.rs` refuses requests on a polling session from another address, and the
//! chatroom adapter lets a `reconnect` replace a still-live connection at once only from the
//! same source.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::ConnectInfo;
use axum::http::{header, request::Parts, Extensions, HeaderMap};
use serde::{Deserialize, Serialize};

/// A block of addresses, `ip/prefix` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u32::from(width - prefix.min(width));
    (bits >> keep) << keep
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr = canonical(
            ip.parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an address or ip/prefix block"))?,
        );
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix must be a number from 0 to {width}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> Self {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket reports) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key a source is counted under: the IPv4 address, or the IPv6 /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(masked(u128::from(v6), 128, 64))),
        v4 => v4,
    }
}

/// The client's address: `peer`, or what a trusted peer says in its forwarding headers.
pub fn client(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops = forwarded_for(headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = hop else {
            // `unknown` or an obfuscated name: nothing further left can be believed.
            break;
        };
        client = canonical(*ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The addresses a request passed through, client first: `Forwarded` if present, else
/// `X-Forwarded-For`. An entry that is not an address is `None`.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, value)| parse_node(value))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(parse_node)
        .collect()
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:443"`, `2001:db8::1`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

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

/// The client's address for a request: the one a trusted proxy names for it when admission
/// (`admission.rs`) resolved one, else the peer address the listener recorded. Behind a proxy
/// every client would otherwise share the proxy's address.
pub fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(client) = extensions.get::<super::admission::Client>() {
        return Some(client.ip);
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().filter_map(|s| s.parse().ok()).collect()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let c: Cidr = "10.1.0.0/16".parse().expect("valid");
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        let one: Cidr = "127.0.0.1".parse().expect("valid");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().expect("valid");
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }

    #[test]
    fn untrusted_peers_are_not_believed() {
        let h = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(
            client(ip("127.0.0.2"), &h, &cidrs(&["127.0.0.1"])),
            ip("127.0.0.2")
        );
        assert_eq!(client(ip("127.0.0.2"), &h, &[]), ip("127.0.0.2"));
    }

    #[test]
    fn a_trusted_peer_names_the_client() {
        let trusted = cidrs(&["127.0.0.1", "10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.5")]);
        assert_eq!(client(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        // A client-written entry left of the real client is not believed.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        assert_eq!(client(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        let h = headers(&[(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.5",
        )]);
        assert_eq!(client(ip("127.0.0.1"), &h, &trusted), ip("2001:db8::1"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client(ip("127.0.0.1"), &h, &trusted), ip("127.0.0.1"));
        let h = headers(&[("x-forwarded-for", "198.51.100.4:5555")]);
        assert_eq!(client(ip("127.0.0.1"), &h, &trusted), ip("198.51.100.4"));
    }

    #[test]
    fn ipv6_sources_count_by_64() {
        assert_eq!(key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

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
