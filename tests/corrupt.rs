//! Damaged and hostile archives: flipped bytes, truncation, a removed index, an extra
//! member, and crafted tars with `../` and absolute member names. `verify` must name
//! every problem (exit 1), never crash, and `extract` must never write outside its
//! target.

mod common;
mod support;
use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A small valid archive of the fixtures; returns its path.
fn good_archive(dir: &Path, layout: &str) -> PathBuf {
    let src = dir.join("src");
    let msgs: Vec<(String, Vec<u8>)> = fixtures()
        .into_iter()
        .enumerate()
        .map(|(i, (_, b))| (format!("{}.x{i}:2,S", 1_700_000_000 + i), b))
        .collect();
    write_maildir_folder(&src.join("INBOX"), &msgs);
    let ar = dir.join(format!("good-{layout}.tar.zst"));
    export_maildir(&src, &ar, &["--layout", layout]);
    ar
}

/// `mailark extract AR --to maildir:TARGET`.
fn extract(ar: &Path, target: &Path) -> std::process::Command {
    let mut c = bin();
    c.args(["extract", ar.to_str().unwrap(), "--to"])
        .arg(format!("maildir:{}", target.display()));
    c
}

fn verify_json(ar: &Path) -> (i32, serde_json::Value) {
    let out = run(&["verify", ar.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json printed no JSON ({e}): {}{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out.status.code().unwrap(), v)
}

fn codes(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

/// Decompresses a whole archive to its tar bytes.
fn tar_bytes(ar: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(ar).unwrap())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn write_zst(path: &Path, tar: &[u8]) {
    let mut e = zstd::stream::write::Encoder::new(std::fs::File::create(path).unwrap(), 3).unwrap();
    e.write_all(tar).unwrap();
    e.finish().unwrap();
}

/// A raw ustar header for `name` (any bytes, no checks), then data and padding.
fn raw_member(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut v = h.to_vec();
    v.extend_from_slice(data);
    v.resize(v.len() + (512 - data.len() % 512) % 512, 0);
    v
}

#[test]
fn clean_archive_verifies_clean() {
    let t = tempfile::tempdir().unwrap();
    for layout in ["maildir", "mbox"] {
        let (code, v) = verify_json(&good_archive(t.path(), layout));
        assert_eq!(code, 0, "{v}");
        assert!(codes(&v).is_empty());
    }
}

#[test]
fn flipped_byte_in_mail_is_found() {
    let t = tempfile::tempdir().unwrap();
    for layout in ["maildir", "mbox"] {
        let ar = good_archive(t.path(), layout);
        let mut b = std::fs::read(&ar).unwrap();
        // Rewrite the data as a new archive whose single message frame has one byte of one
        // message changed, keeping the original index: a silent bit flip zstd cannot see.
        let tar = tar_bytes(&ar);
        let needle = b"line two";
        let pos = tar.windows(needle.len()).position(|w| w == needle).unwrap();
        let mut bad = tar.clone();
        bad[pos] ^= 0x20;
        let bad_ar = t.path().join(format!("flip-{layout}.tar.zst"));
        write_zst(&bad_ar, &bad);
        let (code, v) = verify_json(&bad_ar);
        assert_eq!(code, 1, "{v}");
        let c = codes(&v);
        assert!(c.contains(&"hash-mismatch".to_string()), "{c:?}");
        assert!(c.contains(&"trailer".to_string()), "{c:?}");
        let f = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == "hash-mismatch")
            .unwrap();
        assert_eq!(f["folder"], "INBOX");
        assert!(
            f["message"].as_str().unwrap().contains("source INBOX/cur/"),
            "{f}"
        );
        // And a flip in the compressed bytes: zstd's checksum or our hashes notice.
        let mid = b.len() / 3;
        b[mid] ^= 0xff;
        let raw_flip = t.path().join(format!("rawflip-{layout}.tar.zst"));
        std::fs::write(&raw_flip, &b).unwrap();
        let (code, v) = verify_json(&raw_flip);
        assert_eq!(code, 1, "{v}");
        assert!(!codes(&v).is_empty());
    }
}

#[test]
fn truncation_and_index_damage_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let ar = good_archive(t.path(), "maildir");
    let b = std::fs::read(&ar).unwrap();
    for cut in [b.len() - 1, b.len() - 100, b.len() / 2, 600] {
        let p = t.path().join(format!("cut{cut}.tar.zst"));
        std::fs::write(&p, &b[..cut]).unwrap();
        let (code, v) = verify_json(&p);
        assert_eq!(code, 1, "cut at {cut}: {v}");
        assert!(
            codes(&v).iter().any(|c| c == "trailer" || c == "no-index"),
            "{v}"
        );
        // ls refuses it with one line naming the file.
        let out = run(&["ls", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(p.to_str().unwrap()), "{err}");
    }
    // An index line edited in place: the index checksum catches it.
    let tar = tar_bytes(&ar);
    let needle = b"\"subject\":\"CRLF line endings\"";
    let pos = tar.windows(needle.len()).position(|w| w == needle).unwrap();
    let mut bad = tar.clone();
    bad[pos + 12] = b'X';
    let p = t.path().join("index-edit.tar.zst");
    write_zst(&p, &bad);
    let (code, v) = verify_json(&p);
    assert_eq!(code, 1);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["detail"].as_str().unwrap().contains("checksum")),
        "{v}"
    );
}

