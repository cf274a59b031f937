//! The accounts of a move: one from `--from`/`--to`, or many from a CSV file with a
//! header row. Parsing is pure; secrets are only named here (a file or an environment
//! variable) and read when the account's pass starts, so one unreadable secret fails one
//! account, not the batch.

use std::path::{Path, PathBuf};

use crate::source::net::{Auth, Credentials, Endpoint, Scheme, Secret};

/// Where an account's secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    PasswordFile(PathBuf),
    PasswordEnv(String),
    OAuth2TokenFile(PathBuf),
}

impl SecretRef {
    /// Reads the secret for `ep`; errors name the file or variable, never the secret.
    pub fn credentials(&self, ep: &Endpoint) -> Result<Credentials, String> {
        let auth = match self {
            SecretRef::PasswordFile(p) => Auth::Password(
                Secret::from_file(p)
                    .map_err(|e| format!("cannot read password file {}: {e}", p.display()))?,
            ),
            SecretRef::OAuth2TokenFile(p) => Auth::OAuth2(
                Secret::from_file(p)
                    .map_err(|e| format!("cannot read OAuth2 token file {}: {e}", p.display()))?,
            ),
            SecretRef::PasswordEnv(v) => Auth::Password(Secret::new(
                std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))?,
            )),
        };
        if matches!(&auth, Auth::Password(s) | Auth::OAuth2(s) if s.expose().is_empty()) {
            return Err(format!("{ep}: the password or token is empty"));
        }
        Ok(Credentials {
            user: ep.user.clone(),
            auth,
        })
    }
}

/// One mailbox to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Names the account's directory under `--dir`; unique in a batch.
    pub name: String,
    /// Position among the accounts (0-based data row), which `--shard` divides.
    pub index: usize,
    pub source: Endpoint,
    pub destination: Endpoint,
    pub source_secret: SecretRef,
    pub destination_secret: SecretRef,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountsError {
    #[error("{file}: {msg}")]
    File { file: String, msg: String },
    #[error("{file}, line {line}: {msg}")]
    Row {
        file: String,
        line: u64,
        msg: String,
    },
}

/// A valid account name: it becomes a directory, so no separators, no leading dot.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "account name {name:?}: use letters, digits and . _ - @ + (it names a directory)"
        ))
    }
}

pub fn source_endpoint(url: &str) -> Result<Endpoint, String> {
    Endpoint::parse(url).map_err(|e| format!("source: {e}"))
}

pub fn destination_endpoint(url: &str) -> Result<Endpoint, String> {
    let ep = Endpoint::parse(url).map_err(|e| format!("destination: {e}"))?;
    if !matches!(ep.scheme, Scheme::Imap | Scheme::Imaps) {
        return Err(format!(
            "destination {ep}: must be imaps:// or imap:// (mail is imported over IMAP)"
        ));
    }
    Ok(ep)
}

const COLUMNS: [&str; 7] = [
    "name",
    "source",
    "destination",
    "source_password_file",
    "destination_password_file",
    "source_password_env",
    "destination_password_env",
];

