//! Supervising a service's background tasks.
//!
//! A background task (a consumer, a relay, a subscriber) that stops while the service is
//! meant to be running leaves the service half-alive: it answers HTTP but does no work. A
//! supervised task that ends before shutdown was requested instead fails the whole service,
//! so the process exits and its orchestrator restarts it.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A background task and its name, for logs.
pub type Task = (&'static str, JoinHandle<anyhow::Result<()>>);

/// Waits for `task`. If it ends (for any reason) before `shutdown` is cancelled, it logs why,
/// cancels `shutdown` so the rest of the service stops, and returns the error.
pub async fn supervise((name, handle): Task, shutdown: CancellationToken) -> anyhow::Result<()> {
    let outcome = handle.await;
    let expected = shutdown.is_cancelled();
    let error = match outcome {
        Ok(Ok(())) if expected => return Ok(()),
        Ok(Ok(())) => anyhow::anyhow!("{name} stopped unexpectedly"),
        Ok(Err(e)) => e.context(format!("{name} failed")),
        Err(join) => anyhow::anyhow!("{name} panicked or was aborted: {join}"),
    };
    tracing::error!(task = name, error = format!("{error:#}"), "background task ended; stopping the service");
    shutdown.cancel();
    Err(error)
}

/// Serves until shutdown while supervising `tasks`; the first failure wins.
pub async fn serve_supervised(
    served: impl std::future::Future<Output = std::io::Result<()>>,
    tasks: Vec<Task>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let supervised = futures_util::future::join_all(tasks.into_iter().map(|t| supervise(t, shutdown.clone())));
    let (served, tasks) = tokio::join!(
        async {
            let r = served.await;
            // The server stopping (for any reason) stops the tasks too.
            shutdown.cancel();
            r
        },
        supervised
    );
    served?;
    tasks.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}