#[test]
fn removed_index_and_extra_member() {
    let t = tempfile::tempdir().unwrap();
    let ar = good_archive(t.path(), "maildir");
    let tar = tar_bytes(&ar);
    let mut a = tar::Archive::new(&tar[..]);
    let mut without_index = Vec::new();
    let mut with_extra = Vec::new();
    {
        let mut b1 = tar::Builder::new(&mut without_index);
        let mut b2 = tar::Builder::new(&mut with_extra);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let mut h = e.header().clone();
            if path != Path::new("index.jsonl") {
                b1.append_data(&mut h.clone(), &path, &data[..]).unwrap();
            }
            b2.append_data(&mut h, &path, &data[..]).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        b2.append_data(&mut h, "maildir/INBOX/cur/intruder:2,S", &b"hello"[..])
            .unwrap();
        b1.finish().unwrap();
        b2.finish().unwrap();
    }
    let p1 = t.path().join("noindex.tar.zst");
    write_zst(&p1, &without_index);
    let (code, v) = verify_json(&p1);
    assert_eq!(code, 1, "{v}");
    assert!(codes(&v).contains(&"no-index".to_string()), "{v}");
    let p2 = t.path().join("extra.tar.zst");
    write_zst(&p2, &with_extra);
    let (code, v) = verify_json(&p2);
    assert_eq!(code, 1);
    let extra: Vec<_> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "extra-member")
        .collect();
    assert_eq!(extra.len(), 1, "{v}");
    assert!(extra[0]["detail"].as_str().unwrap().contains("intruder"));
    // Every message was still checked: all 20 fixtures.
    assert_eq!(v["messages"], 20);
}

#[test]
fn hostile_member_names_never_escape() {
    let t = tempfile::tempdir().unwrap();
    let ar = good_archive(t.path(), "maildir");
    let mut tar = tar_bytes(&ar);
    // Drop the end-of-archive blocks, then append hostile members and end again.
    while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|&b| b == 0) {
        tar.truncate(tar.len() - 512);
    }
    tar.extend(raw_member(b"../escaped.eml", b"evil"));
    tar.extend(raw_member(b"/tmp/mailark-absolute-test.eml", b"evil"));
    tar.extend(raw_member(b"maildir/INBOX/../../../up.eml", b"evil"));
    tar.extend([0u8; 1024]);
    let p = t.path().join("hostile.tar.zst");
    write_zst(&p, &tar);
    let (code, v) = verify_json(&p);
    assert_eq!(code, 1);
    let unsafe_names: Vec<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "unsafe-member")
        .map(|f| f["detail"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(unsafe_names.len(), 3, "{v}");
    // Extraction goes by the index, so the hostile members are never written anywhere.
    let target = t.path().join("deep/target");
    let out = extract(&p, &target).output().unwrap();
    // The trailer is gone (we rewrote the file): extract finds the index by scanning, says
    // so, and writes the real messages only.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    // Maildir++: INBOX is the target directory itself.
    assert_eq!(read_tree(&target.join("cur")).len(), 20);
    assert!(!t.path().join("deep/escaped.eml").exists());
    assert!(!t.path().join("escaped.eml").exists());
    assert!(!t.path().join("up.eml").exists());
    assert!(!Path::new("/tmp/mailark-absolute-test.eml").exists());
}

#[test]
fn not_an_archive_is_unusable_input() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plain.txt");
    std::fs::write(&p, b"hello, I am not an archive").unwrap();
    let (code, v) = verify_json(&p);
    assert_eq!(code, 2);
    assert_eq!(codes(&v), vec!["not-an-archive"]);
    let (code, _) = verify_json(&t.path().join("missing.tar.zst"));
    assert_eq!(code, 2);
}

fn first_message(recs: &mut [serde_json::Value]) -> &mut serde_json::Value {
    recs.iter_mut().find(|r| r["type"] == "message").unwrap()
}

fn bump_folder_count(recs: &mut [serde_json::Value], by: u64) {
    let f = recs.iter_mut().find(|r| r["type"] == "folder").unwrap();
    f["messages"] = (f["messages"].as_u64().unwrap() + by).into();
}

