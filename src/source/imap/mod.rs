//! IMAP source: `session` is the thin wrapper around the IMAP client crate (login, LIST,
//! EXAMINE, pipelined `UID FETCH` as events); everything else in mailark talks IMAP only
//! through it. Exports never change mail on the server.

pub mod bounds;
pub mod dest;
pub mod session;

pub use session::{
    parse_internaldate, Event, FetchWhat, FetchedMessage, FolderStatus, ImapError, ImapSession,
    MailboxInfo,
};
