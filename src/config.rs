//! The gateway's configuration: one typed tree, loaded once at start.
//!
//! Layers, later ones winning: built-in defaults < the TOML file (`gateway.toml`) <
//! `GATEWAY_*` environment variables (nested keys split on `__`, e.g.
//! `GATEWAY_WEBRTCROOM__LISTEN`) < `--set key=value` flags. Loading validates everything the
//! process will need (addresses, certificate files, clashes between listeners), so that a bad
//! setting is one clear line naming the key instead of a failure later on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::endpoints::source::Cidr;
pub use crate::secret::Secret;
use layers::Layers;

mod layers;

/// Everything the gateway can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The WebRtcRoom protocol (socket.io 2.x apps).
    pub webrtcroom: ProtocolConfig,
    /// The chatroom protocol (socket.io-client 4.x front-end).
    pub chatroom: ProtocolConfig,
    /// Abuse limits for every protocol (each protocol may override some in its own
    /// `[<protocol>.limits]` table).
    pub limits: Limits,
    /// The operators' endpoint: health and metrics.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Process-wide behaviour on SIGINT/SIGTERM.
    pub shutdown: ShutdownConfig,
    /// TURN REST credentials handed out at `/turn` (`[turn]`; off unless `secret` is set).
    pub turn: TurnConfig,
    /// Several nodes sharing every room through Redis (`[cluster]`; off while `redis_url`
    /// is empty).
    pub cluster: crate::cluster::ClusterConfig,
    /// Rooms shared by the two protocols (`[cross_protocol]`; off by default).
    pub cross_protocol: CrossProtocolConfig,
}

/// Cross-protocol ("mixed") rooms: a WebRtcRoom app and a chatroom client in one call.
///
/// Off by default, so that each protocol keeps rooms of its own, as the original servers
/// did. When on, a room name means one room for both protocols, for every room or only those
/// whose name matches one of `rooms`; the adapters translate between the two protocols
/// (`src/adapters/mixed.rs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrossProtocolConfig {
    /// Whether rooms may be shared by the two protocols.
    pub enabled: bool,
    /// Glob patterns (`*` any run of characters, `?` one character) of the room names that
    /// are shared; empty: every room.
    pub rooms: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            webrtcroom: ProtocolConfig::webrtcroom(),
            chatroom: ProtocolConfig::chatroom(),
            limits: Limits::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
            turn: TurnConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            cross_protocol: CrossProtocolConfig::default(),
        }
    }
}

/// How one protocol is served: where, on which namespace, with what transport settings.
/// Both protocols have this one shape (`[webrtcroom]` and `[chatroom]`); only their defaults
/// differ ([`ProtocolConfig::webrtcroom`], [`ProtocolConfig::chatroom`]).
///
/// The first keys are the fixed, documented schema operators rely on; `limits`, `engine`,
/// origins and tokens tune the listener and default to what the original servers did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Serve this protocol at all.
    pub enabled: bool,
    /// The address to listen on (`ip:port`).
    pub listen: SocketAddr,
    /// The Socket.IO namespace the protocol answers on.
    pub namespace: String,
    /// TLS for this listener.
    pub tls: Tls,
    /// A directory to serve as static files on the same address (empty: none). For chatroom,
    /// the built client, served with a fallback to `index.html` for client-side routes.
    pub static_dir: PathBuf,
    /// How long a member whose connection dropped is kept for a `reconnect` (chatroom only:
    /// WebRtcRoom has no reconnect, and refuses the key).
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub reconnect_grace: Option<Duration>,
    /// Most members a room may hold; 0 means unlimited.
    pub max_room_size: usize,
    /// Serve the demo page at `/demo/`.
    pub demo: bool,
    /// Overrides of the global `[limits]` for this protocol (`[<protocol>.limits]`).
    pub limits: LimitsOverride,
    /// Engine.IO settings for the listener (`[<protocol>.engine]`).
    pub engine: EngineConfig,
    /// Origins whose pages may connect (`https://*.example.com` patterns); empty: any.
    pub allowed_origins: Vec<String>,
    /// Refuse Engine.IO requests that carry no `Origin` header (native apps send none).
    pub require_origin: bool,
    /// Connection tokens (`[<protocol>.token]`).
    pub token: TokenConfig,
}

impl Default for ProtocolConfig {
    /// What serde falls back to for a key the defaults layer does not name: only an unset
    /// `reconnect_grace` (WebRtcRoom's), which must stay unset. The real defaults come from
    /// [`Config::default`], which gives each protocol its own.
    fn default() -> Self {
        Self {
            reconnect_grace: None,
            ..Self::chatroom()
        }
    }
}

