//! Serving: logs and traces set up, the server started, SIGINT or SIGTERM
//! turned into the shutdown token, the drain awaited, the last spans
//! flushed.

use anyhow::Context;
use chat_server::config::Config;
use tokio_util::sync::CancellationToken;

/// Runs the server on `config` until a stop signal, then drains.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Built inside the runtime: the OTLP exporter's connection lives on it.
    let traces = chat_server::telemetry::trace::otlp_provider(&config.traces)?;
    chat_server::telemetry::init(&config.log, traces.as_ref())?;
    if let Some(endpoint) = config.traces.endpoint() {
        tracing::info!(%endpoint, sample_ratio = config.traces.sample_ratio, "exporting traces over OTLP");
    }

    let shutdown = CancellationToken::new();
    let server = chat_server::start(config, shutdown.clone())
        .await
        .context("cannot start chat-server")?;
    tokio::spawn(async move {
        match stop_signal().await {
            Ok(name) => tracing::info!(signal = name, "stop signal received"),
            Err(e) => tracing::error!(error = %e, "cannot listen for stop signals; stopping"),
        }
        shutdown.cancel();
    });
    let result = server.wait().await;
    if let Some(traces) = traces {
        // Sends the spans still batched; blocking, so off the runtime.
        let flushed = tokio::task::spawn_blocking(move || traces.provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            eprintln!("chat-server: traces not all exported: {e}");
        }
    }
    result?;
    Ok(())
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
