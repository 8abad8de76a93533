//! The shopper-facing WebSocket gateway.
//!
//! # Layout
//!
//! - [`hub`]: [`Hub`], the sockets this process holds, keyed by (tenant, shopper), with
//!   bounded queues; the tenants it holds sockets for; [`hub::heartbeat`], one keepalive
//!   task for every socket.
//! - [`socket`]: `GET /v1/ws`: the publishable key and `Origin` name the tenant, a session
//!   token the shopper; replays the shopper's history, forwards, takes acknowledgements;
//!   the close codes.
//! - [`route`]: interventions travel between processes over a Redis pub/sub channel per
//!   tenant, and into a capped per-shopper history, in one pipeline:
//!   [`route::InterventionPublisher`] sends, [`route::History`] is what a socket resumes
//!   from. The process that decided need not hold the socket.
//! - [`subscriber`]: [`subscriber::subscribe`] keeps this process subscribed to the
//!   channels of its tenants and delivers what arrives to the hub.

pub mod hub;
pub mod route;
pub mod socket;
pub mod subscriber;

pub use hub::Hub;
pub use socket::{GatewayConfig, GatewayMetrics, GatewayState, router};
