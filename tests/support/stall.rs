//! A TCP proxy that forwards both ways until the server has sent `after` bytes to the
//! client, then stops forwarding and holds both connections open: a server that went
//! silent mid-response, deterministic where a timed test would guess.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

pub struct StallProxy {
    pub port: u16,
}

impl StallProxy {
    pub fn start(target: u16, after: u64) -> StallProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c_rd, mut s_wr) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || {
                    let _ = std::io::copy(&mut c_rd, &mut s_wr);
                });
                let (mut s_rd, mut c_wr) = (server, client);
                thread::spawn(move || {
                    let mut sent = 0u64;
                    let mut buf = [0u8; 4096];
                    loop {
                        let want = (after - sent).min(buf.len() as u64) as usize;
                        if want == 0 {
                            // Silent from here on, the sockets held open (the test ends
                            // long before this does).
                            thread::sleep(std::time::Duration::from_secs(600));
                            return;
                        }
                        match s_rd.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if c_wr.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                                sent += n as u64;
                            }
                        }
                    }
                });
            }
        });
        StallProxy { port }
    }
}
