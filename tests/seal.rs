//! Hand-off archives: age encryption (X25519 and SSH ed25519 keys), SSH signatures and
//! the receipt, checked with the tools the receiving side has: Debian's `age`,
//! OpenSSH's `ssh-keygen -Y verify`, `tar`, `sha256sum` and headless Chromium. The main
//! round trip exports from a real Dovecot and imports into a real Dovecot.

mod common;
mod imap_common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use imap_common::*;
use support::raw::mutf7;
use support::Dovecot;

fn tool(name: &str) -> PathBuf {
    for d in ["/usr/bin", "/bin", "/usr/sbin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install Debian's age, openssh-client and chromium (scripts/test.sh does)");
}

fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn sh_ok(cmd: &str) -> Output {
    let o = sh(cmd);
    assert!(o.status.success(), "{cmd}: {}\n{}", stdout(&o), stderr(&o));
    o
}

/// An age X25519 identity made by `age-keygen`: (identity file, recipient).
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let o = Command::new(tool("age-keygen"))
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "age-keygen: {}", stderr(&o));
    let o = Command::new(tool("age-keygen"))
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    (key, stdout(&o).trim().to_string())
}

/// An unprotected OpenSSH ed25519 key: (private key file, public key line).
fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let o = Command::new(tool("ssh-keygen"))
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "archivist@example",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {}", stderr(&o));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

/// Text that zstd cannot shrink much, so messages span many age chunks.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(len + len / 76);
    for i in 0..len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push(abc[(x >> 58) as usize] as char);
        if i % 76 == 75 {
            s.push_str("\r\n");
        }
    }
    s
}

fn message(i: usize, subject: &str, body_len: usize) -> Vec<u8> {
    format!(
        "From: Tester <t@example.com>\r\nTo: a@example.com\r\nSubject: {subject}\r\nMessage-ID: <seal-{i}@test>\r\nDate: Mon, 07 Jan 2019 10:00:00 +0900\r\n\r\n{}\r\n",
        noise(i as u64, body_len)
    )
    .into_bytes()
}

/// A local Maildir++ tree: INBOX and a Japanese folder, messages over several months.
fn maildir(dir: &Path, n: usize) -> PathBuf {
    let root = dir.join("Maildir");
    let mut inbox = Vec::new();
    let mut jp = Vec::new();
    for i in 0..n {
        let t = 1_546_300_800 + i as i64 * 20 * 86_400; // every 20 days from 2019-01-01
        let (subject, target) = if i % 3 == 0 {
            ("請求書 <script>alert(1)</script>".to_string(), &mut jp)
        } else {
            (format!("report {i}"), &mut inbox)
        };
        target.push((format!("{t}.M{i}.test:2,S"), message(i, &subject, 6000), t));
    }
    for (dir, msgs) in [(root.clone(), inbox), (root.join(".取引先"), jp)] {
        let files: Vec<(String, Vec<u8>)> = msgs
            .iter()
            .map(|(n, b, _)| (n.clone(), b.clone()))
            .collect();
        write_maildir_folder(&dir, &files);
        for (name, _, t) in &msgs {
            let p = dir.join("cur").join(name);
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*t as u64))
                .unwrap();
        }
    }
    root
}

/// `mailark verify ARCHIVE --signer SIGNERS EXTRA…`.
fn verify_signed(archive: &Path, signers: &Path, extra: &[&str]) -> Output {
    let (a, s) = (archive.to_str().unwrap(), signers.to_str().unwrap());
    run(&[&["verify", a, "--signer", s][..], extra].concat())
}

fn ls_count(archives: &[&Path], key: &Path) -> usize {
    let mut args = vec!["ls".to_string(), "--json".into()];
    args.extend(archives.iter().map(|p| p.display().to_string()));
    args.extend(["-i".to_string(), key.display().to_string()]);
    let o = bin().args(&args).output().unwrap();
    assert!(o.status.success(), "ls: {}", stderr(&o));
    json(&o)["messages"].as_array().unwrap().len()
}

fn allowed_signers(dir: &Path, public: &str) -> PathBuf {
    let p = dir.join("allowed_signers");
    std::fs::write(&p, format!("archivist@example {public}\n")).unwrap();
    p
}

fn ssh_keygen_verify(allowed: &Path, archive: &Path) -> Output {
    let sig = format!("{}.sig", archive.display());
    Command::new(tool("ssh-keygen"))
        .args(["-Y", "verify", "-f"])
        .arg(allowed)
        .args(["-I", "archivist@example", "-n", "mailark", "-s", &sig])
        .stdin(std::fs::File::open(archive).unwrap())
        .output()
        .unwrap()
}

