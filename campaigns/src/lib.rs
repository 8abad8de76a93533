//! Campaigns, free of I/O: what the control plane checks when a merchant saves one and what
//! a cell evaluates for every moment of a shopper.
//!
//! - [`expr`]: the condition language (parser, type checker against a schema of names,
//!   evaluator, canonical printer).
//! - [`template`]: message templates, checked when saved, rendered with values escaped for
//!   their channel.
//! - [`model`]: a campaign's definition and its validation, every problem named by field.
//! - [`lift`]: treated against control, with confidence intervals.
//! - [`policy`]: the store's rules for every send (caps, quiet hours, consent, holdout).

pub mod expr;
pub mod lift;
pub mod model;
pub mod policy;
pub mod template;
