//! Serving a router until shutdown.

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish. Long-lived connections (WebSockets) must watch `shutdown` themselves.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM; spawn it from `main` (inside the runtime). The
/// SIGTERM handler is installed when this is called, not when the future first runs, so a
/// signal right after start-up is not missed.
pub fn cancel_on_signal(shutdown: CancellationToken) -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        #[cfg(unix)]
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                ctrl_c_or_never().await;
            }
        }
        #[cfg(not(unix))]
        ctrl_c_or_never().await;
        tracing::info!("shutdown requested");
        shutdown.cancel();
    }
}

async fn ctrl_c_or_never() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        // Without a signal handler the process runs until killed; never shut down by mistake.
        tracing::error!(error = %e, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    // Each test runs in a process of its own (cargo nextest), so signalling this process
    // reaches only this test.
    #[cfg(unix)]
    #[tokio::test]
    async fn sigterm_cancels_the_shutdown_token() {
        let shutdown = CancellationToken::new();
        let watcher = tokio::spawn(cancel_on_signal(shutdown.clone()));
        let status =
            std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status().unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled()).await.unwrap();
        watcher.await.unwrap();
    }
}
