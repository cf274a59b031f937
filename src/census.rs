//! `mailark folders`: what an IMAP account holds, read without changing anything — each
//! folder's messages and bytes (EXAMINE and a `UID FETCH 1:* (UID RFC822.SIZE)`), its
//! role (SPECIAL-USE, or what its name says on servers that flag none) and whether it
//! is subscribed. A login test and an export plan in one.

use serde::Serialize;

use crate::mail::roles;
use crate::source::imap::session::{FolderRead, Listed};
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
    // LIST first: it brings NAMESPACE along in its pipeline.
    let listed = s.list().await?;
    let namespace = s.namespace().await?;
    let prefix = namespace
        .as_ref()
        .map_or("", |(p, _)| p.as_str())
        .to_string();
    let mut folders = Vec::new();
    for m in &listed {
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
        folders.push(FolderCensus {
            name: m.name.clone(),
            raw_name: m.raw_name.clone(),
            selectable: m.selectable,
            subscribed: m.subscribed,
            role,
            role_from,
            messages: 0,
            bytes: 0,
            uidvalidity: None,
        });
    }
    count(&mut s, &mut folders).await?;
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

/// Most messages whose sizes one pipeline may bring (they are held until it ends).
const SIZES_PER_PIPELINE: u64 = 100_000;

/// Fills in each selectable folder's UIDVALIDITY, messages and bytes: every folder
/// opened in one pipeline, then the sizes of those holding mail in pipelines of up to
/// [`SIZES_PER_PIPELINE`] messages, so a far server costs a few round trips, not two
/// per folder.
async fn count(s: &mut ImapSession, folders: &mut [FolderCensus]) -> Result<(), ImapError> {
    let open: Vec<usize> = (0..folders.len())
        .filter(|&i| folders[i].selectable)
        .collect();
    let names: Vec<String> = folders.iter().map(|f| f.raw_name.clone()).collect();
    let req = |i: usize, what| FolderRead {
        raw_name: names[i].clone(),
        read_only: true,
        what,
        unselect: false,
        uids: None,
    };
    let reqs: Vec<FolderRead> = open.iter().map(|&i| req(i, None)).collect();
    let mut full: Vec<(usize, u64)> = Vec::new();
    for (&i, out) in open.iter().zip(s.read_folders(&reqs).await?) {
        let st = out.status?;
        folders[i].uidvalidity = st.uidvalidity;
        if st.exists > 0 {
            full.push((i, u64::from(st.exists)));
        }
    }
    let counts: Vec<u64> = full.iter().map(|&(_, n)| n).collect();
    for range in pipelines(&counts, SIZES_PER_PIPELINE) {
        let group = &full[range];
        let reqs: Vec<FolderRead> = group
            .iter()
            .map(|&(i, _)| req(i, Some(FetchWhat::Sizes)))
            .collect();
        for (&(i, _), out) in group.iter().zip(s.read_folders_as::<Listed>(&reqs).await?) {
            out.status?;
            let sizes = out.messages?;
            folders[i].messages = sizes.len() as u64;
            folders[i].bytes = sizes.iter().map(|x| u64::from(x.size)).sum();
        }
    }
    Ok(())
}

/// Consecutive runs of `counts` summing to at most `cap` each; a count over `cap` alone.
pub(crate) fn pipelines(counts: &[u64], cap: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum) = (0, 0);
    for (i, &n) in counts.iter().enumerate() {
        if i > start && sum + n > cap {
            out.push(start..i);
            (start, sum) = (i, 0);
        }
        sum += n;
    }
    if start < counts.len() {
        out.push(start..counts.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pipelines;

    #[test]
    fn pipelines_hold_at_most_the_cap_and_a_big_folder_goes_alone() {
        assert!(pipelines(&[], 10).is_empty());
        assert_eq!(pipelines(&[3, 4, 3], 10), vec![0..3]);
        assert_eq!(pipelines(&[3, 4, 4], 10), vec![0..2, 2..3]);
        assert_eq!(pipelines(&[25, 1, 9, 30], 10), vec![0..1, 1..3, 3..4]);
        assert_eq!(pipelines(&[10, 10], 10), vec![0..1, 1..2]);
    }
}
