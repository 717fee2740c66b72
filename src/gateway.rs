//! Starting and stopping the whole gateway: every endpoint, the admin listener, and a
//! graceful shutdown on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::access::origin::OriginGuard;
use crate::access::{tokens_for, turn};
use crate::adapters::chatroom::Chatroom;
use crate::adapters::deliver::Inlets;
use crate::adapters::mixed::CrossProtocol;
use crate::adapters::webrtcroom::WebRtcRoom;
use crate::adapters::{Bound, Reach, Realm, Stores};
use crate::admin::{self, AdminState};
use crate::cluster::runtime::Node;
use crate::cluster::sessions::Directory;
use crate::cluster::supervisor::{self, Event};
use crate::config::{same_address, Config, TokenConfig};
use crate::endpoints::descriptors::{self, Budget, FdLimit};
use crate::endpoints::forward::Forwarder;
use crate::endpoints::{self, demo, home, listener, Endpoint, Listener, StaticFiles, Timeouts};
use crate::reload::Reloadable;
use crate::store::SharedRooms;

/// Runs the gateway until `stop` resolves, then shuts down gracefully.
pub async fn run(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = admin::install_metrics()?;
    let ready = Arc::new(AtomicBool::new(false));
    let node = join_cluster(&config).await?;
    let stores = match &node {
        Some(node) => Stores::shared(
            node.conn.clone(),
            &config.cluster.name,
            node.id.clone(),
            node.link.clone(),
        ),
        None => Stores::in_memory(),
    }
    .with_cross_protocol(CrossProtocol::from_config(&config.cross_protocol));

    let mut realms: Vec<Arc<dyn Realm>> = Vec::new();
    let mut listeners: Vec<Planned> = Vec::new();
    let directory = node
        .as_ref()
        .map(|n| Directory::new(n.conn.clone(), &config.cluster.name, n.id.clone()));
    let mut reloadable = Vec::new();
    for (endpoint, mounts) in plan(&config) {
        let what = endpoint
            .namespaces
            .iter()
            .zip(&mounts)
            .map(|(ns, m)| format!("{} on namespace {ns:?}", m.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let alone = mounts.len() == 1;
        let serves_root = endpoint.static_files.is_some();
        let demos: Vec<&str> = mounts
            .iter()
            .filter(|m| m.demo(&config))
            .map(|m| m.name())
            .collect();
        let (tls, key_name) = endpoint.tls.clone();
        let forward = match &directory {
            Some(directory) => {
                Some(Forwarder::new(directory.clone(), &endpoint.name, ENGINE_PATH).await?)
            }
            None => None,
        };
        let listener = endpoints::build_with_forwarding(endpoint, forward.clone(), |io| {
            // One `/turn` per listener; on a shared listener the first protocol with tokens
            // guards it.
            let guarded = mounts
                .iter()
                .find_map(|m| tokens_for(m.name(), m.token(&config)).map(|t| (m.name(), Some(t))));
            let first = mounts.first().map_or("gateway", |m| m.name());
            let (name, tokens) = guarded.unwrap_or((first, None));
            let mut routes = turn::routes(name, &config.turn, tokens);
            let mut served = Vec::new();
            for mount in &mounts {
                let (bound, namespace) = mount.bind(io, &config, &stores);
                realms.push(bound.realm);
                routes = routes.merge(bound.routes);
                let name = mount.name();
                let demo = mount.demo(&config);
                if demo {
                    routes = routes.merge(demo::routes(&format!("/demo/{name}"), name, namespace));
                    if alone {
                        routes = routes.merge(demo::routes("/demo", name, namespace));
                    }
                }
                served.push(home::Served {
                    name,
                    namespace: namespace.to_owned(),
                    demo,
                });
            }
            if !serves_root {
                routes = routes.merge(home::routes(&served));
            }
            routes
        })?;
        let links = demos
            .iter()
            .map(|name| format!("demo {{url}}/demo/{name}/"))
            .collect();
        if let Some(live) = listener.tls() {
            reloadable.push(Reloadable {
                name: listener.name.clone(),
                live,
                tls,
                key_name,
            });
        }
        listeners.push((listener, what, links, forward));
    }
    crate::reload::on_sighup(reloadable)?;

    // Bind every listener before serving any: a taken port stops the start with nothing served.
    let mut bound = Vec::new();
    for (listener, what, links, forward) in listeners {
        let socket = listener::bind(&listener.listen_key, listener.listen)?;
        if let Some(forward) = forward {
            // How the other nodes reach this listener, to forward its sessions' requests.
            let addr = local_addr(&socket, listener.listen);
            let url = config.cluster.advertised_url(listener.scheme(), addr);
            forward
                .advertise(&url)
                .await
                .with_context(|| format!("cluster: advertising {url}"))?;
        }
        bound.push((listener, what, links, socket));
    }
    let admin_socket = if config.admin.enabled {
        Some(listener::bind("admin.listen", config.admin.listen)?)
    } else {
        None
    };

    if let Some(node) = &node {
        run_cluster(node, &stores, directory.clone()).await?;
    }
    let fds = raise_fd_limit(&config);
    let timeouts = Timeouts {
        header: config.limits.header_timeout,
        idle: config.limits.idle_timeout,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let budget = Budget::new("protocols", fds.budget());
    let mut tasks = JoinSet::new();
    let mut ios: Vec<SocketIo> = Vec::new();
    for (listener, what, links, socket) in bound {
        ios.push(listener.io.clone());
        let scheme = listener.scheme();
        let name = listener.name.clone();
        let addr = local_addr(&socket, listener.listen);
        tasks.spawn(listener.serve(socket, timeouts, budget.clone(), stop_rx.clone()));
        announce(&name, scheme, addr, &what, &links);
    }
    if let Some(socket) = admin_socket {
        let app = admin::router(AdminState::new(
            metrics,
            ready.clone(),
            realms.clone(),
            config.admin.token.clone(),
            node.as_ref().map(|n| n.status.clone()),
        ));
        let app = admin::host_check::guard(app, &config.admin.allowed_hosts);
        let addr = local_addr(&socket, config.admin.listen);
        let how = listener::Serve {
            name: "admin".into(),
            router: app,
            tls: None,
            timeouts,
            budget: Budget::new("admin", descriptors::ADMIN_CONNECTIONS),
        };
        tasks.spawn(listener::serve(socket, how, stop_rx.clone()));
        announce(
            "admin",
            "http",
            addr,
            "/healthz /readyz /metrics /api/rooms",
            &["dashboard {url}/".to_owned()],
        );
    }
    ready.store(true, Ordering::Release);
    crate::memory::release_after_peaks(realms.clone());

    tokio::select! {
        _ = stop => {}
        Some(result) = tasks.join_next() => {
            // A listener ended on its own: that is a failure.
            result.context("listener task")?;
            anyhow::bail!("a listener stopped serving");
        }
    }
    if node.is_some() {
        for io in &ios {
            crate::adapters::depart_all(io);
        }
    }
    shut_down(config.shutdown.grace, &realms, ios, stop_tx, tasks).await;
    if let Some(node) = &node {
        // Every connection's departure is written and told to its peers' nodes before this
        // node leaves; what is still open then is taken over by the others.
        if !crate::adapters::drained(Duration::from_secs(5)).await {
            tracing::warn!("cluster: some departures were not handled before leaving");
        }
        if !node.link.flushed(Duration::from_secs(2)).await {
            tracing::warn!("cluster: some messages to other nodes were not sent before leaving");
        }
        node.leave().await;
        if let Some(directory) = &directory {
            if let Err(e) = directory.forget_node(node.id.as_str()).await {
                tracing::warn!(error = %e, "cluster: forgetting this node's listeners");
            }
        }
    }
    Ok(())
}

/// A listener built and not yet bound: what it serves (for the start-up line), the pages to
/// link, and its forwarding of other nodes' sessions (cluster mode).
type Planned = (Listener, String, Vec<String>, Option<Arc<Forwarder>>);

/// Where Engine.IO requests start on every listener (socketioxide's default).
const ENGINE_PATH: &str = "/socket.io";

/// Joins the cluster when `cluster.redis_url` is set.
async fn join_cluster(config: &Config) -> anyhow::Result<Option<Node>> {
    if !config.cluster.enabled() {
        return Ok(None);
    }
    let first = [
        (config.webrtcroom.enabled, config.webrtcroom.listen),
        (config.chatroom.enabled, config.chatroom.listen),
    ]
    .into_iter()
    .find_map(|(enabled, listen)| enabled.then_some(listen));
    let advertise = first
        .map(|listen| config.cluster.advertised(listen))
        .unwrap_or_default();
    Node::join(&config.cluster, advertise).await.map(Some)
}

/// Cluster mode: starts this node's supervisor and inbox over the realms the adapters opened,
/// and the two loops that consume them: messages from other nodes are delivered into the
/// realms; departures found by the supervisor (grace ended, node died) are told to their
/// peers; after Redis lost this node's members, they are put back.
async fn run_cluster(
    node: &Node,
    stores: &Stores,
    directory: Option<Directory>,
) -> anyhow::Result<()> {
    let opened = stores.opened();
    let mut inlets = Inlets::default();
    let mut realms = Vec::new();
    let mut by_name: HashMap<&'static str, Arc<SharedRooms<Reach>>> = HashMap::new();
    for o in &opened {
        inlets.add(o.protocol, o.rooms.clone(), o.events);
        // A realm both protocols share (cross-protocol rooms) is supervised once, with the
        // longer grace: its chatroom members may come back, and its expiry must run.
        match realms
            .iter_mut()
            .find(|r: &&mut supervisor::Realm| r.name == o.rooms.realm())
        {
            Some(r) => r.grace = r.grace.max(o.grace),
            None => realms.push(supervisor::Realm {
                name: o.rooms.realm(),
                store: o.redis.clone(),
                grace: o.grace,
            }),
        }
        by_name.insert(o.rooms.realm(), o.rooms.clone());
    }
    let (mut inbox, mut events) = node.run(realms).await?;
    tokio::spawn(async move {
        while let Some(envelope) = inbox.recv().await {
            inlets.receive(&envelope.payload);
        }
    });
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Left { realm, departure } | Event::Expired { realm, departure } => {
                    if let Some(rooms) = by_name.get(realm) {
                        rooms.departed(departure);
                    }
                }
                Event::Away {
                    realm,
                    member,
                    room,
                } => {
                    tracing::info!(realm, %member, %room, "cluster: member of a dead node is away until its grace ends");
                }
                Event::Forgotten { node } => {
                    if let Some(directory) = &directory {
                        if let Err(e) = directory.forget_node(&node).await {
                            tracing::warn!(%node, error = %e, "cluster: forgetting a dead node's listeners");
                        }
                    }
                }
                Event::Reregistered => {
                    for rooms in by_name.values() {
                        let n = rooms.restore().await;
                        tracing::warn!(
                            realm = rooms.realm(),
                            restored = n,
                            "cluster: this node was registered again; its members were put back"
                        );
                    }
                }
            }
        }
    });
    Ok(())
}

