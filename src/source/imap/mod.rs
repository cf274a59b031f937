//! IMAP: `wire` cuts the server's bytes into bounded frames (pure, tested at every split
//! point); `session` is the thin loop around it and the only module that knows which
//! IMAP parser crate is used (login, LIST, EXAMINE, pipelined `UID FETCH` as events);
//! `dest` adds what an importer writes. Everything else in mailark talks IMAP only
//! through them. Exports never change mail on the server.

pub mod dest;
pub mod session;
pub mod wire;

pub use session::{
    parse_internaldate, Event, FetchWhat, FetchedMessage, FolderStatus, ImapError, ImapSession,
    MailboxInfo,
};
