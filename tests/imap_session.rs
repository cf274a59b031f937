//! The IMAP session wrapper against the real Dovecot: implicit TLS and STARTTLS logins,
//! a refused password, LIST with special-use roles, subscriptions and decoded names,
//! EXAMINE facts, and a pipelined `UID FETCH` whose bytes equal what the server stores.

mod support;

use mailark::source::imap::{Event, FetchWhat, ImapError, ImapSession};
use mailark::source::net::{Auth, Credentials, Endpoint, Secret, TlsOptions};
use support::raw::mutf7;
use support::Dovecot;

fn creds(d: &Dovecot, user: &str) -> Credentials {
    Credentials {
        user: user.into(),
        auth: Auth::Password(Secret::new(d.password(user))),
    }
}

fn tls(d: &Dovecot) -> TlsOptions {
    TlsOptions {
        ca_file: Some(d.ca_file()),
        ..Default::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn session_lists_examines_and_fetches() {
    let d = Dovecot::start();
    let mut c = d.raw("alice");
    c.must(&format!("CREATE \"{}\"", mutf7("受信箱/取引先")));
    c.must("CREATE \"a&-b/c.d e\"");
    c.must(&format!("SUBSCRIBE \"{}\"", mutf7("受信箱/取引先")));
    let m1 = b"From: a@example.com\r\nSubject: one\r\n\r\nbody 1\r\n".to_vec();
    let m2 = b"From: b@example.com\r\nSubject: two\r\n\r\nbody 2\r\n".to_vec();
    assert!(c
        .append(
            "INBOX",
            "\\Seen $Label1",
            Some("07-Jan-2019 10:00:00 +0900"),
            &m1
        )
        .ok());
    assert!(c.append("INBOX", "\\Deleted", None, &m2).ok());
    c.logout();

    rt().block_on(async {
        let ep = Endpoint::parse(&d.imaps_url("alice")).unwrap();
        let mut s = ImapSession::connect(&ep, &creds(&d, "alice"), &tls(&d))
            .await
            .unwrap();
        assert!(s.has_capability("imap4rev1"));
        assert_eq!(
            s.namespace().await.unwrap(),
            Some((String::new(), Some('/')))
        );
        let list = s.list().await.unwrap();
        let by = |n: &str| list.iter().find(|m| m.name == n).cloned();
        let jp = by("受信箱/取引先").expect("Japanese folder listed");
        assert_eq!(jp.raw_name, mutf7("受信箱/取引先"));
        assert_eq!(jp.delimiter, Some('/'));
        assert!(by("受信箱").is_some(), "parent listed: {list:?}");
        assert_eq!(by("Sent").unwrap().special_use.as_deref(), Some("\\Sent"));
        assert!(by("Sent").unwrap().subscribed);
        assert!(jp.subscribed);
        assert!(!by("a&b/c.d e").expect("listed").subscribed, "{list:?}");

        let st = s.examine("INBOX").await.unwrap();
        assert_eq!(st.exists, 2);
        assert!(st.uidvalidity.is_some() && st.uidnext == Some(3));
        assert!(st.highestmodseq.is_some());
        // Two fetches in flight at once.
        let t1 = s.send_uid_fetch("1", FetchWhat::Full).await.unwrap();
        let t2 = s.send_uid_fetch("2", FetchWhat::Full).await.unwrap();
        let mut got = Vec::new();
        let mut done = Vec::new();
        while done.len() < 2 {
            match s.next_event().await.unwrap() {
                Event::Fetch(m) => got.push(m),
                Event::Done { tag, ok, .. } => {
                    assert!(ok);
                    done.push(tag)
                }
                _ => {}
            }
        }
        assert_eq!(done, vec![t1, t2]);
        assert_eq!(got[0].body.as_deref(), Some(&m1[..]));
        assert_eq!(got[1].body.as_deref(), Some(&m2[..]));
        assert_eq!(got[0].size, Some(m1.len() as u32));
        let f0 = got[0].flags.clone().unwrap();
        assert!(f0.contains(&"$Label1".to_string()) && f0.contains(&"\\Seen".to_string()));
        assert!(got[1]
            .flags
            .as_ref()
            .unwrap()
            .contains(&"\\Deleted".to_string()));
        let when =
            mailark::source::imap::parse_internaldate(got[0].internaldate.as_deref().unwrap());
        assert_eq!(when.unwrap().timestamp(), 1546822800);
        // A folder that does not exist is an error naming it.
        let e = s.examine("nope").await.unwrap_err();
        assert!(
            matches!(e, ImapError::Folder { .. }) && e.to_string().contains("nope"),
            "{e}"
        );
        s.logout().await.unwrap();
    });
    // EXAMINE + BODY.PEEK left \Seen alone.
    let mut c = d.raw("alice");
    let all = c.fetch_all("INBOX");
    assert!(!all[1].1.contains("\\Seen"), "{:?}", all[1].1);
}

#[test]
fn starttls_and_refusals() {
    let d = Dovecot::start();
    rt().block_on(async {
        let ep = Endpoint::parse(&d.imap_url("bob")).unwrap();
        let s = ImapSession::connect(&ep, &creds(&d, "bob"), &tls(&d))
            .await
            .expect("STARTTLS login");
        s.logout().await.unwrap();
        // Untrusted certificate.
        let e = ImapSession::connect(&ep, &creds(&d, "bob"), &TlsOptions::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
        // Wrong password: the server's words, never the password.
        let bad = Credentials {
            user: "bob".into(),
            auth: Auth::Password(Secret::new("not-the-pw-Q7")),
        };
        let e = ImapSession::connect(&ep, &bad, &tls(&d)).await.unwrap_err();
        assert!(matches!(e, ImapError::Login { .. }), "{e}");
        assert!(!format!("{e} {e:?}").contains("not-the-pw-Q7"));
    });
}

/// `fetch_section` (import's verification of headers and bodies, `verify --against`'s
/// byte comparisons) sends its runs of UIDs without waiting for each one's answer: a
/// proxy holds every answer once the client has sent 3 KiB and lets them go only when
/// 8 KiB more arrived. Scattered UIDs make each run's command about a kilobyte, so a
/// client waiting for each run's answer stays on the first and the hold ends only at
/// its deadline. Every header asked for must still come back, each with its UID.
#[test]
fn fetch_section_sends_its_runs_before_the_first_answer() {
    let d = Dovecot::start();
    let msgs: Vec<(Vec<u8>, &str, i64)> = (1..=6000)
        .map(|i| {
            let m = format!("Subject: m{i}\r\nMessage-ID: <{i}@x>\r\n\r\nbody {i}\r\n");
            (m.into_bytes(), "S", 1_600_000_000 + i)
        })
        .collect();
    d.seed_maildir("alice", "INBOX", &msgs);
    let proxy = support::withhold::WithholdProxy::start(
        d.imaps_port,
        3 << 10,
        8 << 10,
        std::time::Duration::from_secs(10),
    );
    let url = format!("imaps://alice@127.0.0.1:{}", proxy.port);
    let heads = rt().block_on(async {
        let ep = Endpoint::parse(&url).unwrap();
        let mut s = ImapSession::connect(&ep, &creds(&d, "alice"), &tls(&d))
            .await
            .unwrap();
        assert_eq!(s.examine("INBOX").await.unwrap().exists, 6000);
        let odd: Vec<u32> = (1..=6000).filter(|u| u % 2 == 1).rev().collect();
        let mut heads = std::collections::BTreeMap::new();
        s.fetch_section(&odd, "HEADER", |uid, h| {
            heads.insert(uid, String::from_utf8_lossy(h).into_owned());
        })
        .await
        .unwrap();
        s.logout().await.unwrap();
        heads
    });
    assert_eq!(heads.len(), 3000);
    for (uid, h) in &heads {
        assert!(h.contains(&format!("<{uid}@x>")), "UID {uid}: {h}");
    }
    assert_eq!(
        (proxy.released_by_bytes(), proxy.released_by_deadline()),
        (1, 0),
        "the runs must go out before their answers"
    );
}
