//! Helpers shared by the integration tests: the binary, fixture and corpus locations,
//! and small builders for Maildir trees. No mail logic of mailark's own is used here.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod seeded;
#[allow(unused_imports)] // not every test uses it
pub use seeded::Seeded;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailark"))
}

/// Runs mailark with `args`, returning the output (never panics on a non-zero exit).
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run mailark")
}

/// Runs mailark with `args` then `login`, a test server's login flags (`login_args`).
pub fn run_logged_in(args: &[&str], login: &[String]) -> Output {
    bin().args(args).args(login).output().expect("run mailark")
}

pub fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "mailark {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `mailark export maildir:SRC -o OUT EXTRA…`, which must succeed.
pub fn export_maildir(src: &Path, out: &Path, extra: &[&str]) -> Output {
    let src = format!("maildir:{}", src.display());
    let mut args = vec!["export", &src, "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_ok(&args)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/messages")
}

/// The `.eml` files in `dir` (name, bytes), sorted by name.
fn eml_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Fixture messages, sorted by name.
pub fn fixtures() -> Vec<(String, Vec<u8>)> {
    eml_files(&fixtures_dir())
}

/// The interop corpus, kept in the repository under `fixtures/interop` so a fresh clone
/// tests with nothing beside it. `MAILARK_INTEROP_CORPUS` overrides the path (to try a
/// newer corpus). Missing corpus = failing test, never a silent pass.
pub fn corpus_dir() -> PathBuf {
    let p = std::env::var_os("MAILARK_INTEROP_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/interop"));
    assert!(
        p.join("MANIFEST.tsv").is_file(),
        "interop corpus not found at {} (set MAILARK_INTEROP_CORPUS)",
        p.display()
    );
    p
}

/// Corpus messages 0001–0288 plus the two large ones (generated into `scratch`).
pub fn corpus_messages(scratch: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir();
    let mut v = eml_files(&dir);
    let large = scratch.join("large");
    if !large.join("large-2.eml").exists() {
        let st = Command::new("python3")
            .arg(dir.join("tools/make_large.py"))
            .arg(&large)
            .output()
            .expect("python3 for the corpus's make_large.py");
        assert!(
            st.status.success(),
            "make_large.py failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    for n in ["large-1.eml", "large-2.eml"] {
        v.push((n.to_string(), std::fs::read(large.join(n)).unwrap()));
    }
    v.sort();
    assert_eq!(v.len(), 290, "the corpus should hold 290 messages");
    v
}

/// Writes a Maildir folder with the given message files in cur/ (`name` may carry
/// `:2,FLAGS`).
pub fn write_maildir_folder(dir: &Path, msgs: &[(String, Vec<u8>)]) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for (name, bytes) in msgs {
        std::fs::write(dir.join("cur").join(name), bytes).unwrap();
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// `mailark ls --json` parsed.
pub fn ls_json(archives: &[&Path]) -> Vec<serde_json::Value> {
    let mut args = vec!["ls".to_string()];
    args.extend(archives.iter().map(|p| p.display().to_string()));
    args.push("--json".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ok(&a);
    let v = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1, "{v:#}");
    v["messages"].as_array().unwrap().clone()
}

/// All files below `dir`, relative path → bytes.
pub fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Rebuilds archive `ar` as `out` with its index lines passed through `edit` (the end
/// record's counts and checksum recomputed, so only the edit is wrong) and `extra`
/// members (type, name, data) added before the index, with a valid trailer, so the
/// result opens like any archive and only the edit is at fault.
pub fn tampered(
    ar: &Path,
    out: &Path,
    edit: impl FnOnce(&mut Vec<serde_json::Value>),
    extra: &[(tar::EntryType, &str, &[u8])],
) {
    use sha2::Digest;
    use std::io::{Read, Write};
    let mut tar_in = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(ar).unwrap())
        .unwrap()
        .read_to_end(&mut tar_in)
        .unwrap();
    let mut a = tar::Archive::new(&tar_in[..]);
    let mut mail = tar::Builder::new(Vec::new());
    let mut index = tar::Builder::new(Vec::new());
    let mut edit = Some(edit);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let mut h = e.header().clone();
        if path != Path::new("index.jsonl") {
            let b = if path.to_str().is_some_and(|p| p.contains('/')) {
                &mut mail
            } else {
                &mut index
            };
            b.append_data(&mut h, &path, &data[..]).unwrap();
            continue;
        }
        let mut recs: Vec<serde_json::Value> = String::from_utf8(data)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut end = recs.pop().unwrap();
        (edit.take().unwrap())(&mut recs);
        let mut text = String::new();
        for r in &recs {
            text.push_str(&serde_json::to_string(r).unwrap());
            text.push('\n');
        }
        let msgs: Vec<_> = recs.iter().filter(|r| r["type"] == "message").collect();
        end["messages"] = msgs.len().into();
        end["message_bytes"] = msgs
            .iter()
            .map(|m| m["size"].as_u64().unwrap())
            .sum::<u64>()
            .into();
        end["folders"] = recs.iter().filter(|r| r["type"] == "folder").count().into();
        end["index_sha256"] = hex::encode(sha2::Sha256::digest(text.as_bytes())).into();
        text.push_str(&serde_json::to_string(&end).unwrap());
        text.push('\n');
        for (kind, name, data) in extra {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            mail.append_data(&mut h, name, *data).unwrap();
        }
        h.set_size(text.len() as u64);
        index.append_data(&mut h, &path, text.as_bytes()).unwrap();
    }
    // Mail members, then the index in a frame of its own that the trailer points at
    // (spec: the index frame decodes to tar members and the end of the tar).
    let mut mail = mail.into_inner().unwrap();
    mail.truncate(mail.len() - 1024);
    let index = index.into_inner().unwrap();
    let mut file = zstd::encode_all(&mail[..], 3).unwrap();
    let frame = zstd::encode_all(&index[..], 3).unwrap();
    let offset = file.len() as u64;
    file.extend_from_slice(&frame);
    let mut t = Vec::new();
    t.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
    t.extend_from_slice(&64u32.to_le_bytes());
    t.extend_from_slice(b"MAILARK\0");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&[0; 4]);
    t.extend_from_slice(&offset.to_le_bytes());
    t.extend_from_slice(&(frame.len() as u64).to_le_bytes());
    t.extend_from_slice(&sha2::Sha256::digest(&frame));
    file.extend_from_slice(&t);
    std::fs::File::create(out)
        .unwrap()
        .write_all(&file)
        .unwrap();
}

