//! A clear-text IMAP proxy in front of the real server that hides folders from LIST, as
//! a server whose folder listing lags behind its folders does. It strips STARTTLS from
//! the capabilities it passes on, so a client allowed clear text stays where lines can
//! be read, and drops every `* LIST` line naming a hidden folder. Everything else
//! passes byte for byte; the folders themselves stay there to be opened by name.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

pub struct HideProxy {
    pub port: u16,
}

impl HideProxy {
    /// Proxies 127.0.0.1:`target`, leaving `hidden` (names as on the wire, quoted or
    /// not by the server) out of every LIST answer.
    pub fn start(target: u16, hidden: &[&str]) -> HideProxy {
        let hidden: Vec<String> = hidden.iter().map(|s| s.to_string()).collect();
        let port = super::relay(target, move |client, server| {
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || pass(c2, s2));
            let hidden = hidden.clone();
            thread::spawn(move || filter(server, client, &hidden));
        });
        HideProxy { port }
    }
}

fn pass(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn filter(from: TcpStream, mut to: TcpStream, hidden: &[String]) {
    let mut r = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if text.starts_with("* LIST ") && hidden.iter().any(|h| names(&text, h)) {
            continue;
        }
        let out = if text.contains("CAPABILITY") {
            text.replace(" STARTTLS", "").into_bytes()
        } else {
            line.clone()
        };
        if to.write_all(&out).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Whether a LIST line's name (its last word, quoted or not) is `name`.
fn names(line: &str, name: &str) -> bool {
    let last = line.trim_end().rsplit(' ').next().unwrap_or("");
    last == name || last == format!("\"{name}\"")
}
