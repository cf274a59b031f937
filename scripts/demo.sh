#!/usr/bin/env bash
# mailark demo, end to end on one machine (fresh Debian, as root or with sudo):
#   a local Dovecot with three accounts → sample mail for alice (Japanese folder names,
#   ISO-2022-JP and Shift_JIS subjects, flags, keywords) → export alice over IMAPS →
#   verify the archive → import it into bob → verify the archive against both servers
#   → migrate alice to carol in one command → status (safe to cancel?) → a summary. Nothing outside a temp dir is touched; Dovecot is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=(dovecot-imapd openssl zstd tar python3)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }

echo "== building mailark"
cargo build --quiet
MAILARK="$PWD/target/debug/mailark"

# --- a throwaway Dovecot (the shape of tests/support/dovecot.rs) ----------------------
T=$(mktemp -d /tmp/mailark-demo.XXXXXX)
chmod 755 "$T"
DOVECOT_PID=""
cleanup() {
  if [ -n "$DOVECOT_PID" ]; then
    kill "$DOVECOT_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DOVECOT_PID" 2>/dev/null || break; sleep 0.05; done
  fi
  $SUDO rm -rf "$T"
}
trap cleanup EXIT INT TERM

read -r IMAP_PORT IMAPS_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
mkdir -p "$T"/{run,state,mail/alice,mail/bob,mail/carol,home/alice,home/bob,home/carol}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:TRUE \
  -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