/// Names the scheme replaced; none may come back.
const OLD_JSON_NAMES: [&str; 4] = [
    "message_bytes",
    "messages_checked",
    "bytes_checked",
    "unreadable",
];

/// Checks the `--json` scheme of docs/json.md on a whole document: `schema` 1, then every object below.
pub fn check_json_scheme(what: &str, v: &serde_json::Value, wanted: &[&str]) {
    assert_eq!(v["schema"], 1, "{what}: no schema 1: {v:#}");
    for k in wanted {
        assert!(v.get(k).is_some(), "{what}: no {k:?}: {v:#}");
    }
    check_fields(what, "", v);
}

fn check_fields(what: &str, at: &str, v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}.{k}");
                assert!(
                    !OLD_JSON_NAMES.contains(&k.as_str()),
                    "{what}: {here}: old name"
                );
                match k.as_str() {
                    "messages" => assert!(
                        x.is_u64() || x.is_array(),
                        "{what}: {here} is a count (or ls's list): {x}"
                    ),
                    "bytes" => assert!(x.is_u64(), "{what}: {here} is not a count: {x}"),
                    "folders" => assert!(x.is_array(), "{what}: {here} is not a list: {x}"),
                    // A count; the list, where the object has one, is `failures`
                    // (import's top level counts what its folders list).
                    "failed" => {
                        assert!(x.is_u64(), "{what}: {here} is not a count: {x}");
                        if let Some(list) = m.get("failures") {
                            let n = list.as_array().map(Vec::len);
                            assert_eq!(x.as_u64(), n.map(|n| n as u64), "{what}: {here}");
                        }
                    }
                    "failures" => assert!(
                        m.get("failed").is_some_and(serde_json::Value::is_u64),
                        "{what}: {here} without the failed count beside it"
                    ),
                    "schema" => assert!(at.is_empty(), "{what}: schema at {here}"),
                    _ => {}
                }
                if let Some(s) = x.as_str() {
                    check_date(what, &here, s);
                }
                check_fields(what, &here, x);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_fields(what, &format!("{at}[{i}]"), x);
            }
        }
        _ => {}
    }
}

/// A value that reads as an RFC 3339 date is in UTC with `Z`.
fn check_date(what: &str, at: &str, s: &str) {
    let b = s.as_bytes();
    let looks = b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T';
    if looks {
        assert!(
            s.ends_with('Z'),
            "{what}: {at} = {s:?} is not in UTC with Z"
        );
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{what}: {at} = {s:?}: {e}"));
    }
}

/// Runs `cmd` to its end with stdout and stderr captured (read on threads, so a chatty
/// child never blocks on a full pipe) and returns its output and peak RSS in bytes (its
/// own `wait4` rusage, not the test process's).
// The child is reaped by `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn output_and_peak(cmd: &mut Command) -> (Output, u64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mailark");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which `child` has not reaped.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(r, child.id() as libc::pid_t, "wait4");
    let o = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (o, ru.ru_maxrss as u64 * 1024)
}

/// How one [`guarded`] run went: its output, peak RSS in bytes, and wall time.
pub struct Guarded {
    pub out: Output,
    pub peak: u64,
    pub took: std::time::Duration,
}

/// Runs `cmd` to its end (as [`output_and_peak`]) and asserts what holds for any run,
/// however bad its input or link: no crash, and no hang (`timeout` exits 124 when `cmd`
/// runs under it). `what` names the run in the failure message.
pub fn guarded(cmd: &mut Command, what: &str) -> Guarded {
    let t0 = std::time::Instant::now();
    let (out, peak) = output_and_peak(cmd);
    let took = t0.elapsed();
    assert_no_crash(&out, what);
    assert_ne!(
        out.status.code(),
        Some(124),
        "{what}: hung, stopped after {took:?}: {}",
        stderr(&out)
    );
    Guarded { out, peak, took }
}

/// A crash is never an answer: no Rust panic (exit 101, "panicked" on stderr) and no
/// death by a signal.
pub fn assert_no_crash(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(
        o.status.code().is_some() && o.status.code() != Some(101) && !err.contains("panicked"),
        "{what}: crashed ({:?}): {err}",
        o.status
    );
}

/// A tmpfs of `size` mounted on `dir` (tests run as root), unmounted when dropped: a
/// disk that fills up on demand.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs on {} (tests run as root)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }

    pub fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `--json` output, parsed; a panic naming both streams when it is not JSON.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): stdout {} stderr {}", stdout(o), stderr(o)))
}

/// (code, level) of every finding of `verify --json`.
pub fn findings(o: &Output) -> Vec<(String, String)> {
    json(o)["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings: {}\n{}", stdout(o), stderr(o)))
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["level"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
