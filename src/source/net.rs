//! What every network source shares: endpoints parsed from `imaps://user@host:port`
//! URLs, secrets that never reach a log, and the TLS connector (system roots, an extra CA
//! file, or an explicit `--insecure`). It owns no protocol; IMAP and POP3 build on it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Which protocol and which kind of transport security a URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `imaps://`: TLS from the first byte (default port 993).
    Imaps,
    /// `imap://`: STARTTLS when offered (default port 143).
    Imap,
    /// `pop3s://`: TLS from the first byte (default port 995).
    Pop3s,
    /// `pop3://`: STLS when offered (default port 110).
    Pop3,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Imaps => 993,
            Scheme::Imap => 143,
            Scheme::Pop3s => 995,
            Scheme::Pop3 => 110,
        }
    }
    pub fn implicit_tls(self) -> bool {
        matches!(self, Scheme::Imaps | Scheme::Pop3s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Imaps => "imaps",
            Scheme::Imap => "imap",
            Scheme::Pop3s => "pop3s",
            Scheme::Pop3 => "pop3",
        }
    }
}

/// A server account named by a URL. The URL never carries a secret: a password in it is
/// refused, because command lines end up in shell history and process lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub user: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error(
        "not a server URL (expected imaps://USER@HOST[:PORT], imap://, pop3s:// or pop3://): {0}"
    )]
    NotAUrl(String),
    #[error("{0}: put the password in --password-file or --password-env, never in the URL")]
    PasswordInUrl(String),
    #[error("{0}: the URL has no user name (USER@HOST)")]
    NoUser(String),
    #[error("{0}: bad port")]
    BadPort(String),
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| EndpointError::NotAUrl(url.to_string()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "imaps" => Scheme::Imaps,
            "imap" => Scheme::Imap,
            "pop3s" | "pops" => Scheme::Pop3s,
            "pop3" | "pop" => Scheme::Pop3,
            _ => return Err(EndpointError::NotAUrl(url.to_string())),
        };
        let rest = rest.trim_end_matches('/');
        // The user part may itself contain '@' (user@example.com@host), so split on the last one.
        let (userinfo, hostport) = rest
            .rsplit_once('@')
            .ok_or_else(|| EndpointError::NoUser(url.to_string()))?;
        if userinfo.contains(':') {
            return Err(EndpointError::PasswordInUrl(redact_url(url)));
        }
        let user = crate::text::percent_decode(userinfo);
        if user.is_empty() {
            return Err(EndpointError::NoUser(url.to_string()));
        }
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [IPv6]:port
            let (h, after) = h
                .split_once(']')
                .ok_or_else(|| EndpointError::NotAUrl(url.to_string()))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p
                    .parse()
                    .map_err(|_| EndpointError::BadPort(url.to_string()))?,
                None => scheme.default_port(),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse()
                        .map_err(|_| EndpointError::BadPort(url.to_string()))?,
                ),
                None => (hostport.to_string(), scheme.default_port()),
            }
        };
        if host.is_empty() {
            return Err(EndpointError::NotAUrl(url.to_string()));
        }
        Ok(Endpoint {
            scheme,
            user,
            host,
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    /// The URL as recorded in archives and reports: never with a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{}://{}@{}:{}",
            self.scheme.as_str(),
            self.user,
            host,
            self.port
        )
    }
}

fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((s, _)), Some((_, hp))) => format!("{s}://***@{hp}"),
        _ => "***".to_string(),
    }
}

/// A password or OAuth2 access token. Debug and Display print `***`, so a secret cannot
/// leak through `{:?}` in an error or a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// Reads a secret file; exactly one trailing newline (LF or CRLF) is not part of it.
    pub fn from_file(path: &Path) -> io::Result<Secret> {
        Ok(Secret(trim_one_newline(std::fs::read_to_string(path)?)))
    }
    /// Reads a secret from a stream (standard input for `--password-file -`), with the
    /// same newline rule as a file.
    pub fn from_reader(mut r: impl io::Read) -> io::Result<Secret> {
        let mut s = String::new();
        r.read_to_string(&mut s)?;
        Ok(Secret(trim_one_newline(s)))
    }

    /// Runs `sh -c CMD` and takes its standard output as the secret (as mbsync's
    /// `PassCmd` and restic's `--password-command`). A failing command is an error that
    /// names it and carries its stderr's last line; its output is never shown.
    pub fn from_command(cmd: &str) -> Result<Secret, String> {
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(cmd).stdin(std::process::Stdio::inherit());
        crate::interrupt::unblock_in_child(&mut c);
        let out = c
            .output()
            .map_err(|e| format!("--password-command {cmd:?}: cannot run sh: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").trim();
            return Err(format!(
                "--password-command {cmd:?} failed ({}){}",
                out.status,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ));
        }
        let s = String::from_utf8(out.stdout)
            .map_err(|_| format!("--password-command {cmd:?}: the output is not UTF-8"))?;
        Ok(Secret(trim_one_newline(s)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn trim_one_newline(mut s: String) -> String {
    if s.ends_with("\r\n") {
        s.truncate(s.len() - 2);
    } else if s.ends_with('\n') {
        s.truncate(s.len() - 1);
    }
    s
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    Password(Secret),
    /// An OAuth2 bearer token: SASL XOAUTH2 or OAUTHBEARER.
    OAuth2(Secret),
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub auth: Auth,
}

impl Credentials {
    /// Every string that must never appear in output (for redaction checks).
    pub fn secret(&self) -> &str {
        match &self.auth {
            Auth::Password(s) | Auth::OAuth2(s) => s.expose(),
        }
    }
}

/// Transport security options shared by every network source and the importer.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra CA certificate(s) (PEM) to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate and host-name verification (the CLI warns).
    pub insecure: bool,
    /// Allow credentials over an unencrypted connection (`imap://`/`pop3://` when the
    /// server offers no STARTTLS/STLS).
    pub allow_plaintext: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("cannot read CA file {path}: {source}")]
    CaFile { path: PathBuf, source: io::Error },
    #[error("CA file {path} holds no usable PEM certificate: {detail}")]
    CaParse { path: PathBuf, detail: String },
    #[error("TLS setup failed: {0}")]
    TlsSetup(String),
    #[error("TLS handshake with {url} failed: {detail}")]
    Handshake { url: String, detail: String },
}

/// Builds the TLS connector for `opts`.
pub fn tls_connector(opts: &TlsOptions) -> Result<tokio_native_tls::TlsConnector, NetError> {
    // Building a connector loads and parses the system's whole CA bundle: about 40 ms
    // of CPU, a fifth of an import's client CPU when every connection and reconnect
    // built its own. A connector is a shared handle, so one per option set is kept.
    type Cache = Mutex<Vec<((Option<PathBuf>, bool), tokio_native_tls::TlsConnector)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (opts.ca_file.clone(), opts.insecure);
    let cache = CACHE.get_or_init(Default::default);
    if let Some((_, c)) = cache
        .lock()
        .expect("TLS connector cache")
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(c.clone());
    }
    let c = build_tls_connector(opts)?;
    cache
        .lock()
        .expect("TLS connector cache")
        .push((key, c.clone()));
    Ok(c)
}

