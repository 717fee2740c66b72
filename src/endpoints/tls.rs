//! TLS for a listener: certificate files, or a self-signed certificate made at start.
//!
//! The WebRtcRoom apps reach their server over `https://HOST:8443` and accept any
//! certificate, so `self-signed` makes the gateway a drop-in replacement with no files to
//! prepare. Production deployments give real certificate files, which [`reload`] reads again
//! (on SIGHUP) when they are renewed.

use std::sync::Arc;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::config::{Tls, TlsMode};

/// The rustls configuration for `tls`, or `None` when TLS is off.
pub fn server_config(tls: &Tls, key_name: &str) -> anyhow::Result<Option<RustlsConfig>> {
    Ok(rustls_config(tls, key_name)?.map(RustlsConfig::from_config))
}

/// Reads `tls`'s certificate files again into `live`, which the listener uses for every new
/// handshake from then on; connections already open keep going. On error `live` is left as
/// it was. Settings without files have nothing to reload.
pub fn reload(live: &RustlsConfig, tls: &Tls, key_name: &str) -> anyhow::Result<()> {
    if let Tls::Files { .. } = tls {
        if let Some(config) = rustls_config(tls, key_name)? {
            live.reload_from_config(config);
        }
    }
    Ok(())
}

fn rustls_config(tls: &Tls, key_name: &str) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let (chain, key) = match tls {
        Tls::Mode(TlsMode::Off) => return Ok(None),
        Tls::Mode(TlsMode::SelfSigned) => self_signed()?,
        Tls::Files { cert, key } => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .with_context(|| format!("{key_name}.cert: cannot read {}", cert.display()))?;
            if chain.is_empty() {
                anyhow::bail!("{key_name}.cert: no certificate in {}", cert.display());
            }
            let private = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("{key_name}.key: cannot read {}", key.display()))?;
            (chain, private)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("{key_name}: certificate and key do not make a usable pair"))?;
    // HTTP/1.1 only: browsers and the mobile Socket.IO clients upgrade to WebSocket over it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A certificate for `localhost` and the loopback addresses, valid from now.
fn self_signed() -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let certified =
        rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    let cert = certified.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    Ok((vec![cert], PrivateKeyDer::Pkcs8(key)))
}
