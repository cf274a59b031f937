//! A fault-injecting TCP proxy in front of the real server: it forwards bytes both ways
//! and, for the first `cut_connections` connections, drops the link once the server has
//! sent `cut_after` bytes to the client (or, optionally, the client has sent some). Later connections pass untouched, so a client
//! that reconnects can finish. It counts connections so tests can assert reconnects.
//!
//! A cut reaches the server as the end of its input, after every byte forwarded so
//! far: the server may go on storing what it had read (pipelined APPENDs) after the
//! client has given up and exited. The proxy reads the server's side to its end, so
//! [`FaultProxy::wait_settled`] can tell when the server is done with every connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub struct FaultProxy {
    pub port: u16,
    connections: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    /// Connections whose server side has not yet ended.
    open: Arc<AtomicU64>,
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
        let open = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, cut, opened, stopped) = (
            connections.clone(),
            cuts.clone(),
            open.clone(),
            stop.clone(),
        );
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
                opened.fetch_add(1, Ordering::SeqCst);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let cut2 = cut.clone();
                thread::spawn(move || upstream(c2, s2, up, &cut2));
                let (cut2, open2) = (cut.clone(), opened.clone());
                thread::spawn(move || {
                    downstream(server, client, limit, &cut2);
                    open2.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FaultProxy {
            port,
            connections,
            cuts,
            open,
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

    /// Waits until the server has closed every connection made through the proxy, so
    /// that what it holds no longer changes; panics after 30 s.
    pub fn wait_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "the server kept {} proxied connections open for 30 s",
                self.open.load(Ordering::SeqCst)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Client to server, up to `limit` bytes; then the client is cut and the server sees
/// the end of its input after everything forwarded.
fn upstream(mut client: TcpStream, mut server: TcpStream, limit: Option<u64>, cuts: &AtomicU64) {
    if pump(&mut client, &mut server, limit, cuts) {
        let _ = client.shutdown(Shutdown::Both);
    }
    let _ = server.shutdown(Shutdown::Write);
}

/// Server to client, up to `limit` bytes; then the client is cut, and the rest of what
/// the server says is read and dropped until it closes.
fn downstream(mut server: TcpStream, mut client: TcpStream, limit: Option<u64>, cuts: &AtomicU64) {
    if pump(&mut server, &mut client, limit, cuts) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = std::io::copy(&mut server, &mut std::io::sink());
    } else {
        let _ = client.shutdown(Shutdown::Write);
    }
    let _ = server.shutdown(Shutdown::Both);
}

/// Forwards until `from` ends (false) or `to` fails or `limit` is reached (true: the
/// caller cuts the client).
fn pump(from: &mut TcpStream, to: &mut TcpStream, limit: Option<u64>, cuts: &AtomicU64) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if let Some(l) = limit.filter(|&l| sent + n as u64 >= l) {
            let _ = to.write_all(&buf[..(l - sent) as usize]);
            cuts.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        if to.write_all(&buf[..n]).is_err() {
            return true;
        }
        sent += n as u64;
    }
}