/// Raises the descriptor limit to what every protocol's `max_connections` needs, and says so
/// when the hard limit does not allow it.
fn raise_fd_limit(config: &Config) -> FdLimit {
    let per_protocol = [
        (config.webrtcroom.enabled, &config.webrtcroom.limits),
        (config.chatroom.enabled, &config.chatroom.limits),
    ];
    let mut needed = Some(descriptors::RESERVED);
    for (enabled, overrides) in per_protocol {
        let max = config.limits.with(overrides).max_connections;
        if enabled {
            needed = match max {
                0 => None,
                n => needed.map(|total| total.saturating_add(n as u64)),
            };
        }
    }
    match descriptors::raise_limit(needed) {
        Ok(fds) => {
            if let Some(n) = fds.needed.filter(|n| *n > fds.soft) {
                tracing::warn!(
                    "file descriptor limit {} (hard {}) is below the {n} that limits.max_connections need; \
                     at most {} connections are served at once (raise the hard limit, e.g. LimitNOFILE=)",
                    fds.soft,
                    fds.hard,
                    fds.budget()
                );
            }
            fds
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the file descriptor limit; assuming 1024");
            FdLimit {
                soft: 1024,
                hard: 1024,
                needed,
            }
        }
    }
}

/// The address a listener really got (port 0 asks for a fresh one).
fn local_addr(socket: &TcpListener, requested: SocketAddr) -> SocketAddr {
    socket.local_addr().unwrap_or(requested)
}

