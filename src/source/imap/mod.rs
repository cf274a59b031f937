//! IMAP source (placeholder while it is written).
