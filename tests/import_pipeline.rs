//! Import keeps many APPEND commands in flight (issue 11): proven on the wire, not by a
//! clock. A proxy in front of a real Dovecot holds back every answer once the import
//! has sent its first 256 KiB, and lets them through only when the import has sent
//! 4 MiB more without hearing one (several MULTIAPPEND batches: a batch is at most
//! 32 messages, here 640 KB). A client that waits for an answer before sending more
//! never gets there; the proxy then gives up at a deadline and the test fails. The
//! messages must still all arrive, verified, in archive order.

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use common::*;
use support::withhold::WithholdProxy;
use support::Dovecot;

const N: usize = 400;

/// About 20 KB, with a Message-ID naming its place in the archive.
fn message(i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: s{i}@example.jp\r\nTo: bob@example.jp\r\nSubject: pipelined {i}\r\n\
         Date: Mon, 01 Jan 2024 09:00:00 +0900\r\nMessage-ID: <pipe-{i:04}@import.test>\r\n\r\n"
    );
    let mut k = 0;
    while m.len() < 20_000 {
        m.push_str(&format!(
            "line {k} of message {i}: 会議の資料を確認してください\r\n"
        ));
        k += 1;
    }
    m.into_bytes()
}

fn archive(dir: &Path) -> std::path::PathBuf {
    let msgs: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| (format!("{}.M{i}.x:2,S", 1_600_000_000 + i), message(i)))
        .collect();
    write_maildir_folder(&dir.join("src").join("INBOX"), &msgs);
    let ar = dir.join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", dir.join("src").display()),
        "-o",
        ar.to_str().unwrap(),
        "-q",
    ]);
    ar
}

#[test]
fn appends_stay_in_flight_while_answers_are_held_and_land_in_order() {
    let t = tempfile::tempdir().unwrap();
    let ar = archive(t.path());
    let d = Dovecot::start();
    let proxy = WithholdProxy::start(d.imaps_port, 256 << 10, 4 << 20, Duration::from_secs(30));
    let out = run_ok(&[
        "import",
        ar.to_str().unwrap(),
        "--to",
        &format!("imaps://bob@127.0.0.1:{}", proxy.port),
        "--password-file",
        d.password_file("bob").to_str().unwrap(),
        "--tls-ca-file",
        d.ca_file().to_str().unwrap(),
        "--jobs",
        "1",
        "--json",
        "-q",
    ]);
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["appended"], N as u64, "{rep}");
    assert_eq!(rep["verified"], N as u64, "{rep}");
    assert_eq!(rep["failed"], 0, "{rep}");
    assert_eq!(
        (proxy.released_by_bytes(), proxy.released_by_deadline()),
        (1, 0),
        "the appending connection must send 4 MiB without an answer, and no other \
         connection may wait on the proxy's deadline"
    );
    // Every message, byte for byte (as Dovecot serves it), in the archive's order.
    let mut c = d.raw("bob");
    let got = c.fetch_all("INBOX");
    assert_eq!(got.len(), N);
    for (i, (_, _, body)) in got.iter().enumerate() {
        assert_eq!(
            body,
            &support::dovecot::served_form(&message(i)),
            "message {i} by UID order"
        );
    }
    c.logout();
}
