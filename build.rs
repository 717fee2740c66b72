//! Bundles the Socket.IO client libraries that the demo pages use.
//!
//! The demo pages must work from the gateway alone, offline, so the libraries are compiled
//! into the binary. They come from npm (`demo/package.json`, pinned by its lock file); when
//! they are not installed yet, this runs `npm ci` in `demo/`. Without npm the build goes on
//! and the demo pages say that their client library is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

const LIBS: [(&str, &str); 2] = [
    ("socket.io-client-v2/dist/socket.io.js", "socket.io.v2.js"),
    ("socket.io-client/dist/socket.io.min.js", "socket.io.v4.js"),
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let demo = manifest.join("demo");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=demo/package.json");
    println!("cargo:rerun-if-changed=demo/package-lock.json");
    let modules = demo.join("node_modules");
    if !LIBS.iter().all(|(src, _)| modules.join(src).is_file()) {
        install(&demo);
    }
    for (src, dst) in LIBS {
        let from = modules.join(src);
        println!("cargo:rerun-if-changed={}", from.display());
        let body = std::fs::read(&from).unwrap_or_else(|_| {
            println!("cargo:warning=demo: {} is missing; the demo pages will not work", from.display());
            format!("document.body.innerHTML = '<p>This gateway was built without its demo client library ({src}). Run npm ci in demo/ and rebuild.</p>';").into_bytes()
        });
        if let Err(e) = std::fs::write(out.join(dst), body) {
            panic!("writing {}: {e}", out.join(dst).display());
        }
    }
}

fn install(demo: &Path) {
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(demo)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => println!("cargo:warning=demo: npm ci in demo/ failed ({s})"),
        Err(e) => println!(
            "cargo:warning=demo: cannot run npm ({e}); demo pages will lack their client library"
        ),
    }
}