/// Stops accepting, tells every client the server is closing, and waits at most `grace`.
async fn shut_down(
    grace: Duration,
    realms: &[Arc<dyn Realm>],
    ios: Vec<SocketIo>,
    stop_listeners: watch::Sender<bool>,
    mut tasks: JoinSet<()>,
) {
    for realm in realms {
        let (rooms, members) = realm.sizes();
        let connections: usize = realm.connections().iter().map(|(_, n)| n).sum();
        tracing::info!(
            protocol = realm.name(),
            connections,
            rooms,
            members,
            "shutting down: closing what is open"
        );
    }
    let _ = stop_listeners.send(true);
    let close_all = async {
        for io in ios {
            io.close().await;
        }
        while tasks.join_next().await.is_some() {}
    };
    match tokio::time::timeout(grace, close_all).await {
        Ok(()) => tracing::info!("stopped cleanly"),
        Err(_) => tracing::warn!(
            ?grace,
            "stopped with connections still open after the grace period"
        ),
    }
}

/// A protocol bound to an endpoint.
#[derive(Debug, Clone, Copy)]
enum Mount {
    WebRtcRoom,
    Chatroom,
}

impl Mount {
    fn name(self) -> &'static str {
        match self {
            Mount::WebRtcRoom => "webrtcroom",
            Mount::Chatroom => "chatroom",
        }
    }

    /// Binds the protocol's adapter to `io`; returns it and its namespace.
    fn bind<'c>(self, io: &SocketIo, config: &'c Config, stores: &Stores) -> (Bound, &'c str) {
        let labels = match self {
            Mount::WebRtcRoom => &crate::adapters::webrtcroom::LABELS,
            Mount::Chatroom => &crate::adapters::chatroom::LABELS,
        };
        crate::stats::register(self.name(), &[&crate::adapters::SHARED_LABELS, labels]);
        match self {
            Mount::WebRtcRoom => {
                let w = &config.webrtcroom;
                let limits = config.limits.with(&w.limits);
                (WebRtcRoom::bind(io, w, limits, stores), &w.namespace)
            }
            Mount::Chatroom => {
                let c = &config.chatroom;
                let limits = config.limits.with(&c.limits);
                (Chatroom::bind(io, c, limits, stores), &c.namespace)
            }
        }
    }

    /// The protocol's `allowed_origins` and `require_origin`.
    fn origins(self, config: &Config) -> (&[String], bool) {
        match self {
            Mount::WebRtcRoom => (
                &config.webrtcroom.allowed_origins,
                config.webrtcroom.require_origin,
            ),
            Mount::Chatroom => (
                &config.chatroom.allowed_origins,
                config.chatroom.require_origin,
            ),
        }
    }

    /// The protocol's `[<protocol>.token]`.
    fn token(self, config: &Config) -> &TokenConfig {
        match self {
            Mount::WebRtcRoom => &config.webrtcroom.token,
            Mount::Chatroom => &config.chatroom.token,
        }
    }

    fn demo(self, config: &Config) -> bool {
        match self {
            Mount::WebRtcRoom => config.webrtcroom.demo,
            Mount::Chatroom => config.chatroom.demo,
        }
    }
}