#[test]
fn lenient_index_faults_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let ar = good_archive(t.path(), "maildir");
    let has = |p: &Path, code: &str| {
        let (exit, v) = verify_json(p);
        assert_eq!(exit, 1, "{v}");
        assert!(codes(&v).contains(&code.to_string()), "no {code}: {v:#}");
        assert!(!codes(&v).contains(&"trailer".to_string()), "{v:#}");
    };

    // Two records naming one member: extract would write the message twice.
    let p = t.path().join("shared.tar.zst");
    tampered(
        &ar,
        &p,
        |recs| {
            let mut m = first_message(recs).clone();
            m["folder"] = "INBOX".into();
            recs.push(m);
            bump_folder_count(recs, 1);
        },
        &[],
    );
    has(&p, "shared-member");

    // A message stored as a FIFO or a device is not a file.
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    for (kind, name) in [
        (tar::EntryType::Fifo, "maildir/INBOX/cur/1.fifo:2,S"),
        (tar::EntryType::Char, "maildir/INBOX/cur/1.chr:2,S"),
    ] {
        let p = t.path().join("special.tar.zst");
        tampered(
            &ar,
            &p,
            |recs| {
                let mut m = first_message(recs).clone();
                m["path"] = name.into();
                m["size"] = 0.into();
                m["sha256"] = empty.into();
                recs.push(m);
                bump_folder_count(recs, 1);
            },
            &[(kind, name, b"")],
        );
        has(&p, "not-a-file");
    }

    // A size that disagrees with the member, whatever the hash says, in both layouts.
    let mbox = good_archive(t.path(), "mbox");
    for (good, name) in [(&mbox, "size-mbox.tar.zst"), (&ar, "size.tar.zst")] {
        let p = t.path().join(name);
        tampered(
            good,
            &p,
            |recs| {
                let m = first_message(recs);
                m["size"] = (m["size"].as_u64().unwrap() + 1).into();
            },
            &[],
        );
        has(&p, "size-mismatch");
    }

    // An INTERNALDATE that cannot be read would become "now" on import.
    let p = t.path().join("date.tar.zst");
    tampered(
        &ar,
        &p,
        |recs| first_message(recs)["internaldate"] = "yesterday-ish".into(),
        &[],
    );
    has(&p, "bad-internaldate");
}

/// Import of an archive whose compressed data is damaged part-way: every message the
/// damage keeps out of reach is listed as failed with the reason, what comes before it
/// is appended, the report (`--json` here) is printed and the exit is 1, never a bare
/// error with exit 2, wherever the damage sits. A rerun appends nothing more.
#[test]
fn import_of_a_damaged_archive_reports_what_it_could_not_read() {
    let d = support::Dovecot::start();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let msgs: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let mut b = format!("Subject: m{i}\r\nMessage-ID: <m{i}@t>\r\n\r\n").into_bytes();
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
            // Text noise (no NUL or 8-bit bytes, which a server may rewrite) that zstd
            // cannot squeeze much.
            const B64: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            for n in 0..(32 << 10) / 8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.extend((0..8).map(|k| B64[((x >> (k * 6)) & 63) as usize]));
                if n % 9 == 8 {
                    b.extend_from_slice(b"\r\n");
                }
            }
            b.extend_from_slice(b"\r\n");
            (format!("{}.x{i}:2,S", 1_700_000_000 + i), b)
        })
        .collect();
    write_maildir_folder(&src.join("INBOX"), &msgs);
    let ar = t.path().join("a.tar.zst");
    export_maildir(&src, &ar, &["-q"]);
    let good = std::fs::read(&ar).unwrap();
    let import = |bad: &Path, extra: &[&str]| {
        let url = d.imaps_url("bob");
        let args = [
            &["import", bad.to_str().unwrap(), "--to", &url, "--json"][..],
            extra,
        ]
        .concat();
        run_logged_in(&args, &d.login_args("bob"))
    };
    // Damage at several places (a run of garbage, then a few flipped bytes) in the
    // message data, which is the first 90 % of the file; the index stays readable.
    for (k, tenth) in [1usize, 3, 5, 7, 8].iter().enumerate() {
        let mut bytes = good.clone();
        let at = bytes.len() * tenth / 10;
        let len = if k % 2 == 0 { 4096 } else { 8 };
        for b in &mut bytes[at..at + len] {
            *b = if k % 2 == 0 { 0xff } else { *b ^ 0x5a };
        }
        let bad = t.path().join(format!("bad{k}.tar.zst"));
        std::fs::write(&bad, &bytes).unwrap();
        let o = import(&bad, &["--dry-run"]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "damage at {tenth}/10: {}",
            stderr(&o)
        );
        let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!("damage at {tenth}/10: no JSON report ({e}): {}", stderr(&o))
        });
        let (to_append, failed) = (
            rep["to_append"].as_u64().unwrap(),
            rep["failed"].as_u64().unwrap(),
        );
        assert!(failed > 0, "damage at {tenth}/10: {rep:#}");
        assert_eq!(to_append + failed, 40, "damage at {tenth}/10: {rep:#}");
        let reasons: Vec<&str> = rep["folders"][0]["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["reason"].as_str().unwrap())
            .collect();
        assert!(
            reasons.iter().all(|r| r.contains("damaged in the archive")
                || r.contains("could not be read from the archive")),
            "{reasons:?}"
        );
    }
    // For real, once: what could be read is appended and verified; a rerun adds nothing.
    let bad = t.path().join("bad0.tar.zst");
    let o = import(&bad, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let appended = rep["appended"].as_u64().unwrap();
    assert!(appended > 0, "{rep:#}");
    assert_eq!(rep["verified"].as_u64().unwrap(), appended, "{rep:#}");
    let mut c = d.raw("bob");
    assert_eq!(c.fetch_all("INBOX").len() as u64, appended);
    let again: serde_json::Value = serde_json::from_slice(&import(&bad, &[]).stdout).unwrap();
    assert_eq!(again["appended"], 0, "{again:#}");
}

