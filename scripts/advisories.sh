#!/usr/bin/env bash
# Checks Cargo.lock against the RustSec advisory database with cargo-deny. The test
# command cannot (its machines reach crates.io only); run this where the database can
# be had: with network, cargo-deny fetches it; without, give a clone of
# https://github.com/rustsec/advisory-db as DB and it is used as it is (its commit and
# date are printed, so the result says how fresh it was).
#
#   scripts/advisories.sh [DB]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
  db=$(cd "$1" && pwd)
  echo "advisory database: $(git -C "$db" log -1 --format='%h of %cd' --date=short)"
  # cargo-deny looks for the default database under this name in its db-path.
  dbs=$(mktemp -d)
  trap 'rm -rf "$dbs"' EXIT
  ln -s "$db" "$dbs/advisory-db-3157b0e258782691"
  cfg=$(mktemp)
  trap 'rm -rf "$dbs" "$cfg"' EXIT
  sed '/^\[advisories\]/a db-path = "'"$dbs"'"' deny.toml >"$cfg"
  cargo deny --offline --config "$cfg" check --hide-inclusion-graph advisories
else
  cargo deny check --hide-inclusion-graph advisories
fi
