//! Test support for the network tests: a real Dovecot started per test in a temp dir
//! (`dovecot`), and a tiny synchronous IMAP client (`raw`) for seeding and inspecting a
//! server without any of mailark's own code.
#![allow(dead_code)]

pub mod cyrus;
pub mod dovecot;
pub mod proxy;
pub mod raw;

#[allow(unused_imports)]
pub use dovecot::{Dovecot, DovecotOptions};
