//! The server harnesses' own guarantees: a port is handed out once per process, and a
//! port counts as a server's only when that server holds its listening socket.

mod support;

#[test]
fn free_ports_are_never_handed_out_twice() {
    // The kernel's bind(0) hands a port just released to a later caller: with two
    // thousand draws from its ~28,000 some repeat, which is how two harnesses of
    // one test binary once shared a port.
    let mut got: Vec<u16> = (0..2_000).map(|_| support::free_port()).collect();
    got.sort_unstable();
    let all = got.len();
    got.dedup();
    assert_eq!(got.len(), all);
}

#[test]
fn a_listener_counts_only_for_the_process_that_holds_it() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let me = std::process::id() as i32;
    assert!(support::listens_in(&[me], port));
    // PID 1 is never this test.
    assert!(!support::listens_in(&[1], port));
    drop(l);
    assert!(!support::listens_in(&[me], port));
}
