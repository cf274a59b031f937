//! Facts about mail itself that several parts need and that belong to none of them:
//! header summaries for the index, IMAP flags and their Maildir letters, mboxrd quoting,
//! the roles folder names say, the glob dialect of folder patterns.
//! Leaf module: it knows nothing of archives, sources or the network.

pub mod flags;
pub mod glob;
pub mod headers;
pub mod identity;
pub mod mboxrd;
pub mod roles;
pub mod utf7;
