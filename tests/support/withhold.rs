//! A TCP proxy that, on each connection, stops passing the server's answers once the
//! client has sent `start` bytes, and lets them through again only when the client has
//! sent `more` bytes beyond that (or, so a client that waits for an answer cannot hang
//! the test, after `deadline`). The server keeps working meanwhile; its answers are
//! held, not lost. A client that went on sending `more` bytes without hearing a single
//! answer had that much in flight: pipelining proven by bytes on the wire, whatever the
//! encryption, with no clock in the verdict.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

pub struct WithholdProxy {
    pub port: u16,
    /// Connections whose hold was released because the client sent `more` bytes.
    by_bytes: Arc<AtomicU64>,
    /// Connections whose hold ran out at the deadline instead.
    by_deadline: Arc<AtomicU64>,
}

/// One connection's state: client bytes sent so far, and whether the hold is over.
struct Gate {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

impl WithholdProxy {
    pub fn start(target: u16, start: u64, more: u64, deadline: Duration) -> WithholdProxy {
        let by_bytes = Arc::new(AtomicU64::new(0));
        let by_deadline = Arc::new(AtomicU64::new(0));
        let (bb, bd) = (by_bytes.clone(), by_deadline.clone());
        let port = super::relay(target, move |client, server| {
            let gate = Arc::new(Gate {
                state: Mutex::new((0, false)),
                cv: Condvar::new(),
            });
            let (mut c_rd, mut s_wr) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let g = gate.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match c_rd.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = s_wr.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) => n,
                    };
                    if s_wr.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    let mut st = g.state.lock().unwrap();
                    st.0 += n as u64;
                    g.cv.notify_all();
                }
            });
            let (mut s_rd, mut c_wr) = (server, client);
            let (bb, bd) = (bb.clone(), bd.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut held: Vec<u8> = Vec::new();
                let mut released = false;
                loop {
                    let n = match s_rd.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = c_wr.write_all(&held);
                            let _ = c_wr.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) => n,
                    };
                    if !released {
                        let sent = gate.state.lock().unwrap().0;
                        if sent >= start {
                            // Hold from here until the client has sent `more`.
                            held.extend_from_slice(&buf[..n]);
                            let st = gate.state.lock().unwrap();
                            let (st, t) = gate
                                .cv
                                .wait_timeout_while(st, deadline, |s| s.0 < start + more)
                                .unwrap();
                            if t.timed_out() {
                                bd.fetch_add(1, Ordering::SeqCst);
                            } else {
                                bb.fetch_add(1, Ordering::SeqCst);
                            }
                            drop(st);
                            released = true;
                            if c_wr.write_all(&std::mem::take(&mut held)).is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                    if c_wr.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        });
        WithholdProxy {
            port,
            by_bytes,
            by_deadline,
        }
    }

    /// Connections released because the client sent enough without an answer.
    pub fn released_by_bytes(&self) -> u64 {
        self.by_bytes.load(Ordering::SeqCst)
    }

    /// Connections released only by the deadline (the client waited for an answer).
    pub fn released_by_deadline(&self) -> u64 {
        self.by_deadline.load(Ordering::SeqCst)
    }
}
