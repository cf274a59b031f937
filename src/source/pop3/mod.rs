//! POP3 source: a read-only POP3 client (RFC 1939, CAPA/PIPELINING/RESP-CODES from
//! RFC 2449, STLS from RFC 2595, SASL from RFC 5034, UTF8 from RFC 6856) that streams
//! each message exactly as the server stores it. `proto` is the wire format without I/O,
//! `sasl` the login payloads, `client` the tokio session. It never deletes anything; it
//! reads messages with TOP when offered, because servers may mark what RETR sent as
//! read.

mod client;
pub mod proto;
mod sasl;

pub use client::{Pop3Client, Pop3Error, Pop3Options, RetrInfo, RetrSink, DEFAULT_TIMEOUT};
pub use proto::{
    judge_top, BodyLimit, Capabilities, RespCode, Retrieve, TopVerdict, Unstuffer, TOP_WHOLE,
};
