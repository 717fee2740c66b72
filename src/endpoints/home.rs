//! `GET /` on a protocol port: a small page saying what the address serves.
//!
//! People open the bare address in a browser, to accept a self-signed certificate or to
//! check that the gateway is up; an empty 404 there looks like a fault. The page names the
//! protocols served and links their demo pages. It is not added when `static_dir` serves `/`.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

/// One protocol served on the address, as the page describes it.
pub struct Served {
    /// Protocol name, e.g. `webrtcroom`.
    pub name: &'static str,
    /// Its Socket.IO namespace.
    pub namespace: String,
    /// Whether its demo page is served at `/demo/<name>/`.
    pub demo: bool,
}

/// The `/` route describing `served`.
pub fn routes(served: &[Served]) -> Router {
    let page = Html(render(served));
    Router::new().route("/", get(move || async move { page.clone() }))
}

fn render(served: &[Served]) -> String {
    let items: String = served
        .iter()
        .map(|s| {
            let demo = if s.demo {
                format!(
                    " · <a href=\"/demo/{0}/\">open the {0} demo page</a>",
                    s.name
                )
            } else {
                String::new()
            };
            format!(
                "<li><b>{}</b> signalling (Socket.IO namespace <code>{}</code>){demo}</li>\n",
                s.name,
                escape(&s.namespace)
            )
        })
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>signal-gateway</title></head>\n<body style=\"font-family: sans-serif\">\n\
         <h1>signal-gateway</h1>\n<p>This address is a WebRTC signalling endpoint for apps; \
         it serves:</p>\n<ul>\n{items}</ul>\n<p>Version {}.</p>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Escapes text for HTML (a namespace is operator-chosen, but may hold `&` or `<`).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
