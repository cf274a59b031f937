//! What the local sources (`maildir`, `mbox`) share: the `Source` trait the export
//! workflow drives, and name-based special-use guesses (local stores carry no roles).

use crate::archive::{FolderInfo, MessageInfo};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a Maildir (no cur/ directory found below it)")]
    NotMaildir { path: String },
    #[error("{path}: not an mbox file (it does not start with a \"From \" line)")]
    NotMbox { path: String },
    #[error("{path}: no mbox files found below it")]
    NoMbox { path: String },
    #[error("{path}: no .eml files found in it or below it")]
    NoEml { path: String },
}

pub fn io_err(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> LocalError {
    let path = path.as_ref().display().to_string();
    move |source| LocalError::Io { path, source }
}

/// Receives each message of a folder (or the error that kept one from being read).
pub type MessageSink<'a> = dyn FnMut(Result<(MessageInfo, Vec<u8>), LocalError>) -> Result<(), crate::archive::WriteError>
    + 'a;

/// A local store: lists its folders, then hands out each folder's messages in order.
pub trait LocalSource {
    /// A description for the archive header (`maildir:/abs/path`).
    fn describe(&self) -> String;
    fn folders(&self) -> Vec<FolderInfo>;
    /// Calls `each` for every message of `folder` with its exact bytes. An error from a
    /// single unreadable message is passed to `each` so the caller can record it and go on.
    fn messages(
        &self,
        folder: &str,
        each: &mut MessageSink<'_>,
    ) -> Result<(), crate::archive::WriteError>;
    /// Bytes the source will read for `folder`, for progress (best effort).
    fn folder_bytes(&self, folder: &str) -> u64;
}

/// Guesses a special-use role from a folder's last level (local stores carry no flags).
pub fn guess_special_use(name: &str, delimiter: Option<char>) -> Option<String> {
    let leaf = match delimiter {
        Some(d) => name.rsplit(d).next().unwrap_or(name),
        None => name,
    };
    crate::mail::roles::role_by_name(leaf).map(String::from)
}
