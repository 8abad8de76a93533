//! The `nudge` command's building blocks, as a library so tests drive the same code.
//!
//! # Layout
//!
//! - [`dev`]: `nudge dev`, the whole platform in one process.
//! - [`storefront`]: the demo store page `nudge dev` serves.
//! - [`listen`]: `nudge listen`, a shopper's socket in the terminal.

pub mod dev;
pub mod listen;
pub mod storefront;
