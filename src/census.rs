//! `mailark folders`: what an IMAP account holds, read without changing anything — each
//! folder's messages and bytes (EXAMINE and a `UID FETCH 1:* (UID RFC822.SIZE)`), its
//! role (SPECIAL-USE, or what its name says on servers that flag none) and whether it
//! is subscribed. A login test and an export plan in one.

use serde::Serialize;

use crate::mail::roles;
use crate::source::imap::{FetchWhat, ImapError, ImapSession};
use crate::source::net::{Credentials, Endpoint, TlsOptions};

#[derive(Debug, Clone, Serialize)]
pub struct FolderCensus {
    pub name: String,
    pub raw_name: String,
    pub selectable: bool,
    pub subscribed: bool,
    /// `\Sent`, `\Drafts`, ...: the server's SPECIAL-USE, else the role the name says.
    pub role: Option<String>,
    /// Where `role` came from: `special-use` or `name`.
    pub role_from: Option<&'static str>,
    pub messages: u64,
    pub bytes: u64,
    pub uidvalidity: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Census {
    pub server: String,
    pub tls: bool,
    /// The personal namespace: prefix and delimiter.
    pub namespace: Option<(String, Option<char>)>,
    pub capabilities: Vec<String>,
    pub folders: Vec<FolderCensus>,
    pub messages: u64,
    pub bytes: u64,
}

pub async fn imap_census(
    ep: &Endpoint,
    creds: &Credentials,
    tls: &TlsOptions,
    timeout: std::time::Duration,
) -> Result<Census, ImapError> {
    let mut s = ImapSession::connect_with_timeout(ep, creds, tls, timeout).await?;
    let namespace = s.namespace().await?;
    let prefix = namespace
        .as_ref()
        .map_or("", |(p, _)| p.as_str())
        .to_string();
    let mut folders = Vec::new();
    for m in s.list().await? {
        // A role by name only for folders directly under the personal namespace.
        let below = m.name.strip_prefix(&prefix).unwrap_or(&m.name);
        let top_level = m.delimiter.is_none_or(|d| !below.contains(d));
        let (role, role_from) = match (&m.special_use, top_level) {
            (Some(r), _) => (Some(r.clone()), Some("special-use")),
            (None, true) => match roles::role_by_name(below) {
                Some(r) => (Some(r.to_string()), Some("name")),
                None => (None, None),
            },
            (None, false) => (None, None),
        };
        let mut f = FolderCensus {
            name: m.name.clone(),
            raw_name: m.raw_name.clone(),
            selectable: m.selectable,
            subscribed: m.subscribed,
            role,
            role_from,
            messages: 0,
            bytes: 0,
            uidvalidity: None,
        };
        if m.selectable {
            let st = s.examine(&m.raw_name).await?;
            f.uidvalidity = st.uidvalidity;
            if st.exists > 0 {
                let sizes = s.uid_fetch_all("1:*", FetchWhat::Sizes).await?;
                f.messages = sizes.len() as u64;
                f.bytes = sizes.iter().map(|x| u64::from(x.size.unwrap_or(0))).sum();
            }
        }
        folders.push(f);
    }
    let c = Census {
        server: ep.to_string(),
        tls: s.is_tls(),
        namespace,
        capabilities: s.capability_names(),
        messages: folders.iter().map(|f| f.messages).sum(),
        bytes: folders.iter().map(|f| f.bytes).sum(),
        folders,
    };
    let _ = s.logout().await;
    Ok(c)
}
