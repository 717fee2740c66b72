//! Endpoints: one HTTP(S) listener per configured address, each with its own Socket.IO
//! instance, the legacy-transport fixes, CORS, optional static files, and the protocol
//! adapters bound to their namespaces.

mod aborted_poll;
pub mod admission;
pub mod demo;
pub mod descriptors;
pub mod forward;
pub mod home;
mod legacy;
mod legacy_ws;
pub mod listener;
mod session_binding;
mod slim;
pub mod source;
mod timeouts;
pub mod tls;
mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, Method};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

use crate::access::origin::OriginGuard;
use crate::config::{EngineConfig, Limits, SessionBinding, Tls};
use session_binding::SessionBindings;

pub use legacy::strip_connect_queries;
pub use timeouts::Timeouts;

/// What one listen address serves.
pub struct Endpoint {
    /// Name for logs: the protocol(s) it carries.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// The config key of `listen`, for error messages.
    pub listen_key: String,
    /// TLS setting and the config key it came from (for error messages).
    pub tls: (Tls, String),
    /// Static files to serve, if any.
    pub static_files: Option<StaticFiles>,
    /// Engine.IO settings.
    pub engine: EngineConfig,
    /// Namespaces bound by adapters (to know whether `/` needs a placeholder).
    pub namespaces: Vec<String>,
    /// The origin allowlist, when one is configured.
    pub origins: Option<Arc<OriginGuard>>,
    /// Limits of the (first) protocol on the address: the per-source admission settings
    /// (`connect_rate`, `trusted_proxies`, `handshake_timeout`) apply to the whole address.
    pub limits: Limits,
}

/// A directory served next to Socket.IO on the same address.
pub struct StaticFiles {
    /// The directory.
    pub dir: PathBuf,
    /// Single-page app: unknown paths get `index.html` (client-side routing).
    pub spa: bool,
}

/// A built endpoint, ready to serve.
pub struct Listener {
    /// Name for logs.
    pub name: String,
    /// Requested address.
    pub listen: SocketAddr,
    /// The config key of `listen`, for error messages.
    pub listen_key: String,
    /// The Socket.IO instance (kept to close every socket on shutdown).
    pub io: SocketIo,
    tls: Option<RustlsConfig>,
    router: Router,
}

impl Listener {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The live TLS settings, shared with the server (for reloading certificates).
    pub fn tls(&self) -> Option<RustlsConfig> {
        self.tls.clone()
    }

    /// Serves the bound `listener` until `shutdown` turns true.
    pub async fn serve(
        self,
        listener: TcpListener,
        timeouts: timeouts::Timeouts,
        budget: Arc<descriptors::Budget>,
        shutdown: watch::Receiver<bool>,
    ) {
        let how = listener::Serve {
            name: self.name,
            router: self.router,
            tls: self.tls,
            timeouts,
            budget,
        };
        listener::serve(listener, how, shutdown).await;
    }
}

/// Builds an endpoint. `bind_adapters` binds the protocols to the Socket.IO instance and
/// returns any extra HTTP routes they serve.
pub fn build(
    endpoint: Endpoint,
    bind_adapters: impl FnOnce(&SocketIo) -> Router,
) -> anyhow::Result<Listener> {
    build_with_forwarding(endpoint, None, bind_adapters)
}