/// Peak RSS any command may reach on these small damaged archives: a few times what it
/// needs, far below what a size or window the damage makes up could ask for.
const DAMAGE_PEAK_LIMIT: u64 = 256 << 20;

/// What the undamaged archive holds: its message count and each message's SHA-256.
struct Intact {
    total: usize,
    hashes: std::collections::HashSet<String>,
}

/// 36 messages in two folders (folder, file name, bytes): text noise (zstd keeps most of
/// it as literals, so a flipped byte often spoils one message and leaves the next
/// readable) and plain repeated text (where it spoils the decoder's state instead).
fn damage_messages() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut rng = Seeded(0x00d1_5ea5_ed00_0001);
    let mut msgs = Vec::new();
    for (folder, n) in [("INBOX", 24), ("Sub", 12)] {
        for i in 0..n {
            let mut b =
                format!("Subject: {folder} {i}\r\nMessage-ID: <{folder}.{i}@damage>\r\n\r\n")
                    .into_bytes();
            for line in 0..60 + i * 7 {
                if i % 3 == 0 {
                    b.extend_from_slice(format!("plain line {line} of {folder}\r\n").as_bytes());
                } else {
                    const B64: &[u8; 64] =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                    b.extend((0..72).map(|_| B64[(rng.next() & 63) as usize]));
                    b.extend_from_slice(b"\r\n");
                }
            }
            msgs.push((folder, format!("{}.d{i}:2,S", 1_700_000_000 + i), b));
        }
    }
    msgs
}

fn intact() -> Intact {
    let hashes: std::collections::HashSet<String> = damage_messages()
        .iter()
        .map(|(_, _, b)| sha256_hex(b))
        .collect();
    assert_eq!(hashes.len(), 36);
    Intact {
        total: hashes.len(),
        hashes,
    }
}

/// The archive every damage case starts from, committed so that the cases are the same
/// bytes on every run and machine (an export differs each time: its archive id and
/// creation time, and the compressor's output across zstd versions).
fn damage_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/damage/base.tar.zst")
}

/// Writes [`damage_base`] again from [`damage_messages`] (after a change to either):
/// `cargo test --test corrupt write_damage_base -- --ignored`.
#[test]
#[ignore = "writes fixtures/damage/base.tar.zst; run by hand to make it again"]
fn write_damage_base() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("damage");
    for (folder, name, bytes) in damage_messages() {
        write_maildir_folder(&src.join(folder), &[(name, bytes)]);
    }
    let out = damage_base();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    export_maildir(&src, &out, &["-q"]);
}

/// The committed base is still an archive this mailark reads clean, holding exactly the
/// damage messages in their folders: the cases start from what they claim to.
#[test]
fn the_damage_base_verifies_clean_and_holds_the_damage_messages() {
    let base = damage_base();
    let (code, v) = verify_json(&base);
    assert_eq!((code, codes(&v)), (0, vec![]), "{v}");
    assert_eq!(v["messages"], 36, "{v}");
    let mut held: Vec<(String, String)> = ls_json(&[&base])
        .iter()
        .map(|m| {
            let folder = m["folder"].as_str().unwrap().to_string();
            (folder, m["sha256"].as_str().unwrap().to_string())
        })
        .collect();
    let mut want: Vec<(String, String)> = damage_messages()
        .iter()
        .map(|(f, _, b)| (f.to_string(), sha256_hex(b)))
        .collect();
    held.sort();
    want.sort();
    assert_eq!(held, want);
}

/// `(index_offset, index_length)` from a good archive's trailer (spec §3).
fn index_frame(b: &[u8]) -> (usize, usize) {
    let t = &b[b.len() - 72..];
    let word = |at: usize| u64::from_le_bytes(t[at..at + 8].try_into().unwrap()) as usize;
    (word(24), word(32))
}

