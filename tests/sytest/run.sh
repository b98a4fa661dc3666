#!/usr/bin/env bash
# SyTest against Hearth with Hearth's own plugin (tests/sytest/Hearth.pm): copies the
# shared harness (../shared/sytest: run.sh, perl5/, summarize_tap.pl) to
# $SYTEST_BED/harness, puts this directory's Hearth.pm in place of the shared one,
# and runs that run.sh with the same arguments, e.g.
#   tests/sytest/run.sh --binary target/release/hearth --list-failed tests/50federation
# Set-up (SyTest itself, Perl modules) is the shared harness's: ../shared/sytest/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${HEARTH_SYTEST_HARNESS:-$here/../../../shared/sytest}
BED=${SYTEST_BED:-/tmp/sytestbed}
[ -x "$shared/run.sh" ] || { echo "tests/sytest/run.sh: no shared harness at $shared (set HEARTH_SYTEST_HARNESS)" >&2; exit 2; }
mkdir -p "$BED/harness"
cp -r "$shared/." "$BED/harness/"
chmod -R u+w "$BED/harness"
cp "$here/Hearth.pm" "$BED/harness/Hearth.pm"
exec bash "$BED/harness/run.sh" "$@"