fn build_tls_connector(opts: &TlsOptions) -> Result<tokio_native_tls::TlsConnector, NetError> {
    let mut b = native_tls::TlsConnector::builder();
    if let Some(path) = &opts.ca_file {
        let pem = std::fs::read(path).map_err(|source| NetError::CaFile {
            path: path.clone(),
            source,
        })?;
        let certs = split_pem_certs(&pem);
        if certs.is_empty() {
            return Err(NetError::CaParse {
                path: path.clone(),
                detail: "no BEGIN CERTIFICATE block".into(),
            });
        }
        for c in certs {
            let cert = native_tls::Certificate::from_pem(&c).map_err(|e| NetError::CaParse {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            b.add_root_certificate(cert);
        }
    }
    if opts.insecure {
        b.danger_accept_invalid_certs(true);
        b.danger_accept_invalid_hostnames(true);
    }
    let c = b.build().map_err(|e| NetError::TlsSetup(e.to_string()))?;
    Ok(tokio_native_tls::TlsConnector::from(c))
}

fn split_pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            if let Some(c) = cur.take() {
                out.push(c.into_bytes());
            }
        }
    }
    out
}

pub async fn tcp_connect(ep: &Endpoint) -> Result<TcpStream, NetError> {
    let addr = format!("{}:{}", ep.host, ep.port);
    let s = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|source| NetError::Connect { addr, source })?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

pub async fn tls_handshake(
    connector: &tokio_native_tls::TlsConnector,
    ep: &Endpoint,
    tcp: TcpStream,
) -> Result<tokio_native_tls::TlsStream<TcpStream>, NetError> {
    connector
        .connect(&ep.host, tcp)
        .await
        .map_err(|e| NetError::Handshake {
            url: ep.to_string(),
            detail: handshake_detail(&e.to_string()),
        })
}

/// The TLS library's words, and for a certificate it could not check (self-signed, an
/// unknown CA, a wrong host name) the way out, which its words do not tell.
fn handshake_detail(tls: &str) -> String {
    if tls.contains("certificate verify failed") || tls.contains("certificate is not trusted") {
        format!(
            "{tls}; the server's certificate is not trusted: add --tls-ca-file PEM with the \
             CA that signed it (or --insecure to skip the check)"
        )
    } else {
        tls.to_string()
    }
}

/// A connection that is plain TCP or TLS, so STARTTLS/STLS can upgrade in place and the
/// protocol code above sees one stream type.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_native_tls::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("imaps://alice@example.com@mail.example.net").unwrap();
        assert_eq!(e.user, "alice@example.com");
        assert_eq!(e.host, "mail.example.net");
        assert_eq!(e.port, 993);
        let e = Endpoint::parse("pop3://bob@127.0.0.1:1110").unwrap();
        assert_eq!((e.scheme, e.port), (Scheme::Pop3, 1110));
        assert_eq!(e.to_string(), "pop3://bob@127.0.0.1:1110");
        let e = Endpoint::parse("imap://u%40x@[::1]:143").unwrap();
        assert_eq!((e.user.as_str(), e.host.as_str()), ("u@x", "::1"));
    }

    #[test]
    fn refuses_password_in_url() {
        let err = Endpoint::parse("imaps://alice:hunter2@host").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(matches!(err, EndpointError::PasswordInUrl(_)));
    }

    #[test]
    fn secret_file_drops_one_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, "pa ss\n\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "pa ss\n");
        std::fs::write(&p, "x\r\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "x");
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
    }
}
