//! The shopper-facing WebSocket gateway.
//!
//! # Layout
//!
//! - [`hub`]: [`Hub`], the sockets this process holds, keyed by (tenant, shopper).
//! - [`socket`]: `GET /v1/ws`: authenticates with the publishable key and `Origin`, then
//!   serves one shopper's socket.
//! - [`route`]: interventions travel between processes over a Redis pub/sub channel per
//!   cell: [`route::InterventionPublisher`] sends, [`route::subscribe`] delivers to the hub.
//!   The process that decided need not hold the socket.

pub mod hub;
pub mod route;
pub mod socket;

pub use hub::Hub;
pub use socket::{GatewayConfig, GatewayMetrics, GatewayState, router};
