//! The delayed channels of a cell: a campaign's e-mail, decided at a shopper's moment and
//! sent minutes later unless the shopper buys first.
//!
//! - [`gate`]: whether a send may go now (consent, quiet hours, caps), free of I/O.
//! - [`store`]: the schedule, the pending sends, the shoppers' addresses, consent and
//!   recent sends, and the store's send log, in Redis.
//! - [`email`]: the SMTP sender.
//! - [`webhook`]: signed POSTs to the merchant's endpoint, to public addresses only.
//! - [`outcomes`]: shoppers' arms (treated, control, holdout) and their purchases within
//!   the attribution window, summed per arm for lift reports.

pub mod email;
pub mod gate;
pub mod outcomes;
pub mod store;
pub mod webhook;
