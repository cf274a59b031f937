#!/usr/bin/env bash
# The project's one test command (README, and .ci/run call exactly this).
# Installs what the tests need on a fresh Debian machine, then runs format, lint and
# every test against real local servers. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=(dovecot-imapd dovecot-pop3d openssl zstd tar python3
  # Cyrus IMAP (import tests) runs from its unpacked .debs; these are its libraries.
  libical3 libpcre3 libxapian30 libsasl2-modules sasl2-bin libclamav12 libzephyr4)
# Peers the benchmarks measure in the same run (benches/pop3.rs, imap.rs, import.rs).
need_pkgs+=(getmail6 fetchmail isync offlineimap3)
# Hand-off tests (tests/seal.rs): the receiving side's tools and a browser for the receipt.
# (fonts-ipafont-gothic: Japanese glyphs in the receipt's screenshot)
need_pkgs+=(age openssh-client chromium fonts-ipafont-gothic)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  # Debian's dovecot-core starts a system instance when it can; the tests run their own.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Cyrus conflicts with dovecot-imapd, so it is downloaded (never installed) and unpacked
# under target/cyrus-debs, where tests/support/cyrus.rs finds it.
cyrus_dir=target/cyrus-debs
if [ ! -x "$cyrus_dir/root/usr/lib/cyrus/bin/master" ]; then
  mkdir -p "$cyrus_dir/root"
  (cd "$cyrus_dir" && apt-get download cyrus-imapd cyrus-common cyrus-admin >/dev/null 2>&1 \
    || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"; $SUDO apt-get update -qq && apt-get download cyrus-imapd cyrus-common cyrus-admin >/dev/null; })
  for deb in "$cyrus_dir"/*.deb; do dpkg-deb -x "$deb" "$cyrus_dir/root"; done
fi

# Courier-IMAP and Courier POP3 conflict with Dovecot's packages too: downloaded and
# unpacked under target/courier-debs, where tests/support/courier.rs runs them in a
# private mount namespace (needs root and util-linux's unshare).
courier_dir=target/courier-debs
courier_debs=(courier-base courier-imap courier-pop courier-authlib courier-authdaemon
  courier-authlib-userdb libcourier-unicode4 libgamin0 gamin libidn12 libltdl7)
if [ ! -x "$courier_dir/root/usr/lib/courier/courier/imaplogin" ]; then
  mkdir -p "$courier_dir/root"
  (cd "$courier_dir" && apt-get download "${courier_debs[@]}" >/dev/null 2>&1 \
    || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"; $SUDO apt-get update -qq && apt-get download "${courier_debs[@]}" >/dev/null; })
  for deb in "$courier_dir"/*.deb; do dpkg-deb -x "$deb" "$courier_dir/root"; done
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }

# Supply chain (deny.toml): licenses, banned versions, crates.io only. Advisories are
# held by hand there (their database cannot be fetched here). cargo-deny is built once
# per machine: about 3.5 minutes on 2 cores (measured), then kept in ~/.cargo/bin.
if ! cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny (once)"
  cargo install cargo-deny --locked --quiet
fi
cargo deny check --hide-inclusion-graph licenses bans sources


cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets 2>&1