/// A good archive's tar stream as its two parts: the message frames' and the index
/// frame's.
fn split_frames(good: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (ix, ix_len) = index_frame(good);
    let decode = |b: &[u8]| {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(b)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    (decode(&good[..ix]), decode(&good[ix..ix + ix_len]))
}

/// The archive file the writer would frame from these two parts of a tar stream (each
/// compressed again; a trailer with `good`'s flags pointing at the index frame), so
/// that nothing but a change made to the tar bytes is wrong.
fn frame(good: &[u8], mail: &[u8], index: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut file = zstd::encode_all(mail, 3).unwrap();
    let frame = zstd::encode_all(index, 3).unwrap();
    let mut trailer = good[good.len() - 72..].to_vec();
    trailer[24..32].copy_from_slice(&(file.len() as u64).to_le_bytes());
    trailer[32..40].copy_from_slice(&(frame.len() as u64).to_le_bytes());
    trailer[40..72].copy_from_slice(&sha2::Sha256::digest(&frame));
    file.extend_from_slice(&frame);
    file.extend_from_slice(&trailer);
    file
}

/// Where each message member's data ends, in the message frames' tar bytes, when it
/// does not fill its last block: (member name, end of its data).
fn short_last_blocks(mail: &[u8]) -> Vec<(String, usize)> {
    let mut a = tar::Archive::new(mail);
    let mut v = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let end = (e.raw_file_position() + e.size()) as usize;
        if name.contains("/cur/") && end % 512 != 0 {
            v.push((name, end));
        }
    }
    v
}

/// A byte that is not zero in the padding after a message's data, or in the
/// end-of-archive blocks: no mail is damaged, so `verify` warns (exit 0), naming the
/// member and the byte's offset in the tar stream, and every message is extracted.
#[test]
fn padding_that_is_not_zero_is_a_warning_naming_the_member_and_offset() {
    let t = tempfile::tempdir().unwrap();
    let good = std::fs::read(good_archive(t.path(), "maildir")).unwrap();
    let (mail, index) = split_frames(&good);
    let clean = t.path().join("clean.tar.zst");
    std::fs::write(&clean, frame(&good, &mail, &index)).unwrap();
    let (code, v) = verify_json(&clean);
    assert_eq!((code, codes(&v)), (0, vec![]), "{v}");

    let (member, end) = short_last_blocks(&mail).swap_remove(3);
    let mut m = mail.clone();
    m[end + 5] = 0x41;
    // The second end block: the first one a parser reads as a header.
    let mut ix = index.clone();
    let at = ix.len() - 100;
    ix[at] = 0x07;
    for (what, mail, index, names, offset) in [
        ("member padding", &m, &index, Some(member.as_str()), end + 5),
        ("end blocks", &mail, &ix, None, mail.len() + at),
    ] {
        let p = t.path().join("padding.tar.zst");
        std::fs::write(&p, frame(&good, mail, index)).unwrap();
        let (code, v) = verify_json(&p);
        assert_eq!(code, 0, "{what}: {v}");
        let f = &v["findings"].as_array().unwrap()[..];
        assert_eq!(f.len(), 1, "{what}: {v}");
        assert_eq!(
            (&f[0]["code"], &f[0]["level"]),
            (&"tar-padding".into(), &"warning".into()),
            "{what}: {v}"
        );
        let detail = f[0]["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("byte {offset} ")),
            "{what}: {detail}"
        );
        match names {
            Some(n) => assert!(detail.contains(n), "{what}: {detail}"),
            None => assert!(detail.contains("end-of-archive"), "{what}: {detail}"),
        }
        let target = t.path().join(what);
        let out = extract(&p, &target).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        assert_eq!(read_tree(&target.join("cur")).len(), 20, "{what}");
    }
}

/// What a damage case must make `verify` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Nothing (exit 0): the byte is one readers ignore (the trailer's flags, §3).
    Clean,
    /// One `tar-padding` warning naming the byte at this offset of the tar stream
    /// (exit 0): no mail is in the padding, and all of it comes out.
    Padding(usize),
    /// Damage (exit 1 or 2, a finding); what can be read is recovered.
    Damage,
}

/// One damaged archive, named by its label alone: the base is committed and the
/// offsets and bytes are seeded, so a label is the same case on every run.
struct Case {
    label: String,
    bytes: Vec<u8>,
    expect: Expect,
}

impl Case {
    fn new(label: String, bytes: Vec<u8>, expect: Expect) -> Case {
        Case {
            label,
            bytes,
            expect,
        }
    }
}

/// Everything one damaged archive made each command do.
#[derive(Debug, Default)]
struct Outcome {
    verify: i32,
    extracted: usize,
    extract_failed: usize,
    to_append: Option<u64>,
    /// The highest peak RSS of the three commands.
    peak: u64,
}

/// Runs one command of a damage case: no crash, memory bounded.
fn under_damage(cmd: &mut std::process::Command, what: &str, peak: &mut u64) -> Output {
    let g = guarded(cmd, what);
    assert!(
        g.peak < DAMAGE_PEAK_LIMIT,
        "{what}: peaked at {} MiB",
        g.peak >> 20
    );
    *peak = (*peak).max(g.peak);
    g.out
}

