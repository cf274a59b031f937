//! mailark: save a whole mailbox off a mail server into a portable archive and put it
//! back on another one, byte-exact. The library is the whole tool; `main.rs` is a thin
//! CLI on top. Dependencies point one way: `cli` → workflows (`export`, `extract`,
//! `verify`) → `archive` / `source`.

pub mod alloc;
pub mod archive;
pub mod census;
pub mod cli;
pub mod export;
pub mod extract;
pub mod import;
pub mod interrupt;
mod json;
pub mod log;
pub mod mail;
pub mod migrate;
pub mod progress;
pub mod receipt;
pub mod reconcile;
pub(crate) mod scratch;
pub mod source;
pub mod text;
pub mod verify;