impl ProtocolConfig {
    /// WebRtcRoom's defaults: HTTPS on 8443 with a self-signed certificate, like the original.
    pub fn webrtcroom() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls: Tls::SelfSigned,
            reconnect_grace: None,
            // The original server (engine.io 3.2) used 25 s / 5 s.
            engine: EngineConfig {
                ping_interval: Duration::from_secs(25),
                ping_timeout: Duration::from_secs(5),
                ..EngineConfig::default()
            },
            ..Self::chatroom()
        }
    }

    /// Chatroom's defaults: plain HTTP on 3000, a 15 s reconnect grace.
    pub fn chatroom() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            namespace: "/".into(),
            tls: Tls::Off,
            static_dir: PathBuf::new(),
            reconnect_grace: Some(Duration::from_secs(15)),
            max_room_size: 0,
            demo: true,
            limits: LimitsOverride::default(),
            // The original server (engine.io 6) used 25 s / 20 s.
            engine: EngineConfig::default(),
            allowed_origins: Vec::new(),
            require_origin: false,
            token: TokenConfig::default(),
        }
    }

    /// How long a dropped member is kept (zero: it leaves at once).
    pub fn grace(&self) -> Duration {
        self.reconnect_grace.unwrap_or_default()
    }

    /// Checks what types alone cannot, for the protocol's table `section`.
    fn check(&self, section: &str) -> Result<(), ConfigError> {
        check_namespace(&format!("{section}.namespace"), &self.namespace)?;
        check_tls(&format!("{section}.tls"), &self.tls)?;
        check_static_dir(&format!("{section}.static_dir"), &self.static_dir)?;
        check_engine(&format!("{section}.engine"), &self.engine)?;
        check_access(section, &self.allowed_origins, &self.token)
    }
}

/// JWT connection tokens for one protocol. Off (tokens ignored) unless `secret` or
/// `public_key_file` is set; with a key, a token that is given must be valid, and with
/// `required` one must be given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Refuse connections without a token.
    pub required: bool,
    /// HS256 shared secret.
    pub secret: Option<Secret>,
    /// PEM public key for RS256/ES256/EdDSA tokens (instead of `secret`).
    pub public_key_file: Option<PathBuf>,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

/// TURN REST credentials (coturn's `use-auth-secret` scheme).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// coturn's `static-auth-secret`; unset: `/turn` answers 404.
    pub secret: Option<Secret>,
    /// `turn:`, `turns:` and `stun:` URLs handed to clients.
    pub uris: Vec<String>,
    /// How long issued credentials stay valid.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            secret: None,
            uris: Vec::new(),
            ttl: Duration::from_secs(86_400),
        }
    }
}

/// Limits that keep one client from hurting the others. Hitting one is logged, counted and
/// answered in the protocol's way (chatroom: `error {type:"limit"}`; WebRtcRoom: nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest event a client may send, in bytes (an SDP with many candidates is ~10 KiB).
    pub max_payload: usize,
    /// Open connections per protocol; further connects are refused. 0: no limit.
    pub max_connections: usize,
    /// Rooms per protocol; a join that would open another is refused. 0: no limit.
    pub max_rooms: usize,
    /// Longest room name, member id or user name, in characters.
    pub max_name_length: usize,
    /// Sustained messages per second per connection (token bucket refill rate).
    pub rate: f64,
    /// Messages a connection may send at once beyond the rate (token bucket size).
    pub burst: f64,
    /// Messages refused for rate, without a pause, after which the connection is closed.
    /// 0: never close.
    pub flood_disconnect: u32,
    /// Messages a receiver may miss because its send buffer is full before it is closed as
    /// too slow. 0: never close.
    pub slow_consumer_drops: u32,
    /// Every listener (admin too): how long a connection may take to deliver a complete
    /// request head, from when it opened or, on a kept-alive connection, from the head's first
    /// byte; a TLS handshake gets the same time of its own. Global only.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Every listener (admin too): a kept-alive connection with no request in flight is
    /// closed after this long. Global only.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections one source address (an IPv6 /64) may hold; further connects are
    /// refused with `connect_error`. 0: no limit (the default: behind a NAT or a proxy not
    /// listed in `trusted_proxies`, many users share one address).
    pub max_connections_per_ip: usize,
    /// New Engine.IO sessions per second one source address may open (token bucket refill
    /// rate); beyond it a handshake is answered HTTP 429. 0: no limit.
    pub connect_rate: f64,
    /// New sessions a source may open at once beyond `connect_rate` (token bucket size).
    pub connect_burst: f64,
    /// Reverse proxies (`ip` or `ip/prefix`) whose `Forwarded` / `X-Forwarded-For` header
    /// names the real client; every other peer's headers are ignored.
    pub trusted_proxies: Vec<Cidr>,
    /// A polling session that does not poll again within this long after connecting, or an
    /// Engine.IO v4 session that sends no Socket.IO CONNECT within it, is closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Bytes that may be waiting in one receiver's send buffer (an upper bound counted on
    /// delivery, see `adapters::budget`); a receiver that would exceed it is closed as too
    /// slow. 0: no byte budget (the buffer is then bounded by `engine.send_buffer` messages).
    pub send_budget: usize,
    /// Links (peer, stream kind) recorded on one member; an `offer`/`answer` that would add
    /// one more is refused. The chatroom client makes at most three per peer.
    pub max_links: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload: 256 * 1024,
            max_connections: 20_000,
            max_rooms: 20_000,
            max_name_length: 256,
            rate: 200.0,
            burst: 1000.0,
            flood_disconnect: 2000,
            slow_consumer_drops: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections_per_ip: 0,
            connect_rate: 0.0,
            connect_burst: 20.0,
            trusted_proxies: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            send_budget: 8 * 1024 * 1024,
            max_links: 1024,
        }
    }
}