/// Seeds alice on Dovecot: INBOX, Sent and a Japanese folder, each with a few messages.
fn seed_alice(d: &Dovecot, first: usize, n: usize) {
    let mut c = d.raw("alice");
    if first == 0 {
        c.must(&format!(
            "CREATE {}",
            support::raw::quote(&mutf7("取引先/請求"))
        ));
    }
    for i in first..first + n {
        let folder = ["INBOX", "Sent", &mutf7("取引先/請求")][i % 3].to_string();
        let m = message(i, &format!("見積もり {i}"), 3000);
        let r = c.append(&folder, "\\Seen", Some("07-Jan-2019 10:00:00 +0900"), &m);
        assert!(r.ok(), "{}", r.status);
    }
    c.logout();
}

fn folder_bytes(d: &Dovecot, user: &str) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut c = d.raw(user);
    let mut out = Vec::new();
    for f in ["INBOX", "Sent", "取引先/請求"] {
        let msgs = c.fetch_all(&mutf7(f));
        let mut bodies: Vec<Vec<u8>> = msgs.into_iter().map(|m| m.2).collect();
        bodies.sort();
        out.push((f.to_string(), bodies));
    }
    c.logout();
    out
}

#[test]
fn x25519_round_trip_from_dovecot_signed_then_an_encrypted_delta_and_import() {
    let d = Dovecot::start();
    seed_alice(&d, 0, 9);
    let t = tempfile::tempdir().unwrap();
    let (key, recipient) = age_key(t.path(), "key.txt");
    let (sign_key, sign_pub) = ssh_key(t.path(), "signer");
    let full = t.path().join("alice.tar.zst.age");
    let sign_arg = sign_key.display().to_string();
    let o = export(
        &d,
        "alice",
        &full,
        &["--encrypt-to", &recipient, "--sign", &sign_arg],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&full).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    assert!(
        !contains(&bytes, "見積もり".as_bytes()),
        "plaintext mail in the file"
    );
    assert!(
        !contains(&bytes, b"index.jsonl"),
        "plaintext index in the file"
    );

    // Without a key: a clear refusal naming the file.
    let o = run(&["ls", full.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("alice.tar.zst.age") && stderr(&o).contains("--identity"));
    assert_eq!(ls_count(&[&full], &key), 9);

    // The receiving side with plain tools: age, tar, sha256sum, ssh-keygen.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    sh_ok(&format!(
        "age -d -i '{}' '{}' | tar --zstd -x -C '{}'",
        key.display(),
        full.display(),
        x.display()
    ));
    sh_ok(&format!(
        "cd '{}' && sha256sum -c --quiet SHA256SUMS",
        x.display()
    ));
    let allowed = allowed_signers(t.path(), &sign_pub);
    let o = ssh_keygen_verify(&allowed, &full);
    assert!(o.status.success(), "ssh-keygen -Y verify: {}", stderr(&o));

    // A delta, encrypted too, reading its encrypted parent.
    seed_alice(&d, 9, 2);
    let delta = t.path().join("alice-d1.tar.zst.age");
    let key_arg = key.display().to_string();
    let o = export(
        &d,
        "alice",
        &delta,
        &[
            "--since",
            full.to_str().unwrap(),
            "-i",
            &key_arg,
            "--encrypt-to",
            &recipient,
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["messages"], 2, "{}", stdout(&o));
    assert!(std::fs::read(&delta)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n"));
    assert_eq!(ls_count(&[&full, &delta], &key), 11);
    let o = run(&[
        "verify",
        full.to_str().unwrap(),
        delta.to_str().unwrap(),
        "-i",
        &key_arg,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    // Restore the chain into bob and compare every message's bytes with alice's.
    let o = run_logged_in(
        &[
            "import",
            full.to_str().unwrap(),
            delta.to_str().unwrap(),
            "--to",
            &d.imaps_url("bob"),
            "-i",
            &key_arg,
            "--json",
        ],
        &d.login_args("bob"),
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json(&o)["appended"], 11);
    assert_eq!(folder_bytes(&d, "alice"), folder_bytes(&d, "bob"));
}

#[test]
fn ssh_ed25519_recipient_round_trip_and_the_age_cli_both_ways() {
    let t = tempfile::tempdir().unwrap();
    let src = maildir(t.path(), 30);
    let (sshkey, sshpub) = ssh_key(t.path(), "id_ed25519");
    let enc = t.path().join("a.tar.zst.age");
    export_maildir(&src, &enc, &["--encrypt-to", &sshpub]);
    assert_eq!(ls_count(&[&enc], &sshkey), 30);
    let o = run(&[
        "verify",
        enc.to_str().unwrap(),
        "-i",
        sshkey.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // Debian's age opens it with the same SSH key.
    let o = sh_ok(&format!(
        "age -d -i '{}' '{}' | tar --zstd -t",
        sshkey.display(),
        enc.display()
    ));
    assert!(stdout(&o).contains("index.jsonl"));
    // And mailark reads what `age -r` made of a plain archive.
    let plain = t.path().join("p.tar.zst");
    export_maildir(&src, &plain, &[]);
    let (key, recipient) = age_key(t.path(), "key.txt");
    let wrapped = t.path().join("p.tar.zst.age");
    sh_ok(&format!(
        "age -r {recipient} -o '{}' '{}'",
        wrapped.display(),
        plain.display()
    ));
    assert_eq!(ls_count(&[&wrapped], &key), 30);
    let out = t.path().join("out");
    let o = run(&[
        "extract",
        wrapped.to_str().unwrap(),
        "--to",
        &format!("maildir:{}", out.display()),
        "-i",
        key.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["messages"], 30);
    // Nothing decrypted lands on disk besides what extract was asked to write.
    let names: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".part")), "{names:?}");
}

#[test]
fn a_wrong_identity_and_a_flipped_byte_are_named() {
    let t = tempfile::tempdir().unwrap();
    let src = maildir(t.path(), 60);
    let (key, recipient) = age_key(t.path(), "key.txt");
    let (stranger, _) = age_key(t.path(), "stranger.txt");
    let enc = t.path().join("a.tar.zst.age");
    export_maildir(&src, &enc, &["--encrypt-to", &recipient]);
    let o = run(&[
        "ls",
        enc.to_str().unwrap(),
        "-i",
        stranger.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("a.tar.zst.age") && e.contains("stranger.txt"),
        "{e}"
    );
    let o = run(&[
        "verify",
        enc.to_str().unwrap(),
        "-i",
        stranger.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let o = run(&[
        "ls",
        enc.to_str().unwrap(),
        "-i",
        t.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("none"), "{}", stderr(&o));

    let good = std::fs::read(&enc).unwrap();
    assert!(good.len() > 200_000, "the archive spans few age chunks");
    // One byte in the mail: ls (index only) still works, verify names the tampering.
    let mid = t.path().join("mid.tar.zst.age");
    let mut b = good.clone();
    b[good.len() / 3] ^= 0x01;
    std::fs::write(&mid, &b).unwrap();
    assert_eq!(ls_count(&[&mid], &key), 60);
    let o = run(&["verify", mid.to_str().unwrap(), "-i", key.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("age authentication failed"),
        "{}",
        stdout(&o)
    );
    // One byte near the end (index frame, trailer): ls refuses, naming it.
    let end = t.path().join("end.tar.zst.age");
    let mut b = good.clone();
    let n = b.len();
    b[n - 40] ^= 0x80;
    std::fs::write(&end, &b).unwrap();
    let o = run(&["ls", end.to_str().unwrap(), "-i", key.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("age authentication failed"),
        "{}",
        stderr(&o)
    );
    let o = run(&["verify", end.to_str().unwrap(), "-i", key.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("age authentication failed"), "{all}");
    // One byte in the header (a recipient stanza): the header MAC catches it.
    let head = t.path().join("head.tar.zst.age");
    let mut b = good.clone();
    let at = b.windows(4).position(|w| w == b"\n---").unwrap() - 3;
    b[at] ^= 0x01;
    std::fs::write(&head, &b).unwrap();
    let o = run(&[
        "verify",
        head.to_str().unwrap(),
        "-i",
        key.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("head.tar.zst.age"), "{all}");
}

#[test]
fn a_signature_is_checked_by_ssh_keygen_and_verify_and_refused_for_a_changed_file() {
    let t = tempfile::tempdir().unwrap();
    let src = maildir(t.path(), 12);
    let (sign_key, sign_pub) = ssh_key(t.path(), "signer");
    let ar = t.path().join("a.tar.zst");
    export_maildir(&src, &ar, &["--sign", sign_key.to_str().unwrap()]);
    let sig = t.path().join("a.tar.zst.sig");
    assert!(std::fs::read_to_string(&sig)
        .unwrap()
        .starts_with("-----BEGIN SSH SIGNATURE-----"));
    let allowed = allowed_signers(t.path(), &sign_pub);
    assert!(ssh_keygen_verify(&allowed, &ar).status.success());
    let o = verify_signed(&ar, &allowed, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v = json(&o);
    assert_eq!(v["signatures"][0]["status"], "good", "{v}");
    assert_eq!(v["signatures"][0]["signer"], "archivist@example");
    // A bare public key line is a signer list too.
    let pubfile = t.path().join("signer.pub");
    let o = verify_signed(&ar, &pubfile, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("good"), "{}", stdout(&o));

    // A signature OpenSSH made itself (sha512) checks too.
    let theirs = t.path().join("theirs.tar.zst");
    std::fs::copy(&ar, &theirs).unwrap();
    let o = Command::new(tool("ssh-keygen"))
        .args(["-Y", "sign", "-n", "mailark", "-f"])
        .arg(&sign_key)
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify_signed(&theirs, &allowed, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(json(&o)["signatures"][0]["status"], "good");

    // Someone else's key is not a signer.
    let (_, other_pub) = ssh_key(t.path(), "other");
    let other = t.path().join("other_signers");
    std::fs::write(&other, format!("x@example {other_pub}\n")).unwrap();
    let o = verify_signed(&ar, &other, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("[signature]"), "{}", stdout(&o));

    // One changed byte: OpenSSH and mailark both refuse.
    let mut b = std::fs::read(&ar).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x20;
    std::fs::write(&ar, &b).unwrap();
    assert!(!ssh_keygen_verify(&allowed, &ar).status.success());
    let o = verify_signed(&ar, &allowed, &["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["signatures"][0]["status"], "bad", "{v}");
    assert!(v["signatures"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("changed"));

    // No signature file at all, when one is asked for.
    std::fs::remove_file(&sig).unwrap();
    let o = verify_signed(&ar, &allowed, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("no signature"), "{}", stdout(&o));
}

#[test]
fn the_receipt_renders_in_chromium_with_the_counts_and_japanese_names() {
    let t = tempfile::tempdir().unwrap();
    let src = maildir(t.path(), 30);
    let (key, recipient) = age_key(t.path(), "key.txt");
    let (sign_key, sign_pub) = ssh_key(t.path(), "signer");
    let ar = t.path().join("a.tar.zst.age");
    export_maildir(
        &src,
        &ar,
        &[
            "--encrypt-to",
            &recipient,
            "--sign",
            sign_key.to_str().unwrap(),
        ],
    );
    let allowed = allowed_signers(t.path(), &sign_pub);
    let page = t.path().join("receipt.html");
    let o = run(&[
        "receipt",
        ar.to_str().unwrap(),
        "-i",
        key.to_str().unwrap(),
        "--signer",
        allowed.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    check_json_scheme("receipt", &v, &["receipt", "messages", "findings"]);
    assert_eq!(v["messages"], 30);
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained and safe: no script, no external reference, subjects escaped.
    assert!(!html.contains("<script"), "unescaped markup from mail");
    for bad in ["http:", "https:", "src=", "<link", "@import"] {
        assert!(!html.contains(bad), "{bad} in the page");
    }

    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| -> Output {
        let mut c = Command::new(tool("chromium"));
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null());
        c.output().unwrap()
    };
    let o = chromium(&["--dump-dom"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dom = stdout(&o);
    assert!(
        dom.contains("取引先"),
        "Japanese folder name missing from the DOM"
    );
    assert!(dom.contains("id=\"total\">30<"), "total count missing");
    assert!(dom.contains("id=\"checked\">30<"), "checked count missing");
    assert!(dom.contains("id=\"problems\">0<"));
    assert!(dom.contains("good: signed by archivist@example"));
    assert!(dom.contains("age-encrypted"));
    // Subjects from mail are shown as text, escaped (the newest ten are listed).
    assert!(
        dom.contains("請求書 &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dom}"
    );
    // Ten of the thirty messages are in the Japanese folder.
    assert!(
        dom.contains("<td>取引先</td><td></td><td class=\"n\">10</td>"),
        "{dom}"
    );

    let shot = t.path().join("receipt.png");
    let o = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // A blank page compresses to a few KiB; text, tables and bars do not.
    assert!(png.len() > 20_000, "screenshot is {} bytes", png.len());
}
