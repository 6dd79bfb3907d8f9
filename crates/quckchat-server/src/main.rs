//! `quckchat`: serves HTTP and Socket.IO as the environment configures it (CONTRACT §1).

use std::io::Write;

use anyhow::Context;
use quckchat_server::{Config, Server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // LOG_FORMAT=json: one JSON object per line, for log shippers.
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        logs.json().init();
    } else {
        logs.init();
    }

    // `quckchat conformance`: the protocol test suites' reference server instead.
    if std::env::args().nth(1).as_deref() == Some("conformance") {
        return quckchat_server::conformance::run(shutdown_signal()).await;
    }

    let config = Config::from_env().context("reading the configuration")?;
    let server = Server::build(config).await?;
    let addr = server.local_addr();
    tracing::info!(%addr, "listening");
    // The one line on stdout: scripts and tests wait for it to know the port.
    let mut out = std::io::stdout();
    writeln!(out, "quckchat listening on http://{addr}")?;
    out.flush()?;

    server.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received Ctrl-C"),
        _ = terminate => tracing::info!("received SIGTERM"),
    }
}