/// Per-protocol overrides of [`Limits`]; unset keys take the global value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsOverride {
    /// See [`Limits::max_payload`].
    pub max_payload: Option<usize>,
    /// See [`Limits::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`Limits::max_rooms`].
    pub max_rooms: Option<usize>,
    /// See [`Limits::max_name_length`].
    pub max_name_length: Option<usize>,
    /// See [`Limits::rate`].
    pub rate: Option<f64>,
    /// See [`Limits::burst`].
    pub burst: Option<f64>,
    /// See [`Limits::flood_disconnect`].
    pub flood_disconnect: Option<u32>,
    /// See [`Limits::slow_consumer_drops`].
    pub slow_consumer_drops: Option<u32>,
    /// See [`Limits::max_connections_per_ip`].
    pub max_connections_per_ip: Option<usize>,
    /// See [`Limits::connect_rate`].
    pub connect_rate: Option<f64>,
    /// See [`Limits::connect_burst`].
    pub connect_burst: Option<f64>,
    /// See [`Limits::trusted_proxies`].
    pub trusted_proxies: Option<Vec<Cidr>>,
    /// See [`Limits::handshake_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
    /// See [`Limits::send_budget`].
    pub send_budget: Option<usize>,
    /// See [`Limits::max_links`].
    pub max_links: Option<usize>,
}

impl Limits {
    /// These limits with `o`'s settings taking precedence.
    pub fn with(&self, o: &LimitsOverride) -> Limits {
        Limits {
            max_payload: o.max_payload.unwrap_or(self.max_payload),
            max_connections: o.max_connections.unwrap_or(self.max_connections),
            max_rooms: o.max_rooms.unwrap_or(self.max_rooms),
            max_name_length: o.max_name_length.unwrap_or(self.max_name_length),
            rate: o.rate.unwrap_or(self.rate),
            burst: o.burst.unwrap_or(self.burst),
            flood_disconnect: o.flood_disconnect.unwrap_or(self.flood_disconnect),
            slow_consumer_drops: o.slow_consumer_drops.unwrap_or(self.slow_consumer_drops),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections_per_ip: o
                .max_connections_per_ip
                .unwrap_or(self.max_connections_per_ip),
            connect_rate: o.connect_rate.unwrap_or(self.connect_rate),
            connect_burst: o.connect_burst.unwrap_or(self.connect_burst),
            trusted_proxies: o
                .trusted_proxies
                .clone()
                .unwrap_or_else(|| self.trusted_proxies.clone()),
            handshake_timeout: o.handshake_timeout.unwrap_or(self.handshake_timeout),
            send_budget: o.send_budget.unwrap_or(self.send_budget),
            max_links: o.max_links.unwrap_or(self.max_links),
        }
    }
}

/// Engine.IO transport settings of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How often the server expects (v3) or sends (v4) a heartbeat.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long a missing heartbeat is tolerated before the session is dropped.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Largest Engine.IO payload accepted from a client, in bytes.
    pub max_payload: u64,
    /// Packets queued per connection before a send counts as dropped. Sized for ICE bursts:
    /// a browser can emit dozens of candidates within milliseconds.
    pub send_buffer: usize,
    /// Whether a long-polling session only answers the address that opened it.
    pub session_binding: SessionBinding,
    /// Bytes of the read buffer each WebSocket connection allocates up front (tungstenite's
    /// `read_buffer_size`). Smaller saves memory per idle client; larger reads more per call.
    pub ws_read_buffer: usize,
}

/// What a long-polling session is bound to (`endpoints/session_binding.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionBinding {
    /// Requests on a session from another peer address are refused as for an unknown sid.
    Address,
    /// No check: any client that knows a session id can use it (clients whose address
    /// changes mid-session keep it).
    Off,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            send_buffer: 4096,
            session_binding: SessionBinding::Address,
            // Half socketioxide's 4096: 2 KiB less per idle WebSocket client, and relay
            // throughput per server CPU second within the run-to-run noise of 4096 (bench/README.md,
            // "Memory levers", lever B).
            ws_read_buffer: 2048,
        }
    }
}

/// TLS for a listener: `"off"`, `"self-signed"` (a certificate made at start for
/// `localhost`), or `{ cert = "path", key = "path" }` (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "\"off\", \"self-signed\" or a table { cert = \"path\", key = \"path\" }"
)]
pub enum Tls {
    /// `"off"` or `"self-signed"`.
    Mode(TlsMode),
    /// PEM certificate chain and private key files.
    Files {
        /// Certificate chain (PEM).
        cert: PathBuf,
        /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// The two TLS settings that take no files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain HTTP / WebSocket.
    Off,
    /// A self-signed certificate generated at start.
    SelfSigned,
}

#[allow(non_upper_case_globals)]
impl Tls {
    /// Plain text.
    pub const Off: Tls = Tls::Mode(TlsMode::Off);
    /// A certificate made at start.
    pub const SelfSigned: Tls = Tls::Mode(TlsMode::SelfSigned);