/// Parses an accounts CSV. Relative secret-file paths are taken from the CSV's folder,
/// so a batch directory can be moved as a whole.
pub fn parse_csv(file: &Path, text: &[u8]) -> Result<Vec<Account>, AccountsError> {
    let fname = file.display().to_string();
    let base = file.parent().unwrap_or(Path::new("."));
    let file_err = |msg: String| AccountsError::File {
        file: fname.clone(),
        msg,
    };
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text);
    let headers = rd
        .headers()
        .map_err(|e| file_err(format!("cannot read the header row: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    if let Some(h) = headers.iter().find(|h| !COLUMNS.contains(h)) {
        return Err(file_err(format!(
            "unknown column {h:?} (columns: {})",
            COLUMNS.join(", ")
        )));
    }
    for need in &COLUMNS[..3] {
        if col(need).is_none() {
            return Err(file_err(format!("the header row has no {need:?} column")));
        }
    }
    let mut out: Vec<Account> = Vec::new();
    for rec in rd.records() {
        let rec = rec.map_err(|e| file_err(e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let row_err = |msg: String| AccountsError::Row {
            file: fname.clone(),
            line,
            msg,
        };
        if rec.len() != headers.len() {
            return Err(row_err(format!(
                "{} field(s), the header row has {}",
                rec.len(),
                headers.len()
            )));
        }
        let get = |name: &str| col(name).and_then(|i| rec.get(i)).unwrap_or("");
        let name = get("name").to_string();
        check_name(&name).map_err(row_err)?;
        if out.iter().any(|a| a.name == name) {
            return Err(row_err(format!("account name {name:?} appears twice")));
        }
        let source = source_endpoint(get("source")).map_err(row_err)?;
        let destination = destination_endpoint(get("destination")).map_err(row_err)?;
        let secret = |side: &str| -> Result<SecretRef, AccountsError> {
            let file = get(&format!("{side}_password_file"));
            let env = get(&format!("{side}_password_env"));
            match (file.is_empty(), env.is_empty()) {
                (false, true) => Ok(SecretRef::PasswordFile(base.join(file))),
                (true, false) => Ok(SecretRef::PasswordEnv(env.to_string())),
                (false, false) => Err(row_err(format!(
                    "give {side}_password_file or {side}_password_env, not both"
                ))),
                (true, true) => Err(row_err(format!(
                    "no {side} secret: fill {side}_password_file or {side}_password_env"
                ))),
            }
        };
        out.push(Account {
            index: out.len(),
            source_secret: secret("source")?,
            destination_secret: secret("destination")?,
            name,
            source,
            destination,
        });
    }
    if out.is_empty() {
        return Err(file_err("no accounts (only a header row)".into()));
    }
    Ok(out)
}

/// `K/N`: this process takes the accounts whose index ≡ K (mod N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {s:?}: use K/N with 0 <= K < N (e.g. 0/4)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        if n == 0 || k >= n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl Shard {
    pub fn takes(&self, a: &Account) -> bool {
        a.index % self.n == self.k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name,source,destination,source_password_file,destination_password_file
alice,imaps://alice@old.example.com,imaps://alice@new.example.net,secrets/alice-old,/abs/alice-new
# a comment line
bob, pop3s://bob@old.example.com , imap://bob@new.example.net,b-old,b-new
";

    #[test]
    fn reads_rows_with_relative_secret_paths() {
        let v = parse_csv(Path::new("/batch/accounts.csv"), GOOD.as_bytes()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "alice");
        assert_eq!(v[0].index, 0);
        assert_eq!(
            v[0].source_secret,
            SecretRef::PasswordFile("/batch/secrets/alice-old".into())
        );
        assert_eq!(
            v[0].destination_secret,
            SecretRef::PasswordFile("/abs/alice-new".into())
        );
        assert_eq!(v[1].source.scheme, Scheme::Pop3s);
        assert_eq!(v[1].destination.host, "new.example.net");
        assert_eq!(v[1].index, 1);
    }

    #[test]
    fn env_columns() {
        let csv = "name,source,destination,source_password_env,destination_password_env\n\
                   a,imap://a@h,imap://a@g,OLD_A,NEW_A\n";
        let v = parse_csv(Path::new("x.csv"), csv.as_bytes()).unwrap();
        assert_eq!(v[0].source_secret, SecretRef::PasswordEnv("OLD_A".into()));
    }

    fn err(csv: &str) -> String {
        parse_csv(Path::new("acc.csv"), csv.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_rows_name_their_line() {
        let head = "name,source,destination,source_password_file,destination_password_file\n";
        let e = err(&format!(
            "{head}a,imap://a@h,imap://a@g,f,g\nb,imap://b@h,pop3://b@g,f,g\n"
        ));
        assert!(e.starts_with("acc.csv, line 3: destination"), "{e}");
        let e = err(&format!("{head}a,imap://a@h,imap://a@g,,g\n"));
        assert!(e.contains("line 2: no source secret"), "{e}");
        let e = err(&format!("{head}../x,imap://a@h,imap://a@g,f,g\n"));
        assert!(e.contains("line 2: account name"), "{e}");
        let e = err(&format!(
            "{head}a,imap://a@h,imap://a@g,f,g\na,imap://b@h,imap://b@g,f,g\n"
        ));
        assert!(
            e.contains("line 3: account name \"a\" appears twice"),
            "{e}"
        );
        let e = err(&format!("{head}a,imap://a:pw@h,imap://a@g,f,g\n"));
        assert!(e.contains("line 2: source"), "{e}");
        let e = err(&format!("{head}a,imap://a@h\n"));
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_headers() {
        assert!(err("name,source\n").contains("no \"destination\" column"));
        assert!(err("name,source,destination,pasword\n").contains("unknown column \"pasword\""));
        assert!(
            err("name,source,destination,source_password_file,destination_password_file\n")
                .contains("no accounts")
        );
    }

    #[test]
    fn shards_partition_the_rows() {
        let accts: Vec<Account> = (0..7)
            .map(|i| Account {
                name: format!("a{i}"),
                index: i,
                source: Endpoint::parse("imap://a@h").unwrap(),
                destination: Endpoint::parse("imap://a@g").unwrap(),
                source_secret: SecretRef::PasswordEnv("X".into()),
                destination_secret: SecretRef::PasswordEnv("Y".into()),
            })
            .collect();
        let shards: Vec<Shard> = ["0/3", "1/3", "2/3"].map(|s| s.parse().unwrap()).into();
        for a in &accts {
            assert_eq!(shards.iter().filter(|s| s.takes(a)).count(), 1);
        }
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
