//! The `signal-gateway` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use signal_gateway::config::{Config, LogFormat, Source};
use tracing_subscriber::EnvFilter;

/// WebRTC signalling gateway for WebRtcRoom (socket.io 2.x) and chatroom (socket.io 4.x) apps.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file. Default: ./gateway.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Validate the configuration, print the effective settings, and exit.
    #[arg(long)]
    check_config: bool,

    /// Override one setting, e.g. `--set webrtcroom.listen=127.0.0.1:18443` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_path = PathBuf::from("gateway.toml");
    let source = match &cli.config {
        Some(p) => Source::Required(p),
        None => Source::Optional(&default_path),
    };
    let config = match Config::load(source, std::env::vars(), &cli.set) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("signal-gateway: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        print!("{}", check_report(&config, &cli, &default_path));
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("signal-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(signal_gateway::gateway::run(
        config,
        signal_gateway::shutdown::requested(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        // A listen address that cannot be bound is a setting to fix, like a config error.
        Err(e) if e.is::<signal_gateway::endpoints::listener::BindError>() => {
            eprintln!("signal-gateway: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("signal-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `--check-config` prints: where the settings came from (as TOML comments), the
/// effective settings with secrets redacted, and a last line saying all is well.
fn check_report(config: &Config, cli: &Cli, default_path: &std::path::Path) -> String {
    let mut out = String::new();
    let file = cli.config.as_deref().unwrap_or(default_path);
    let shown = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    if file.is_file() {
        out.push_str(&format!("# read {}\n", shown.display()));
    } else {
        out.push_str(&format!(
            "# no configuration file ({} does not exist): built-in defaults\n",
            file.display()
        ));
    }
    let mut vars: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("GATEWAY_"))
        .collect();
    vars.sort();
    for var in vars {
        out.push_str(&format!("# overridden by environment variable {var}\n"));
    }
    for set in &cli.set {
        let key = set.split_once('=').map_or(set.as_str(), |(k, _)| k);
        out.push_str(&format!("# overridden by --set {key}=...\n"));
    }
    out.push('\n');
    out.push_str(&config.to_toml());
    out.push_str("\n# configuration OK\n");
    out
}

fn init_logging(config: &Config) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    for directive in signal_gateway::access::log_directives(config) {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}