chmod 644 "$T/key.pem"
printf 'alice-demo-pw\n' > "$T/alice.pw"
printf 'bob-demo-pw\n' > "$T/bob.pw"
printf 'carol-demo-pw\n' > "$T/carol.pw"
chmod 600 "$T"/*.pw
cat > "$T/passwd" <<EOF
alice:{PLAIN}alice-demo-pw::::::
bob:{PLAIN}bob-demo-pw::::::
carol:{PLAIN}carol-demo-pw::::::
EOF
cat > "$T/dovecot.conf" <<EOF
base_dir = $T/run
state_dir = $T/state
log_path = $T/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <$T/cert.pem
ssl_key = <$T/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_fsync = never
mail_max_userip_connections = 100
mail_location = maildir:$T/mail/%u:LAYOUT=fs:UTF-8:INBOX=$T/mail/%u/INBOX
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $T/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $T/passwd
  default_fields = uid=nobody gid=nogroup home=$T/home/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
}
EOF

# --- sample mail for alice, written as Maildir files --------------------------------
python3 - "$T/mail/alice" <<'PY'
import os, sys, time
from email.header import Header
root = sys.argv[1]
def msg(i, subject, body, charset, frm="山田 太郎 <taro@example.co.jp>"):
    enc_subject = Header(subject, charset).encode()
    enc_from = Header("山田 太郎", charset).encode() + " <taro@example.co.jp>"
    head = (f"From: {enc_from}\r\nTo: alice@example.co.jp\r\nSubject: {enc_subject}\r\n"
            f"Date: Mon, {1 + i % 27:02d} Apr 2024 09:{i % 60:02d}:00 +0900\r\n"
            f"Message-ID: <demo-{i}@example.co.jp>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset={charset}\r\n"
            f"Content-Transfer-Encoding: {'7bit' if charset == 'iso-2022-jp' else '8bit'}\r\n\r\n")
    return head.encode("ascii") + body.encode(charset, "replace").replace(b"\n", b"\r\n")
folders = {
    "INBOX": [("会議の資料について", "iso-2022-jp"), ("見積書の送付", "shift_jis"),
              ("Re: 来週の予定", "iso-2022-jp"), ("請求書（4月分）", "shift_jis")],
    "Sent": [("ご確認のお願い", "iso-2022-jp"), ("議事録を送ります", "iso-2022-jp")],
    "取引先/株式会社サンプル": [("発注書", "shift_jis"), ("納品のご連絡", "iso-2022-jp")],
    "プロジェクト/2024年度": [("キックオフのご案内", "iso-2022-jp"), ("進捗報告", "shift_jis")],
    "Trash": [("不要なお知らせ", "iso-2022-jp")],
}
flags = ["S", "RS", "FS", "", "Sa"]
i = 0
for folder, msgs in folders.items():
    d = os.path.join(root, folder)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    with open(os.path.join(d, "dovecot-keywords"), "w") as f:
        f.write("0 $Important\n")
    for subject, cs in msgs:
        body = f"{subject}\nお世話になっております。\n件名の件、よろしくお願いいたします。\n"
        p = os.path.join(d, "cur", f"{1712000000 + i * 3600}.M{i}.demo:2,{flags[i % len(flags)]}")
        with open(p, "wb") as f:
            f.write(msg(i, subject, body, cs))
        t = 1712000000 + i * 3600
        os.utime(p, (t, t))
        i += 1
with open(os.path.join(root, "subscriptions"), "w") as f:
    f.write("取引先/株式会社サンプル\nプロジェクト/2024年度\n")
print(f"seeded {i} messages in {len(folders)} folders")
PY
$SUDO chown -R nobody:nogroup "$T/mail" "$T/home"

echo "== starting Dovecot on 127.0.0.1:$IMAPS_PORT (IMAPS)"
setsid dovecot -F -c "$T/dovecot.conf" </dev/null >"$T/dovecot.stderr" 2>&1 &
DOVECOT_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$IMAP_PORT") 2>/dev/null && break
  sleep 0.1
done

TLS=(--tls-ca-file "$T/cert.pem")
A="imaps://alice@127.0.0.1:$IMAPS_PORT"
B="imaps://bob@127.0.0.1:$IMAPS_PORT"
AR="$T/alice.tar.zst"

echo
echo "== 1. export alice's mailbox over IMAPS"
"$MAILARK" export "$A" -o "$AR" --password-file "$T/alice.pw" "${TLS[@]}"
echo
echo "== 2. what the archive holds (index only)"
"$MAILARK" ls "$AR"
echo
echo "== 3. verify the archive (every hash, index, trailer)"
"$MAILARK" verify "$AR"
echo
echo "== 4. dry run: what importing into bob would do"
"$MAILARK" import "$AR" --to "$B" --password-file "$T/bob.pw" "${TLS[@]}" --dry-run
echo
echo "== 5. import into bob (then checked message by message on the server)"
"$MAILARK" import "$AR" --to "$B" --password-file "$T/bob.pw" "${TLS[@]}"
echo
echo "== 6. a second import changes nothing"
"$MAILARK" import "$AR" --to "$B" --password-file "$T/bob.pw" "${TLS[@]}" --json > "$T/again.json"
again=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d appended, %d already there, %d verified" % (r["appended"], r["already_there"], r["verified"]))' "$T/again.json")
echo "second import: $again"
echo
echo "== 7. the archive against both servers"
against_ok=skipped
if "$MAILARK" verify --help | grep -q -- '--against'; then
  "$MAILARK" verify "$AR" --against "$A" --password-file "$T/alice.pw" "${TLS[@]}"
  "$MAILARK" verify "$AR" --against "$B" --password-file "$T/bob.pw" "${TLS[@]}"
  against_ok=yes
else
  echo "(this build has no 'verify --against'; skipped)"
fi

echo
echo "== 8. the whole move in one command: migrate alice to carol (archive first, import, verify)"
MOVE="$T/move"
"$MAILARK" migrate --from "$A" --to "imaps://carol@127.0.0.1:$IMAPS_PORT" --name alice \
  --from-password-file "$T/alice.pw" --to-password-file "$T/carol.pw" --tls-ca-file "$T/cert.pem" \
  --dir "$MOVE" --quiet-for 2s
sleep 2
echo "   (a later pass: nothing new on the old server)"
"$MAILARK" -q migrate --from "$A" --to "imaps://carol@127.0.0.1:$IMAPS_PORT" --name alice \
  --from-password-file "$T/alice.pw" --to-password-file "$T/carol.pw" --tls-ca-file "$T/cert.pem" \
  --dir "$MOVE" --quiet-for 2s || true
echo
echo "== 9. status: is the old server safe to cancel? (quiet period shortened to 2s for the demo)"
"$MAILARK" status --dir "$MOVE" --quiet-for 2s
migrate_state=$("$MAILARK" status --dir "$MOVE" --quiet-for 2s --json | python3 -c 'import json,sys; d=json.load(sys.stdin); rows=d["accounts"] if isinstance(d,dict) else d; print(rows[0]["state"])')

n=$("$MAILARK" ls "$AR" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["messages"] if isinstance(d,dict) else d))')
echo
echo "== summary"
echo "  archive:        $AR ($(du -h "$AR" | cut -f1), $n messages)"
echo "  export:         alice over IMAPS, archive verified"
echo "  import:         into bob, every message verified on the server"
echo "  second import:  $again"
echo "  verify against: alice and bob: $against_ok"
echo "  migrate:        alice → carol, chain in $MOVE/alice/, status: $migrate_state"
echo "  Japanese folder names and ISO-2022-JP/Shift_JIS subjects came through as shown by 'mailark ls' above."