/// Groups the enabled protocols by listen address (validation made sure that protocols
/// sharing an address agree on TLS and transport settings).
fn plan(config: &Config) -> Vec<(Endpoint, Vec<Mount>)> {
    let w = &config.webrtcroom;
    let c = &config.chatroom;
    let mut planned: Vec<(Endpoint, Vec<Mount>)> = Vec::new();
    let candidates = [
        (
            config.limits.with(&w.limits),
            w.enabled,
            Mount::WebRtcRoom,
            w.listen,
            &w.tls,
            &w.static_dir,
            false,
            &w.engine,
            &w.namespace,
        ),
        (
            config.limits.with(&c.limits),
            c.enabled,
            Mount::Chatroom,
            c.listen,
            &c.tls,
            &c.static_dir,
            true,
            &c.engine,
            &c.namespace,
        ),
    ];
    for (limits, enabled, mount, listen, tls, dir, spa, engine, ns) in candidates {
        if !enabled {
            continue;
        }
        let files = (!dir.as_os_str().is_empty()).then(|| StaticFiles {
            dir: dir.clone(),
            spa,
        });
        if let Some((endpoint, mounts)) = planned
            .iter_mut()
            .find(|(e, _)| same_address(e.listen, listen))
        {
            endpoint.name = format!("{}+{}", endpoint.name, mount.name());
            endpoint.namespaces.push(ns.clone());
            endpoint.static_files = endpoint.static_files.take().or(files);
            mounts.push(mount);
            continue;
        }
        let (origins, require_origin) = mount.origins(config);
        let origins = OriginGuard::new(mount.name(), origins, require_origin).unwrap_or_else(|e| {
            // Validated at load; refuse every origin rather than allow all if it fails now.
            tracing::error!(protocol = mount.name(), error = %e, "allowed_origins unusable: refusing browsers");
            OriginGuard::new(mount.name(), &["none://refuse-all".into()], true).ok().flatten()
        });
        let endpoint = Endpoint {
            origins,
            name: mount.name().into(),
            listen,
            listen_key: format!("{}.listen", mount.name()),
            tls: (tls.clone(), format!("{}.tls", mount.name())),
            static_files: files,
            engine: engine.clone(),
            namespaces: vec![ns.clone()],
            limits,
        };
        planned.push((endpoint, vec![mount]));
    }
    planned
}

/// Prints where a listener is reachable, once, on one line: `<name> listening on <url>
/// (<what>)` (what tests read to find ephemeral ports), then the pages to open, each of
/// `links` with `{url}` replaced by a URL a browser on this machine can open.
fn announce(name: &str, scheme: &str, addr: SocketAddr, what: &str, links: &[String]) {
    let url = format!("{scheme}://{addr}");
    let local = if addr.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", addr.port())
    } else {
        url.clone()
    };
    let mut line = format!("{name} listening on {url} ({what})");
    for link in links {
        line.push_str("; ");
        line.push_str(&link.replace("{url}", &local));
    }
    println!("{line}");
}