    /// `https`/`wss` or not, for printing URLs.
    pub fn is_on(&self) -> bool {
        *self != Tls::Off
    }
}

/// The admin endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin endpoint at all.
    pub enabled: bool,
    /// Where; loopback by default, since it exposes counts and room names.
    pub listen: SocketAddr,
    /// When set, every admin route but `/healthz` requires `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// Host names (any port) the admin endpoint answers besides IP addresses and `localhost`;
    /// a request for any other name is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Logging settings; `RUST_LOG`, when set, overrides `level`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `signal_gateway=debug,info`.
    pub level: String,
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// What happens on SIGINT/SIGTERM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long open connections get to close before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(5),
        }
    }
}

/// A configuration that could not be loaded; its message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, the environment or a flag held a value of the wrong shape.
    #[error("{0}")]
    Parse(String),
    /// The values parse but cannot work together, or name files that are unusable.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key at fault.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where the file layer comes from.
pub enum Source<'a> {
    /// The file was named on the command line: it must exist.
    Required(&'a Path),
    /// The default `gateway.toml`: used if present.
    Optional(&'a Path),
}

impl Config {
    /// Loads every layer and validates the result.
    ///
    /// `env` is the process environment (passed in so tests need not mutate it), `overrides`
    /// are `key=value` pairs from `--set`.
    pub fn load(
        source: Source<'_>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut layers = Layers::read(source, env, overrides)?;
        let config = layers.extract()?;
        config.validate().map_err(|e| layers.locate(e))?;
        Ok(config)
    }

    /// Checks what types alone cannot: namespaces, files, listeners that clash.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (w, c) = (&self.webrtcroom, &self.chatroom);
        w.check("webrtcroom")?;
        c.check("chatroom")?;
        if w.reconnect_grace.is_some() {
            return Err(ConfigError::invalid(
                "webrtcroom.reconnect_grace",
                "WebRtcRoom has no reconnect (its apps join again as new members); remove the key",
            ));
        }
        for (section, limits) in [
            ("limits", self.limits.clone()),
            ("webrtcroom.limits", self.limits.with(&w.limits)),
            ("chatroom.limits", self.limits.with(&c.limits)),
        ] {
            check_limits(section, &limits)?;
        }
        check_turn(&self.turn)?;
        check_admin(&self.admin)?;
        if !w.enabled && !c.enabled {
            return Err(ConfigError::invalid(
                "webrtcroom.enabled",
                "no protocol is enabled (webrtcroom.enabled and chatroom.enabled are both false)",
            ));
        }
        if w.enabled && c.enabled && same_address(w.listen, c.listen) {
            check_shared_listener(w, c)?;
        }
        for (name, enabled, listen) in [
            ("webrtcroom", w.enabled, w.listen),
            ("chatroom", c.enabled, c.listen),
        ] {
            if self.admin.enabled && enabled && same_address(self.admin.listen, listen) {
                return Err(ConfigError::invalid(
                    "admin.listen",
                    format!("{} is already used by {name}.listen", self.admin.listen),
                ));
            }
        }
        let listeners: Vec<(&str, SocketAddr)> = [
            ("webrtcroom.listen", w.enabled, w.listen),
            ("chatroom.listen", c.enabled, c.listen),
        ]
        .into_iter()
        .filter(|(_, enabled, _)| *enabled)
        .map(|(key, _, listen)| (key, listen))
        .collect();
        if let Err((key, message)) = self.cluster.check(&listeners) {
            return Err(ConfigError::invalid(key, message));
        }
        if self.cross_protocol.rooms.iter().any(|r| r.is_empty()) {
            return Err(ConfigError::invalid(
                "cross_protocol.rooms",
                "an empty pattern matches no room name; remove it (an empty list means every room)",
            ));
        }
        check_log_level("log.level", &self.log.level)
    }

    /// The effective configuration as TOML, for `--check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Whether two listen settings name one socket (port 0 asks for a fresh port each time).
pub fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a == b && a.port() != 0
}

/// Two protocols on one address share one Socket.IO instance: they need their own namespaces
/// and the same transport settings.
fn check_shared_listener(w: &ProtocolConfig, c: &ProtocolConfig) -> Result<(), ConfigError> {
    let clash = |key: &str, what: &str| {
        Err(ConfigError::invalid(
            key,
            format!("webrtcroom and chatroom share {} and so {what}", c.listen),
        ))
    };
    if w.namespace == c.namespace {
        return clash(
            "chatroom.namespace",
            "need different namespaces (unmodified clients of both use \"/\": give each its own address)",
        );
    }
    if w.tls != c.tls {
        return clash("chatroom.tls", "need the same tls setting");
    }
    if w.engine != c.engine {
        return clash("chatroom.engine", "need the same [engine] settings");
    }
    if w.allowed_origins != c.allowed_origins || w.require_origin != c.require_origin {
        return clash(
            "chatroom.allowed_origins",
            "need the same allowed_origins and require_origin (the check runs before the namespace is known)",
        );
    }
    if !w.static_dir.as_os_str().is_empty() && !c.static_dir.as_os_str().is_empty() {
        return clash("chatroom.static_dir", "can serve only one static_dir");
    }
    Ok(())
}

