//! Campaigns, free of I/O: what the control plane checks when a merchant saves one and what
//! a cell evaluates for every moment of a shopper.
//!
//! - [`expr`]: the condition language (parser, type checker against a schema of names,
//!   evaluator, canonical printer).

pub mod expr;
