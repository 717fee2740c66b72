//! Starting and stopping the whole gateway: every endpoint, the admin listener, and a
//! graceful shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum_server::Handle;
use tokio::task::JoinSet;

use crate::adapters::chatroom::Chatroom;
use crate::adapters::webrtcroom::WebRtcRoom;
use crate::admin::{self, AdminState};
use crate::config::{same_address, Config};
use crate::endpoints::{self, demo, Endpoint, Listener, StaticFiles};

/// Runs the gateway until `stop` resolves, then shuts down gracefully.
pub async fn run(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = admin::install_metrics()?;
    let ready = Arc::new(AtomicBool::new(false));

    let mut listeners: Vec<(Listener, String)> = Vec::new();
    for (endpoint, mounts) in plan(&config) {
        let what = endpoint
            .namespaces
            .iter()
            .zip(&mounts)
            .map(|(ns, m)| format!("{} on namespace {ns:?}", m.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let alone = mounts.len() == 1;
        let listener = endpoints::build(endpoint, |io| {
            mounts.iter().fold(Router::new(), |routes, mount| {
                let (routes, demo, namespace) = match mount {
                    Mount::WebRtcRoom => {
                        let w = &config.webrtcroom;
                        WebRtcRoom::bind(io, w);
                        (routes, w.demo, &w.namespace)
                    }
                    Mount::Chatroom => {
                        let c = &config.chatroom;
                        (routes.merge(Chatroom::bind(io, c)), c.demo, &c.namespace)
                    }
                };
                if !demo {
                    return routes;
                }
                let name = mount.name();
                let routes = routes.merge(demo::routes(&format!("/demo/{name}"), name, namespace));
                if alone {
                    routes.merge(demo::routes("/demo", name, namespace))
                } else {
                    routes
                }
            })
        })?;
        listeners.push((listener, what));
    }

    let mut tasks = JoinSet::new();
    let mut handles = Vec::new();
    let mut ios = Vec::new();
    for (listener, what) in listeners {
        let handle: Handle<SocketAddr> = Handle::new();
        handles.push(handle.clone());
        ios.push(listener.io.clone());
        let scheme = listener.scheme();
        let name = listener.name.clone();
        let h = handle.clone();
        tasks.spawn(listener.serve(h));
        let addr = handle
            .listening()
            .await
            .with_context(|| format!("{name}: could not bind"))?;
        announce(&name, scheme, addr, &what);
    }
    if config.admin.enabled {
        let handle: Handle<SocketAddr> = Handle::new();
        handles.push(handle.clone());
        let app = admin::router(AdminState {
            metrics,
            ready: ready.clone(),
        });
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
        announce("admin", "http", addr, "/healthz /readyz /metrics");
    }
    ready.store(true, Ordering::Release);

    tokio::select! {
        _ = stop => {}
        Some(result) = tasks.join_next() => {
            // A listener ended on its own: that is a failure (e.g. the address went away).
            result.context("listener task")??;
        }
    }

    let grace = config.shutdown.grace;
    tracing::info!(?grace, "stopping: closing every connection");
    for io in &ios {
        let open = io.sockets().len();
        tracing::info!(open, "closing sockets");
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
    if tokio::time::timeout(grace + std::time::Duration::from_secs(1), close_all)
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed with connections still open");
    }
    tracing::info!("stopped");
    Ok(())
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

/// Prints where a listener is reachable (also what tests read to find ephemeral ports).
fn announce(name: &str, scheme: &str, addr: SocketAddr, what: &str) {
    let url = format!("{scheme}://{addr}");
    println!("{name} listening on {url} ({what})");
    if addr.ip().is_unspecified() {
        println!("{name}   reachable as {scheme}://localhost:{}", addr.port());
    }
    tracing::info!(%name, %url, "listening");
}