/// Runs `verify`, `extract` and `import --dry-run` on the damaged archive `bad` and checks
/// what holds wherever the damage sits: no crash, memory bounded, `verify` says what
/// `expect` says, nothing written outside the target and no message written that is not
/// an intact one, and every message either recovered or listed.
fn check_damaged(
    label: &str,
    bad: &Path,
    intact: &Intact,
    expect: Expect,
    dry_run: &dyn Fn(&Path) -> std::process::Command,
) -> Outcome {
    let mut got = Outcome::default();
    let o = under_damage(
        bin().args(["verify", bad.to_str().unwrap(), "--json"]),
        &format!("{label}: verify"),
        &mut got.peak,
    );
    got.verify = o.status.code().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{label}: verify --json printed no JSON ({e})"));
    match expect {
        Expect::Clean => assert_eq!((got.verify, codes(&v)), (0, vec![]), "{label}: {v}"),
        Expect::Padding(at) => {
            assert_eq!(got.verify, 0, "{label}: {v}");
            assert_eq!(codes(&v), ["tar-padding"], "{label}: {v}");
            let detail = v["findings"][0]["detail"].as_str().unwrap();
            assert!(detail.contains(&format!("byte {at} ")), "{label}: {detail}");
            let at_end = label.contains("end block");
            let names = if at_end {
                "end-of-archive"
            } else {
                "member \"maildir/"
            };
            assert!(detail.contains(names), "{label}: {detail}");
        }
        Expect::Damage => {
            assert!(
                got.verify == 1 || got.verify == 2,
                "{label}: verify passed damage: {v}"
            );
            assert!(!codes(&v).is_empty(), "{label}: no finding: {v}");
        }
    }
    let harmless = expect != Expect::Damage;

    let sandbox = tempfile::tempdir().unwrap();
    let target = sandbox.path().join("out");
    let o = under_damage(
        extract(bad, &target).arg("--json"),
        &format!("{label}: extract"),
        &mut got.peak,
    );
    let code = o.status.code().unwrap();
    let beside: Vec<_> = std::fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "out")
        .collect();
    assert!(beside.is_empty(), "{label}: written outside: {beside:?}");
    let files = if target.exists() {
        read_tree(&target)
    } else {
        Vec::new()
    };
    for (p, b) in &files {
        let meta = p.ends_with("subscriptions") || p.ends_with("dovecot-keywords");
        assert!(
            meta || (p.contains("cur/") && intact.hashes.contains(&sha256_hex(b))),
            "{label}: extract wrote {p} that is not an intact message"
        );
    }
    got.extracted = files.iter().filter(|(p, _)| p.contains("cur/")).count();
    match code {
        0 | 1 => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            got.extract_failed = v["failed"].as_u64().unwrap() as usize;
            assert_eq!(
                v["messages"].as_u64().unwrap() as usize,
                got.extracted,
                "{label}: {v}"
            );
            assert_eq!(
                got.extracted + got.extract_failed,
                intact.total,
                "{label}: a message neither extracted nor listed: {v}"
            );
            assert_eq!(code == 0, got.extract_failed == 0, "{label}: {v}");
        }
        2 => {
            // Nothing to go by (no index could be read): one error naming the archive
            // (after any warnings), nothing written.
            assert_eq!(got.extracted, 0, "{label}");
            one_error_naming(&o, bad, label);
        }
        c => panic!("{label}: extract exit {c}: {}", stderr(&o)),
    }
    if harmless {
        assert_eq!((code, got.extracted), (0, intact.total), "{label}");
    }

    let o = under_damage(
        &mut dry_run(bad),
        &format!("{label}: import --dry-run"),
        &mut got.peak,
    );
    match o.status.code().unwrap() {
        c @ (0 | 1) => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let (to_append, failed) = (
                v["to_append"].as_u64().unwrap(),
                v["failed"].as_u64().unwrap(),
            );
            assert_eq!(
                (to_append + failed) as usize,
                intact.total,
                "{label}: a message neither planned nor listed: {v}"
            );
            assert_eq!(c == 0, failed == 0, "{label}: {v}");
            assert!(!harmless || c == 0, "{label}: {v}");
            got.to_append = Some(to_append);
        }
        2 => {
            assert_eq!(code, 2, "{label}: import could not run where extract could");
            one_error_naming(&o, bad, label);
        }
        c => panic!("{label}: import exit {c}: {}", stderr(&o)),
    }
    got
}

/// Exactly one `error:` line on stderr, naming `file`.
fn one_error_naming(o: &std::process::Output, file: &Path, label: &str) {
    let err = stderr(o);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{label}: {err}");
    assert!(errors[0].contains(file.to_str().unwrap()), "{label}: {err}");
}