/// [`build`], in cluster mode: with `forward`, requests on polling sessions other nodes own
/// are forwarded to them and this listener's polling handshakes are registered
/// (`forward.rs`). `None` is a single node's listener, which then pays nothing for it.
/// (A parameter rather than a field of [`Endpoint`], so the single-node construction of
/// endpoints stays as it is.)
pub fn build_with_forwarding(
    endpoint: Endpoint,
    forward: Option<Arc<forward::Forwarder>>,
    bind_adapters: impl FnOnce(&SocketIo) -> Router,
) -> anyhow::Result<Listener> {
    let e = &endpoint.engine;
    let (layer, io) = SocketIo::builder()
        .ping_interval(e.ping_interval)
        .ping_timeout(e.ping_timeout)
        .max_payload(e.max_payload)
        // socketioxide applies max_payload to polling bodies only; bound WebSocket frames too.
        .ws_max_message_size(usize::try_from(e.max_payload).unwrap_or(usize::MAX))
        .ws_max_frame_size(usize::try_from(e.max_payload).unwrap_or(usize::MAX))
        .max_buffer_size(e.send_buffer)
        // An Engine.IO v4 session that never sends its Socket.IO CONNECT (an abandoned or
        // refused handshake) is closed after this long instead of socketioxide's 45 s.
        .connect_timeout(endpoint.limits.handshake_timeout)
        .ws_read_buffer_size(e.ws_read_buffer)
        .build_layer();
    let mut routes = bind_adapters(&io);
    if !endpoint.namespaces.iter().any(|ns| ns == "/") {
        // Engine.IO v3 clients are connected to `/` implicitly; socketioxide closes them if
        // `/` does not exist, even when they only want another namespace.
        io.ns("/", async || ());
    }
    if let Some(files) = &endpoint.static_files {
        let dir = ServeDir::new(&files.dir).append_index_html_on_directories(true);
        routes = if files.spa {
            let index = files.dir.join("index.html");
            routes.fallback_service(dir.fallback(ServeFile::new(index)))
        } else {
            routes.fallback_service(dir)
        };
    }
    let max_body = usize::try_from(e.max_payload).unwrap_or(usize::MAX);
    // Right in front of socketioxide: new WebSocket sessions are upgraded here and handed to
    // it as a stream (upgrade.rs). (The request head was copied out of hyper's read buffer
    // when it arrived: listener.rs.)
    let take_over = upgrade::TakeOverLayer::new(&layer, max_body, e.ws_read_buffer);
    let mut routes = routes.layer(layer).layer(take_over);
    if e.session_binding == SessionBinding::Address {
        // A polling session that stopped making requests this long is closed or upgraded.
        let expiry = (e.ping_interval + e.ping_timeout) * 2;
        let bindings = SessionBindings::new(expiry);
        routes = routes.layer(axum::middleware::from_fn(move |req: Request, next| {
            session_binding::guard(bindings.clone(), req, next)
        }));
    }
    let router = routes
        .layer(axum::middleware::map_request(move |req: Request| {
            legacy::fix_request(max_body, req)
        }))
        .layer(axum::middleware::map_response(legacy::fix_response))
        .layer(cors(endpoint.origins.clone()));
    let admission = admission::Admission::new(&endpoint.name, &endpoint.limits);
    admission.set_router(router.clone());
    let mut router = router;
    if let Some(fwd) = forward.clone() {
        // Inside admission (it resolved the client behind trusted proxies), outside every
        // fix and session binding: the owner applies them to the client's own request.
        router = router.layer(axum::middleware::from_fn(move |req: Request, next| {
            forward::route(fwd.clone(), req, next)
        }));
    }
    router = router.layer(axum::middleware::from_fn_with_state(
        admission,
        admission::layer,
    ));
    if let Some(guard) = endpoint.origins.clone() {
        // A refused origin reaches neither admission, Engine.IO nor the legacy proxy.
        router = router.layer(axum::middleware::from_fn(move |req: Request, next| {
            guard.clone().check(req, next)
        }));
    }
    if let Some(fwd) = forward.clone() {
        // Outermost: a request another node forwarded is from its client for every layer.
        router = router.layer(axum::middleware::from_fn(move |req: Request, next| {
            forward::accept(fwd.clone(), req, next)
        }));
    }
    let (tls, tls_key) = &endpoint.tls;
    let tls = tls::server_config(tls, tls_key)?;
    Ok(Listener {
        name: endpoint.name,
        listen: endpoint.listen,
        listen_key: endpoint.listen_key,
        io,
        tls,
        router,
    })
}

/// CORS for browser clients on other origins: the WebRtcRoom Html page polls cross-origin
/// with credentials, so the request's `Origin` is echoed and credentials allowed (a `*`
/// would be refused by the browser). With an allowlist, only allowed origins are echoed.
fn cors(origins: Option<Arc<OriginGuard>>) -> CorsLayer {
    let allow = match origins {
        None => AllowOrigin::mirror_request(),
        Some(guard) => AllowOrigin::predicate(move |origin, parts| {
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok());
            origin.to_str().is_ok_and(|o| guard.policy.allows(o, host))
        }),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([header::CONTENT_TYPE])
}