/// Origin patterns parse and the token settings make a usable verifier.
fn check_access(section: &str, origins: &[String], token: &TokenConfig) -> Result<(), ConfigError> {
    for pattern in origins {
        crate::access::origin::Pattern::parse(pattern)
            .map_err(|e| ConfigError::invalid(format!("{section}.allowed_origins"), e))?;
    }
    crate::access::Tokens::from_config(token)
        .map_err(|e| ConfigError::invalid(format!("{section}.token"), e))?;
    Ok(())
}

fn check_turn(t: &TurnConfig) -> Result<(), ConfigError> {
    let Some(secret) = &t.secret else {
        return Ok(());
    };
    if secret.is_empty() {
        return Err(ConfigError::invalid("turn.secret", "must not be empty"));
    }
    if t.uris.is_empty() {
        return Err(ConfigError::invalid(
            "turn.uris",
            "list at least one turn:, turns: or stun: URL",
        ));
    }
    if let Some(bad) = t.uris.iter().find(|u| {
        !["turn:", "turns:", "stun:", "stuns:"]
            .iter()
            .any(|p| u.starts_with(p))
    }) {
        return Err(ConfigError::invalid(
            "turn.uris",
            format!("{bad:?}: expected a turn:, turns: or stun: URL"),
        ));
    }
    if t.ttl.as_secs() == 0 {
        return Err(ConfigError::invalid("turn.ttl", "must be at least 1s"));
    }
    Ok(())
}

/// An empty token would otherwise mean "no authentication"; a public admin listener
/// without a token would expose room names to anyone.
fn check_admin(a: &AdminConfig) -> Result<(), ConfigError> {
    if a.token.as_ref().is_some_and(Secret::is_empty) {
        return Err(ConfigError::invalid(
            "admin.token",
            "must not be empty (leave it unset for no token on a loopback listener)",
        ));
    }
    if a.enabled && a.token.is_none() && !a.listen.ip().is_loopback() {
        return Err(ConfigError::invalid(
            "admin.listen",
            format!(
                "{} is not a loopback address: set admin.token too",
                a.listen
            ),
        ));
    }
    Ok(())
}

/// A filter is a level (`info`) or `target=level` directives separated by commas. tracing
/// would take a bare word such as `verbose` as a target name and silence every other line,
/// so a bare word that is not a level is refused.
fn check_log_level(key: &str, level: &str) -> Result<(), ConfigError> {
    const LEVELS: &str = "trace, debug, info, warn, error or off";
    if let Err(e) = level.parse::<tracing_subscriber::EnvFilter>() {
        return Err(ConfigError::invalid(key, format!("{level:?}: {e}")));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let wanted = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if wanted
            .parse::<tracing::level_filters::LevelFilter>()
            .is_err()
        {
            return Err(ConfigError::invalid(
                key,
                format!("{directive:?}: not a level ({LEVELS}); name a target as target=level"),
            ));
        }
    }
    Ok(())
}

fn check_namespace(key: &str, ns: &str) -> Result<(), ConfigError> {
    if !ns.starts_with('/') || ns.contains(['?', ',', '#']) {
        return Err(ConfigError::invalid(
            key,
            format!("{ns:?}: a namespace starts with '/' and holds no '?', ',' or '#'"),
        ));
    }
    Ok(())
}

fn check_tls(key: &str, tls: &Tls) -> Result<(), ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    if let Tls::Files {
        cert,
        key: key_file,
    } = tls
    {
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| {
                ConfigError::invalid(format!("{key}.cert"), format!("{}: {e}", cert.display()))
            })?
            .count();
        if certs == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.cert"),
                format!("{}: no PEM certificate in it", cert.display()),
            ));
        }
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
            ConfigError::invalid(format!("{key}.key"), format!("{}: {e}", key_file.display()))
        })?;
    }
    Ok(())
}

fn check_static_dir(key: &str, dir: &Path) -> Result<(), ConfigError> {
    if !dir.as_os_str().is_empty() && !dir.is_dir() {
        return Err(ConfigError::invalid(
            key,
            format!("{}: not a directory", dir.display()),
        ));
    }
    Ok(())
}

