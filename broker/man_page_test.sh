#!/usr/bin/env bash
# docs/hvbroker.1 is generated from hvbroker's help texts (broker/gen_man.sh):
# fails when a help text changed and the man page was not regenerated.
set -euo pipefail
root=${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-hv}
generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
"$root/broker/gen_man.sh" "$root/broker/hvbroker" >"$generated"
# The generator must have found every command (a broken one would still "match").
for command in up check bhyve; do
  grep -q "^\.SH \"HVBROKER ${command^^}\"" "$generated" || { echo "no section for '$command'" >&2; exit 1; }
done
grep -q "^hvbroker bhyve \[bhyve options\]" "$generated" || { echo "no synopsis for bhyve" >&2; exit 1; }
if ! diff -u "$root/docs/hvbroker.1" "$generated"; then
  echo "docs/hvbroker.1 is out of date; regenerate it:" >&2
  echo "  bazel build //broker:hvbroker && broker/gen_man.sh .bazel/bin/broker/hvbroker >docs/hvbroker.1" >&2
  exit 1
fi
echo "docs/hvbroker.1 matches the help texts ($(wc -l <"$generated") lines)"
