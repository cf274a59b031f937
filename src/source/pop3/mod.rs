//! POP3 source (placeholder while it is written).
