//! A fault-injecting TCP proxy in front of the real server: it forwards bytes both ways
//! and, for the first `cut_connections` connections, drops the link once the server has
//! sent `cut_after` bytes to the client (or, optionally, the client has sent some). Later connections pass untouched, so a client
//! that reconnects can finish. It counts connections so tests can assert reconnects.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

pub struct FaultProxy {
    pub port: u16,
    connections: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxies 127.0.0.1:`target`; the first `cut_connections` connections are cut after
    /// `cut_after` server→client bytes.
    pub fn start(target: u16, cut_after: u64, cut_connections: u64) -> FaultProxy {
        FaultProxy::start_both(target, cut_after, None, cut_connections)
    }

    /// As [`start`](Self::start), also cutting once the client has sent `cut_up` bytes
    /// (for clients that send much and hear little back, such as batched APPENDs).
    pub fn start_both(
        target: u16,
        cut_after: u64,
        cut_up: Option<u64>,
        cut_connections: u64,
    ) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = Arc::new(AtomicU64::new(0));
        let cuts = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, cut, stopped) = (connections.clone(), cuts.clone(), stop.clone());
        thread::spawn(move || {
            for client in l.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let n = conns.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (limit, up) = if n < cut_connections {
                    (Some(cut_after), cut_up)
                } else {
                    (None, None)
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let cut2 = cut.clone();
                thread::spawn(move || pump(c2, s2, up, &cut2));
                let cut2 = cut.clone();
                thread::spawn(move || pump(server, client, limit, &cut2));
            }
        });
        FaultProxy {
            port,
            connections,
            cuts,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections cut so far (a limit reached, in either direction).
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<u64>, cuts: &AtomicU64) {
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n as u64 >= l => {
                let _ = to.write_all(&buf[..(l - sent) as usize]);
                cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
