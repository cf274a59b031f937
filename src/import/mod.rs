//! The importer: archives (or a chain) → a destination IMAP account, idempotent and
//! resumable, checked message by message on the destination afterwards.

pub mod plan;