/// The damage cases of the base archive: 200 flipped bytes at seeded offsets over the
/// whole file (140 in the message frames, 40 in the index frame, 20 in the trailer) and
/// 40 seeded truncations plus the frame boundaries. A flip in the trailer's flags word
/// is ignored by the spec (§3: readers ignore unknown bits).
fn raw_damage(good: &[u8]) -> Vec<Case> {
    let (ix, ix_len) = index_frame(good);
    let len = good.len();
    let mut rng = Seeded(0x5eed_0000_0000_0010);
    let mut cases = Vec::new();
    let regions = [
        ("message frames", 0, ix, 140),
        ("index frame", ix, ix + ix_len, 40),
        ("trailer", len - 72, len, 20),
    ];
    for (region, lo, hi, n) in regions {
        for _ in 0..n {
            let at = rng.within(lo, hi);
            let x = rng.flip();
            let mut b = good.to_vec();
            b[at] ^= x;
            let flags = (len - 72 + 20..len - 72 + 24).contains(&at);
            let expect = if flags { Expect::Clean } else { Expect::Damage };
            let label = format!("flip at {at} by 0x{x:02x} ({region}, of {len})");
            cases.push(Case::new(label, b, expect));
        }
    }
    let mut cuts: Vec<usize> = (0..40).map(|_| rng.within(1, len)).collect();
    cuts.extend([0, ix, ix + 1, ix + ix_len, len - 72, len - 1]);
    for cut in cuts {
        let label = format!("cut at {cut} (of {len})");
        cases.push(Case::new(label, good[..cut].to_vec(), Expect::Damage));
    }
    cases
}

/// Flips inside the tar stream itself, the archive then framed again as the writer
/// frames it ([`frame`]), so only the flipped byte is wrong: 25 in tar headers, 25 in
/// message bytes, 10 in the zero padding after a member's data, 4 in the second
/// end-of-archive block (both: a `tar-padding` warning, the mail intact) and 2 in the
/// first (which a parser reads as a header, and refuses).
fn tar_damage(good: &[u8]) -> Vec<Case> {
    let (mail, index) = split_frames(good);
    let (mut headers, mut data) = (Vec::new(), Vec::new());
    let mut a = tar::Archive::new(&mail[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let (h, d, n) = (
            e.raw_header_position() as usize,
            e.raw_file_position() as usize,
            e.size() as usize,
        );
        headers.push(h..h + 512);
        if n > 0 {
            data.push(d..d + n);
        }
    }
    let padding: Vec<_> = short_last_blocks(&mail)
        .into_iter()
        .map(|(_, end)| end..end.next_multiple_of(512))
        .collect();
    // Framed again with nothing changed, the archive is clean: the flips alone are
    // what the checks below see.
    let reframed = frame(good, &mail, &index);
    let mut cases = vec![Case::new(
        "reframed, undamaged".into(),
        reframed,
        Expect::Clean,
    )];
    let mut rng = Seeded(0x5eed_0000_0000_0020);
    for (what, ranges, n) in [
        ("tar header", &headers, 25),
        ("message bytes", &data, 25),
        ("member padding", &padding, 10),
    ] {
        for _ in 0..n {
            let r = &ranges[rng.within(0, ranges.len())];
            let at = rng.within(r.start, r.end);
            let x = rng.flip();
            let mut t = mail.clone();
            t[at] ^= x;
            let expect = match what {
                "member padding" => Expect::Padding(at),
                _ => Expect::Damage,
            };
            let label = format!("tar flip at {at} by 0x{x:02x} ({what})");
            cases.push(Case::new(label, frame(good, &t, &index), expect));
        }
    }
    let first_end = index.len() - 1024;
    for (block, n, expect) in [("second", 4, true), ("first", 2, false)] {
        let lo = if expect { first_end + 512 } else { first_end };
        for _ in 0..n {
            let at = rng.within(lo, lo + 512);
            let x = rng.flip();
            let mut ix = index.clone();
            ix[at] ^= x;
            let offset = mail.len() + at;
            let expect = if expect {
                Expect::Padding(offset)
            } else {
                Expect::Damage
            };
            let label = format!("tar flip at {offset} by 0x{x:02x} ({block} end block)");
            cases.push(Case::new(label, frame(good, &mail, &ix), expect));
        }
    }
    cases
}

/// The environment variable that runs one damage case alone, by its label.
const ONE_CASE: &str = "MAILARK_DAMAGE_CASE";

/// Runs `check` for the case `label`; when it fails, says how to run that case alone.
fn replayable<T>(label: &str, check: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or_else(|e| {
        eprintln!(
            "replay this case alone: {ONE_CASE}='{label}' cargo test --test corrupt \
             seeded_damage_anywhere -- --nocapture"
        );
        std::panic::resume_unwind(e)
    })
}

#[test]
fn seeded_damage_anywhere_is_named_and_the_rest_recovered() {
    let users: Vec<(String, String)> = [
        "dry", "imp0", "imp1", "imp2", "imp3", "imp4", "imp5", "imp6",
    ]
    .iter()
    .map(|u| (u.to_string(), format!("{u}-pw")))
    .collect();
    let d = support::Dovecot::start_with(support::DovecotOptions {
        users,
        ..Default::default()
    });
    let t = tempfile::tempdir().unwrap();
    let intact = intact();
    let good = std::fs::read(damage_base()).unwrap();
    let import = |user: &str, bad: &Path, extra: &[&str]| {
        let mut c = bin();
        c.args([
            "import",
            bad.to_str().unwrap(),
            "--to",
            &d.imaps_url(user),
            "--json",
            "--jobs",
            "1",
        ])
        .args(extra)
        .args(d.login_args(user));
        c
    };
    let dry_run = |bad: &Path| import("dry", bad, &["--dry-run"]);

    let mut cases = raw_damage(&good);
    cases.extend(tar_damage(&good));
    // One case alone, to replay a failure (its label is the same case on every run).
    let only = std::env::var(ONE_CASE).ok();
    if let Some(l) = &only {
        cases.retain(|c| &c.label == l);
        assert_eq!(cases.len(), 1, "{ONE_CASE}={l:?} names no case");
    }
    let bad = t.path().join("bad.tar.zst");
    let mut outcomes = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        std::fs::write(&bad, &c.bytes).unwrap();
        let got = replayable(&c.label, || {
            check_damaged(&c.label, &bad, &intact, c.expect, &dry_run)
        });
        outcomes.push((i, got));
    }
    // Damage in the message data spoils the message it hits or, where it breaks the
    // decoder, what follows it in that frame: across these cases 95 % of the messages
    // came out; below three quarters is a regression.
    let (mut recovered, mut flips) = (0, 0);
    for (i, got) in &outcomes {
        let label = &cases[*i].label;
        if label.contains("message frames") || label.contains("message bytes") {
            recovered += got.extracted;
            flips += 1;
        }
    }
    let peak = outcomes.iter().map(|(_, g)| g.peak).max().unwrap();
    let refused = outcomes
        .iter()
        .filter(|(_, g)| g.to_append.is_none())
        .count();
    eprintln!(
        "{} damaged archives: {recovered} of {} messages extracted from the {flips} with \
         damaged message data; {refused} had no readable index; highest peak RSS {} MiB",
        outcomes.len(),
        flips * intact.total,
        peak >> 20
    );
    assert!(
        only.is_some() || recovered * 4 > flips * intact.total * 3,
        "only {recovered} messages recovered over {flips} damaged archives of {}",
        intact.total
    );

    // For real into a Dovecot, a representative few: what the dry run planned is what
    // lands, each landed message is an intact one, and a rerun adds nothing.
    let picks: Vec<usize> = [
        "message frames",
        "index frame",
        "trailer",
        "cut at",
        "tar header",
        "message bytes",
    ]
    .iter()
    .filter_map(|kind| {
        let of_kind = |i: &usize| cases[*i].label.contains(kind);
        outcomes
            .iter()
            .find(|(i, g)| of_kind(i) && g.to_append.is_some_and(|n| n > 0))
            .or_else(|| outcomes.iter().find(|(i, _)| of_kind(i)))
            .map(|(i, _)| *i)
    })
    .collect();
    for (k, &i) in picks.iter().enumerate() {
        let c = &cases[i];
        let got = &outcomes.iter().find(|(j, _)| *j == i).unwrap().1;
        std::fs::write(&bad, &c.bytes).unwrap();
        replayable(&c.label, || {
            import_for_real(&d, &format!("imp{k}"), &c.label, got, &intact, &|| {
                import(&format!("imp{k}"), &bad, &[])
            })
        });
    }
}

