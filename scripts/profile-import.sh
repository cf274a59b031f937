#!/usr/bin/env bash
# Where an import's time goes at scale: runs `cargo bench --bench scale` with
# MSGS messages (default 225000), samples every CPU with `perf record -a -e cpu-clock`
# for SECS seconds (default 40) in the middle of "import into an empty account", and
# prints the CPU seconds of mailark and of the Dovecot processes serving it, the
# system calls the server's time is spent in, and mailark's hottest functions. The
# benchmark is stopped once the import is measured. Needs perf (Debian linux-perf)
# and root (system-wide sampling); scratch space in MAILARK_BENCH_DIR (default /tmp).
#
#   scripts/profile-import.sh [MSGS] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
msgs=${1:-225000}
secs=${2:-40}
out=$(mktemp -d /tmp/mailark-profile.XXXXXX)
log=$out/bench.log
# The benchmark's scratch (the account's copies), removed with it when stopped early.
scratch=$(mktemp -d "${MAILARK_BENCH_DIR:-/tmp}/mailark-profile-scratch.XXXXXX")
MAILARK_BENCH_DIR=$scratch MAILARK_BENCH_SCALE_MSGS=$msgs setsid cargo bench --bench scale >"$log" 2>&1 &
bench=$!
stop() {
  local b d
  b=$(pgrep -f "release/deps/scale-" | head -1 || true)
  d=${b:+$(pgrep -P "$b" dovecot | head -1 || true)}
  kill -- -"$bench" 2>/dev/null || true
  # The test Dovecot runs in a process group of its own: stop it by its PID.
  [ -n "${d:-}" ] && kill "$d" 2>/dev/null || true
  sleep 1
  rm -rf "$scratch"
}
trap stop EXIT
until grep -q "^scale: verify --against source:" "$log"; do
  kill -0 "$bench" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.5
done
sleep 2
perf record -a -g -e cpu-clock -F 1000 -o "$out/perf.data" -- sleep "$secs" 2>"$out/perf.err" &
rec=$!
sleep $((secs / 3))
b=$(pgrep -f "release/deps/scale-" | head -1)
master=$(pgrep -P "$b" dovecot | head -1)
client=$(pgrep -f "release/mailark import" | head -1)
server=$(pgrep -P "$master" -d, imap || true)
wait "$rec"
until grep -q "^scale: import into an empty account:" "$log"; do sleep 0.5; done
grep "^scale: import into an empty account:" "$log"
perf script -i "$out/perf.data" -F pid,ip,sym 2>/dev/null | awk -v client="$client" -v server="$server" '
BEGIN { n = split(server, s, ","); for (i = 1; i <= n; i++) srv[s[i]] = 1 }
NF == 1 && $1 ~ /^[0-9]+$/ {
  if (who == "s" && !found) sys["(in the server itself, not a system call)"]++
  pid = $1; who = (pid == client) ? "c" : ((pid in srv) ? "s" : "")
  found = 0; top = 1
  if (who == "c") c++
  if (who == "s") t++
  next
}
who == "c" && top { f = $0; sub(/^ *[0-9a-f]+ /, "", f); sub(/\+0x[0-9a-f]+$/, "", f); fn[f]++; top = 0; next }
who == "s" && !found && /__x64_sys_/ { x = $2; sub(/__x64_sys_/, "", x); sub(/\+.*/, "", x); sys[x]++; found = 1 }
{ top = 0 }
END {
  printf "CPU in the %d s sampled: mailark %.1f s, the Dovecot imap processes serving it %.1f s (%.1fx)\n", '"$secs"', c / 1000, t / 1000, t / (c ? c : 1)
  print "\nserver CPU by system call:"
  for (k in sys) printf "%6.1f%%  %s\n", 100 * sys[k] / t, k | "sort -rn | head -8"
  close("sort -rn | head -8")
  print "\nmailark CPU by function:"
  for (k in fn) printf "%6.1f%%  %s\n", 100 * fn[k] / c, k | "sort -rn | head -12"
}'
echo "(perf data kept in $out)"