fn check_limits(section: &str, l: &Limits) -> Result<(), ConfigError> {
    if !(l.rate > 0.0 && l.rate.is_finite()) {
        return Err(ConfigError::invalid(
            format!("{section}.rate"),
            "must be a positive number",
        ));
    }
    if !(l.burst >= 1.0 && l.burst.is_finite()) {
        return Err(ConfigError::invalid(
            format!("{section}.burst"),
            "must be at least 1",
        ));
    }
    if l.max_payload < 1024 {
        return Err(ConfigError::invalid(
            format!("{section}.max_payload"),
            "must be at least 1024 bytes",
        ));
    }
    if l.header_timeout.is_zero() {
        return Err(ConfigError::invalid(
            format!("{section}.header_timeout"),
            "must be above zero",
        ));
    }
    if l.idle_timeout.is_zero() {
        return Err(ConfigError::invalid(
            format!("{section}.idle_timeout"),
            "must be above zero",
        ));
    }
    if !(l.connect_rate >= 0.0 && l.connect_rate.is_finite()) {
        return Err(ConfigError::invalid(
            format!("{section}.connect_rate"),
            "must be 0 (no limit) or a positive number",
        ));
    }
    if !(l.connect_burst >= 1.0 && l.connect_burst.is_finite()) {
        return Err(ConfigError::invalid(
            format!("{section}.connect_burst"),
            "must be at least 1",
        ));
    }
    if l.handshake_timeout.is_zero() {
        return Err(ConfigError::invalid(
            format!("{section}.handshake_timeout"),
            "must be above zero",
        ));
    }
    if l.max_name_length == 0 {
        return Err(ConfigError::invalid(
            format!("{section}.max_name_length"),
            "must be at least 1",
        ));
    }
    if l.send_budget != 0 && l.send_budget < l.max_payload {
        return Err(ConfigError::invalid(
            format!("{section}.send_budget"),
            "must be 0 (off) or at least max_payload, so one largest message fits",
        ));
    }
    if l.max_links == 0 {
        return Err(ConfigError::invalid(
            format!("{section}.max_links"),
            "must be at least 1",
        ));
    }
    Ok(())
}