/// Imports a damaged archive into `user` (empty until now) and checks it brought what
/// the dry run planned, each message an intact one, and that a rerun adds nothing.
fn import_for_real(
    d: &support::Dovecot,
    user: &str,
    label: &str,
    got: &Outcome,
    intact: &Intact,
    import: &dyn Fn() -> std::process::Command,
) {
    let mut peak = 0;
    let o = under_damage(&mut import(), &format!("{label}: import"), &mut peak);
    let mut c = d.raw(user);
    let mut held = Vec::new();
    for folder in ["INBOX", "Sub"] {
        if c.cmd(&format!("EXAMINE {folder}")).ok() {
            held.extend(c.fetch_all(folder).into_iter().map(|(_, _, b)| b));
        }
    }
    for b in &held {
        assert!(
            intact.hashes.contains(&sha256_hex(b)),
            "{label}: a damaged message landed"
        );
    }
    match o.status.code().unwrap() {
        c @ (0 | 1) => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["appended"].as_u64(), got.to_append, "{label}: {v}");
            assert_eq!(v["verified"], v["appended"], "{label}: {v}");
            assert_eq!(
                held.len() as u64,
                v["appended"].as_u64().unwrap(),
                "{label}"
            );
            assert_eq!(c == 0, v["failed"] == 0, "{label}: {v}");
            let again = under_damage(&mut import(), &format!("{label}: rerun"), &mut peak);
            let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
            assert_eq!(v["appended"], 0, "{label}: rerun: {v}");
        }
        _ => {
            assert!(got.to_append.is_none(), "{label}: {}", stderr(&o));
            assert!(held.is_empty(), "{label}");
        }
    }
}
