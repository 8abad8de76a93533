//! A Prometheus registry owned by one service instance. Passing it around (rather than a
//! global recorder) keeps two services in one test process from mixing their figures.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::{encoding::text::encode, registry::Registry};

/// The service's metrics registry; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// An empty registry whose metric names start with `nudge_<service>_`.
    pub fn new(service: &str) -> Self {
        let prefix = format!("nudge_{}", service.replace('-', "_"));
        Self { registry: Arc::new(Mutex::new(Registry::with_prefix(prefix))) }
    }

    /// Registers metrics while set-up runs.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering leaves the registry usable; keep serving it.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The text exposition format served at `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry());
        out
    }
}
