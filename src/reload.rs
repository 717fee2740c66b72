//! SIGHUP: read renewed certificate files again, without dropping anyone.
//!
//! Certificates from Let's Encrypt and the like are renewed every few weeks; the renewal hook
//! sends SIGHUP (`systemctl reload signal-gateway`), and every listener with certificate files
//! uses the new ones for its next handshakes while open sessions go on. A file that cannot be
//! read leaves that listener on its old certificate, and the error is logged.

use axum_server::tls_rustls::RustlsConfig;

use crate::config::Tls;
use crate::endpoints::tls;

/// A listener whose certificate can be read again.
pub struct Reloadable {
    /// The listener's name, for logs.
    pub name: String,
    /// The settings the server uses for new handshakes.
    pub live: RustlsConfig,
    /// Where the certificate comes from.
    pub tls: Tls,
    /// The configuration key of `tls`, for error messages.
    pub key_name: String,
}

/// Reloads `targets` on every SIGHUP until the process ends. (Installed even with nothing to
/// reload, so that a stray SIGHUP never stops the gateway.)
pub fn on_sighup(targets: Vec<Reloadable>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use anyhow::Context;
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                reload_all(&targets);
            }
        });
    }
    #[cfg(not(unix))]
    drop(targets);
    Ok(())
}

fn reload_all(targets: &[Reloadable]) {
    if !targets.iter().any(|t| matches!(t.tls, Tls::Files { .. })) {
        tracing::info!("SIGHUP received: no certificate files to reload");
    }
    for t in targets {
        let Tls::Files { cert, .. } = &t.tls else {
            continue;
        };
        match tls::reload(&t.live, &t.tls, &t.key_name) {
            Ok(()) => {
                tracing::info!(listener = %t.name, cert = %cert.display(), "SIGHUP: certificate reloaded")
            }
            Err(e) => {
                tracing::error!(listener = %t.name, error = %format!("{e:#}"), "SIGHUP: certificate not reloaded, keeping the old one")
            }
        }
    }
}
