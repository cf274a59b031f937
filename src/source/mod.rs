//! Sources: where mail comes from. Local ones (`maildir`, `mbox`) read files and never
//! write to them; network ones (`imap`, `pop3`) talk to servers, share `net`, and never
//! change mail on the server.

pub mod eml;
pub mod imap;
pub mod local;
pub mod maildir;
pub mod mbox;
pub mod net;
pub mod pop3;

/// A parsed `SOURCE` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Maildir(std::path::PathBuf),
    Mbox(std::path::PathBuf),
    Eml(std::path::PathBuf),
    Net(net::Endpoint),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("unknown source {0:?}: expected maildir:PATH, mbox:PATH, eml:PATH, imaps://USER@HOST, imap://, pop3s:// or pop3://")]
    Unknown(String),
    #[error(transparent)]
    Endpoint(#[from] net::EndpointError),
}

impl std::str::FromStr for SourceSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        if let Some(p) = s.strip_prefix("maildir:") {
            return Ok(SourceSpec::Maildir(p.into()));
        }
        if let Some(p) = s.strip_prefix("mbox:") {
            return Ok(SourceSpec::Mbox(p.into()));
        }
        if let Some(p) = s.strip_prefix("eml:") {
            return Ok(SourceSpec::Eml(p.into()));
        }
        if s.contains("://") {
            return Ok(SourceSpec::Net(net::Endpoint::parse(s)?));
        }
        Err(SpecError::Unknown(s.to_string()))
    }
}
