//! Starting and stopping the whole gateway: every endpoint, the admin listener, and a
//! graceful shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum_server::Handle;
use socketioxide::SocketIo;
use tokio::task::JoinSet;

use crate::adapters::chatroom::Chatroom;
use crate::adapters::webrtcroom::WebRtcRoom;
use crate::adapters::{Bound, Realm};
use crate::admin::{self, AdminState};
use crate::config::{same_address, Config};
use crate::endpoints::{self, demo, home, Endpoint, Listener, StaticFiles};
use crate::reload::Reloadable;

/// Runs the gateway until `stop` resolves, then shuts down gracefully.
pub async fn run(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = admin::install_metrics()?;
    let ready = Arc::new(AtomicBool::new(false));

    let mut realms: Vec<Arc<dyn Realm>> = Vec::new();
    let mut listeners: Vec<(Listener, String, Vec<String>)> = Vec::new();
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
        let listener = endpoints::build(endpoint, |io| {
            let mut routes = Router::new();
            let mut served = Vec::new();
            for mount in &mounts {
                let (bound, namespace) = mount.bind(io, &config);
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
        listeners.push((listener, what, links));
    }
    crate::reload::on_sighup(reloadable)?;

    let mut tasks = JoinSet::new();
    let mut handles = Vec::new();
    let mut ios: Vec<SocketIo> = Vec::new();
    for (listener, what, links) in listeners {
        let handle: Handle<SocketAddr> = Handle::new();
        handles.push(handle.clone());
        ios.push(listener.io.clone());
        let scheme = listener.scheme();
        let name = listener.name.clone();
        tasks.spawn(listener.serve(handle.clone()));
        let addr = handle
            .listening()
            .await
            .with_context(|| format!("{name}: could not bind"))?;
        announce(&name, scheme, addr, &what, &links);
    }
    if config.admin.enabled {
        let handle: Handle<SocketAddr> = Handle::new();
        handles.push(handle.clone());
        let app = admin::router(AdminState::new(
            metrics,
            ready.clone(),
            realms.clone(),
            config.admin.token.as_ref().map(|t| t.expose().to_owned()),
        ));
        let listen = config.admin.listen;
        let h = handle.clone();
        tasks.spawn(async move {
            axum_server::bind(listen)
                .handle(h)
                .serve(app.into_make_service())
                .await
                .with_context(|| format!("admin: serving on {listen}"))
        });
        let addr = handle.listening().await.context("admin: could not bind")?;
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
            // A listener ended on its own: that is a failure (e.g. the address went away).
            result.context("listener task")??;
        }
    }
    shut_down(config.shutdown.grace, &realms, ios, handles, tasks).await;
    Ok(())
}

/// Stops accepting, tells every client the server is closing, and waits at most `grace`.
async fn shut_down(
    grace: Duration,
    realms: &[Arc<dyn Realm>],
    ios: Vec<SocketIo>,
    handles: Vec<Handle<SocketAddr>>,
    mut tasks: JoinSet<anyhow::Result<()>>,
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
    for handle in &handles {
        handle.graceful_shutdown(Some(grace));
    }
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
    fn bind<'c>(self, io: &SocketIo, config: &'c Config) -> (Bound, &'c str) {
        let labels = match self {
            Mount::WebRtcRoom => &crate::adapters::webrtcroom::LABELS,
            Mount::Chatroom => &crate::adapters::chatroom::LABELS,
        };
        crate::stats::register(self.name(), &[&crate::adapters::SHARED_LABELS, labels]);
        match self {
            Mount::WebRtcRoom => {
                let w = &config.webrtcroom;
                let limits = config.limits.with(&w.limits);
                (WebRtcRoom::bind(io, w, limits), &w.namespace)
            }
            Mount::Chatroom => {
                let c = &config.chatroom;
                let limits = config.limits.with(&c.limits);
                (Chatroom::bind(io, c, limits), &c.namespace)
            }
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
    for (enabled, mount, listen, tls, dir, spa, engine, ns) in candidates {
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
        let endpoint = Endpoint {
            name: mount.name().into(),
            listen,
            tls: (tls.clone(), format!("{}.tls", mount.name())),
            static_files: files,
            engine: engine.clone(),
            namespaces: vec![ns.clone()],
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
