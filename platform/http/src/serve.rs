//! Serving a router until shutdown.

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish. Long-lived connections (WebSockets) must watch `shutdown` themselves.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM; spawn it from `main`.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
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
    }
    #[cfg(not(unix))]
    ctrl_c_or_never().await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

async fn ctrl_c_or_never() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        // Without a signal handler the process runs until killed; never shut down by mistake.
        tracing::error!(error = %e, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}