fn check_engine(section: &str, e: &EngineConfig) -> Result<(), ConfigError> {
    if e.send_buffer == 0 {
        return Err(ConfigError::invalid(
            format!("{section}.send_buffer"),
            "must be at least 1",
        ));
    }
    if e.ws_read_buffer < 256 {
        return Err(ConfigError::invalid(
            format!("{section}.ws_read_buffer"),
            "must be at least 256 bytes",
        ));
    }
    if e.ping_interval.is_zero() || e.ping_timeout.is_zero() {
        return Err(ConfigError::invalid(
            format!("{section}.ping_interval"),
            "ping_interval and ping_timeout must be above zero",
        ));
    }
    if e.max_payload < 1024 {
        return Err(ConfigError::invalid(
            format!("{section}.max_payload"),
            "must be at least 1024 bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_protocol_is_off_by_default_and_refuses_an_empty_pattern() {
        let config = Config::default();
        assert!(!config.cross_protocol.enabled);
        assert!(config.cross_protocol.rooms.is_empty());
        let config = Config {
            cross_protocol: CrossProtocolConfig {
                enabled: true,
                rooms: vec!["mixed-*".into(), String::new()],
            },
            ..Config::default()
        };
        let err = config.validate().expect_err("an empty pattern is refused");
        assert!(err.to_string().contains("cross_protocol.rooms"), "{err}");
    }

    fn load(file: Option<&str>, env: &[(&str, &str)], sets: &[&str]) -> Result<Config, String> {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join("gateway.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let result = Config::load(Source::Optional(&path), env, &sets).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[test]
    fn defaults_match_the_original_deployment() {
        let c = load(None, &[], &[]).expect("defaults load");
        assert_eq!(c.webrtcroom.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(c.webrtcroom.tls, Tls::SelfSigned);
        assert_eq!(c.webrtcroom.namespace, "/");
        assert_eq!(c.webrtcroom.engine.ping_timeout, Duration::from_secs(5));
    }

    #[test]
    fn env_beats_file_and_flags_beat_env() {
        let file = "[webrtcroom]\nlisten = \"127.0.0.1:1000\"\nmax_room_size = 3\n";
        let c = load(
            Some(file),
            &[
                ("GATEWAY_WEBRTCROOM__LISTEN", "127.0.0.1:18443"),
                ("GATEWAY_WEBRTCROOM__TLS", "off"),
                ("GATEWAY_WEBRTCROOM__MAX_ROOM_SIZE", "5"),
            ],
            &["webrtcroom.max_room_size=7"],
        )
        .expect("loads");
        assert_eq!(c.webrtcroom.listen.to_string(), "127.0.0.1:18443");
        assert_eq!(c.webrtcroom.tls, Tls::Off);
        assert_eq!(c.webrtcroom.max_room_size, 7);
    }

    #[test]
    fn tls_files_must_hold_pem() {
        let file = "[webrtcroom]\ntls = { cert = \"/dev/null\", key = \"/dev/null\" }\n";
        let err = load(Some(file), &[], &[]).expect_err("empty files");
        assert!(err.contains("webrtcroom.tls.cert"), "{err}");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let dir = std::env::temp_dir().join(format!("gw-pem-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).expect("write cert");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
        let file = format!(
            "[webrtcroom]\ntls = {{ cert = {:?}, key = {:?} }}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        let c = load(Some(&file), &[], &[]).expect("loads");
        assert!(matches!(c.webrtcroom.tls, Tls::Files { .. }));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[webrtcroom]\nlisten = \"nowhere\"\n", "listen"),
            ("[webrtcroom]\nlistn = \"127.0.0.1:1\"\n", "listn"),
            ("[webrtcroom]\ntls = \"maybe\"\n", "tls"),
            (
                "[webrtcroom]\ntls = { cert = \"/no/such/cert.pem\", key = \"/no/such/key.pem\" }\n",
                "webrtcroom.tls.cert",
            ),
            ("[webrtcroom]\nnamespace = \"chat\"\n", "webrtcroom.namespace"),
            ("[webrtcroom.engine]\nping_interval = \"soon\"\n", "webrtcroom.engine.ping_interval"),
            ("[chatroom.engine]\nws_read_buffer = 100\n", "chatroom.engine.ws_read_buffer"),
            ("[webrtcroom.engine]\nsend_buffer = 0\n", "webrtcroom.engine.send_buffer"),
            ("[nonsense]\nx = 1\n", "nonsense"),
        ];
        for (file, key) in cases {
            let err = load(Some(file), &[], &[]).expect_err(file);
            assert!(err.contains(key), "error {err:?} should name {key}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn shared_listener_needs_distinct_namespaces() {
        let same = "[webrtcroom]\nlisten = \"127.0.0.1:7000\"\ntls = \"off\"\n[chatroom]\nlisten = \"127.0.0.1:7000\"\n";
        let err = load(Some(same), &[], &[]).expect_err("clash");
        assert!(err.contains("chatroom.namespace"), "{err}");
        let err =
            load(Some(&format!("{same}namespace = \"/chat\"\n")), &[], &[]).expect_err("engine");
        assert!(err.contains("chatroom.engine"), "{err}");
        let ok = format!("{same}namespace = \"/chat\"\n[chatroom.engine]\nping_timeout = \"5s\"\n");
        let c = load(Some(&ok), &[], &[]).expect("distinct namespaces share an address");
        assert_eq!(c.chatroom.namespace, "/chat");
        let tls = "[webrtcroom]\nlisten = \"127.0.0.1:7000\"\n[chatroom]\nlisten = \"127.0.0.1:7000\"\nnamespace = \"/c\"\n";
        let err = load(Some(tls), &[], &[]).expect_err("tls differs");
        assert!(err.contains("chatroom.tls"), "{err}");
    }

    #[test]
    fn chatroom_defaults_match_the_original() {
        let c = load(None, &[], &[]).expect("defaults");
        assert_eq!(c.chatroom.listen.to_string(), "0.0.0.0:3000");
        assert_eq!(c.chatroom.grace(), Duration::from_secs(15));
        assert_eq!(c.chatroom.tls, Tls::Off);
        let c = load(None, &[("GATEWAY_CHATROOM__RECONNECT_GRACE", "2s")], &[]).expect("env");
        assert_eq!(c.chatroom.grace(), Duration::from_secs(2));
    }

    #[test]
    fn protocol_limits_override_the_global_ones() {
        let file = "[limits]\nrate = 10\nburst = 20\n[chatroom.limits]\nrate = 5\n";
        let c = load(Some(file), &[], &[]).expect("loads");
        let chat = c.limits.with(&c.chatroom.limits);
        assert_eq!((chat.rate, chat.burst), (5.0, 20.0));
        let web = c.limits.with(&c.webrtcroom.limits);
        assert_eq!((web.rate, web.burst), (10.0, 20.0));
        let err = load(Some("[chatroom.limits]\nrate = 0\n"), &[], &[]).expect_err("zero rate");
        assert!(err.contains("chatroom.limits.rate"), "{err}");
    }

    #[test]
    fn access_settings_are_checked() {
        let cases = [
            ("[admin]\ntoken = \"\"\n", "admin.token"),
            ("[admin]\nlisten = \"0.0.0.0:9090\"\n", "admin.listen"),
            (
                "[chatroom]\nallowed_origins = [\"example.com\"]\n",
                "chatroom.allowed_origins",
            ),
            ("[chatroom.token]\nrequired = true\n", "chatroom.token"),
            ("[webrtcroom.token]\nsecret = \"\"\n", "webrtcroom.token"),
            (
                "[webrtcroom.token]\npublic_key_file = \"/dev/null\"\n",
                "webrtcroom.token",
            ),
            ("[turn]\nsecret = \"s\"\n", "turn.uris"),
            (
                "[turn]\nsecret = \"s\"\nuris = [\"http://x\"]\n",
                "turn.uris",
            ),
        ];
        for (file, key) in cases {
            let err = load(Some(file), &[], &[]).expect_err(file);
            assert!(err.contains(key), "error {err:?} should name {key}");
        }
        let ok = "[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"t0p\"\n[turn]\nsecret = \"sh\"\nuris = [\"turn:127.0.0.1:3478\"]\n[chatroom.token]\nsecret = \"k3y\"\nrequired = true\n";
        let c = load(Some(ok), &[], &[]).expect("loads");
        let shown = c.to_toml();
        for secret in ["t0p", "\"sh\"", "k3y"] {
            assert!(!shown.contains(secret), "{secret} printed: {shown}");
            assert!(!format!("{c:?}").contains(secret), "{secret} in Debug");
        }
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn per_source_limits_load_override_and_validate() {
        let file = "[limits]\nmax_connections_per_ip = 100\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
                    [chatroom.limits]\nhandshake_timeout = \"3s\"\ntrusted_proxies = []\n";
        let c = load(Some(file), &[], &["limits.connect_rate=5"]).expect("loads");
        let chat = c.limits.with(&c.chatroom.limits);
        assert_eq!(chat.handshake_timeout, Duration::from_secs(3));
        assert!(chat.trusted_proxies.is_empty());
        assert_eq!((chat.max_connections_per_ip, chat.connect_rate), (100, 5.0));
        let web = c.limits.with(&c.webrtcroom.limits);
        assert_eq!(web.handshake_timeout, Duration::from_secs(10));
        assert_eq!(web.trusted_proxies.len(), 1);
        let err =
            load(None, &[], &["limits.trusted_proxies=[\"10.0.0.0/40\"]"]).expect_err("bad prefix");
        assert!(err.contains("limits.trusted_proxies"), "{err}");
        let err = load(None, &[], &["webrtcroom.limits.connect_burst=0"]).expect_err("burst 0");
        assert!(err.contains("webrtcroom.limits.connect_burst"), "{err}");
    }

    #[test]
    fn bad_env_value_names_the_key() {
        let err = load(None, &[("GATEWAY_WEBRTCROOM__LISTEN", "x")], &[]).expect_err("bad");
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn both_protocols_share_one_shape_with_their_own_defaults() {
        let c = load(None, &[], &[]).expect("defaults");
        assert_eq!(c.webrtcroom.listen.port(), 8443);
        assert_eq!(c.chatroom.listen.port(), 3000);
        assert_eq!(c.webrtcroom.reconnect_grace, None);
        let c = load(Some("[chatroom]\nreconnect_grace = \"0s\"\n"), &[], &[]).expect("loads");
        assert_eq!(c.chatroom.grace(), Duration::ZERO);
        let err = load(Some("[webrtcroom]\nreconnect_grace = \"5s\"\n"), &[], &[])
            .expect_err("WebRtcRoom has no reconnect");
        assert!(err.starts_with("webrtcroom.reconnect_grace:"), "{err}");
    }

    #[test]
    fn a_syntax_error_is_one_line_with_its_position() {
        let err = load(Some("[webrtcroom]\nlisten = \"127.0.0.1:1\n"), &[], &[]).expect_err("bad");
        assert!(!err.contains('\n'), "one line: {err:?}");
        assert!(err.contains("gateway.toml:2:"), "file:line:column: {err:?}");
    }

    #[test]
    fn every_unknown_key_is_reported() {
        let file = "[webrtcroom]\nlistn = 1\nfoo = 2\n[admin]\nbar = 1\n";
        let err = load(
            Some(file),
            &[("GATEWAY_CHATROOM__NOPE", "1")],
            &["limits.rat=3"],
        )
        .expect_err("unknown keys");
        for key in [
            "webrtcroom.listn",
            "webrtcroom.foo",
            "admin.bar",
            "chatroom.nope",
            "limits.rat",
        ] {
            assert!(err.contains(key), "error {err:?} should name {key}");
        }
        assert!(!err.contains("``"), "no doubled backticks: {err:?}");
        assert!(
            err.contains("environment variable") && err.contains("--set"),
            "{err}"
        );
    }

    #[test]
    fn invalid_settings_say_where_they_came_from() {
        let file =
            "[webrtcroom]\ntls = { cert = \"/no/such/cert.pem\", key = \"/no/such/key.pem\" }\n";
        let err = load(Some(file), &[], &[]).expect_err("missing cert");
        assert!(err.contains("webrtcroom.tls.cert"), "{err}");
        assert!(
            err.contains("(from ") && err.contains("gateway.toml"),
            "{err}"
        );
        let err = load(None, &[], &["chatroom.namespace=chat"]).expect_err("namespace");
        assert!(err.contains("(from --set flag)"), "{err}");
    }

    #[test]
    fn log_level_must_be_a_level_or_target_directives() {
        for bad in ["verbose", "info,verbose", "signal_gateway=loud"] {
            let err = load(None, &[], &[&format!("log.level={bad}")]).expect_err(bad);
            assert!(err.contains("log.level"), "{err}");
        }
        for good in ["info", "WARN", "signal_gateway=debug,info", "off"] {
            load(None, &[], &[&format!("log.level={good}")]).expect(good);
        }
    }

    #[test]
    fn durations_take_short_and_long_forms() {
        for (text, secs) in [
            ("15s", 15),
            ("15 seconds", 15),
            ("1m 30s", 90),
            ("2min", 120),
        ] {
            let c = load(None, &[], &[&format!("shutdown.grace={text}")]).expect(text);
            assert_eq!(c.shutdown.grace, Duration::from_secs(secs), "{text}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_every_output() {
        let c = load(Some("[admin]\ntoken = \"s3cret-value\"\n"), &[], &[]).expect("loads");
        assert_eq!(
            c.admin.token.as_ref().map(|t| t.expose()),
            Some("s3cret-value")
        );
        let shown = c.to_toml();
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("token = \"<redacted>\""), "{shown}");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret-value"), "{debug}");
    }
}
