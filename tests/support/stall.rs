//! A TCP proxy in front of a real server that forwards both ways until a fault point,
//! then misbehaves the way a dying link does, deterministically where a timed test would
//! guess: it goes silent once the server has sent `after` bytes ([`StallProxy::start`])
//! or once the client has sent `after` bytes ([`StallProxy::start_upload`], e.g. in the
//! middle of an APPEND's literal), or from that point on passes one byte a second
//! ([`StallProxy::trickle`]). The sockets are held open meanwhile; every connection,
//! reconnects included, meets the same fault.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

pub struct StallProxy {
    pub port: u16,
}

#[derive(Clone, Copy)]
enum Fault {
    /// Server → client goes silent after this many bytes.
    Down(u64),
    /// Client → server goes silent after this many bytes (and nothing more comes back).
    Up(u64),
    /// Server → client slows to one byte a second after this many bytes.
    Trickle(u64),
}

/// How long a silent proxy holds its sockets: longer than any test runs.
const HOLD: Duration = Duration::from_secs(600);

impl StallProxy {
    /// Silent once the server has sent `after` bytes to the client.
    pub fn start(target: u16, after: u64) -> StallProxy {
        StallProxy::with(target, Fault::Down(after))
    }

    /// Silent once the client has sent `after` bytes to the server.
    pub fn start_upload(target: u16, after: u64) -> StallProxy {
        StallProxy::with(target, Fault::Up(after))
    }

    /// One byte a second from the server once it has sent `after` bytes.
    pub fn trickle(target: u16, after: u64) -> StallProxy {
        StallProxy::with(target, Fault::Trickle(after))
    }

    fn with(target: u16, fault: Fault) -> StallProxy {
        let port = super::relay(target, move |client, server| {
            let (c_rd, s_wr) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = match fault {
                Fault::Up(n) => Some(n),
                _ => None,
            };
            thread::spawn(move || pump(c_rd, s_wr, up, false));
            let (down, trickle) = match fault {
                Fault::Down(n) => (Some(n), false),
                Fault::Trickle(n) => (Some(n), true),
                Fault::Up(_) => (None, false),
            };
            thread::spawn(move || pump(server, client, down, trickle));
        });
        StallProxy { port }
    }
}

/// Copies `from` to `to`; after `limit` bytes it stops (holding both open) or, with
/// `trickle`, goes on one byte a second.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<u64>, trickle: bool) {
    let mut sent = 0u64;
    let mut buf = [0u8; 4096];
    loop {
        let want = match limit {
            Some(l) if sent >= l => {
                if !trickle {
                    thread::sleep(HOLD);
                    return;
                }
                thread::sleep(Duration::from_secs(1));
                1
            }
            Some(l) => (l - sent).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                sent += n as u64;
            }
        }
    }
}
