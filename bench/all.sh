#!/usr/bin/env bash
# Every hv-vs-QEMU benchmark of the exit path, boot, footprint and start-up in one table,
# and the regression check: the hv/QEMU ratio of each row against bench/baseline.tsv.
set -euo pipefail
usage() {
  cat <<'EOF2'
Usage: bench/all.sh [--no-boot] [--save] [--check [PCT]]

Runs bench/exits.sh, bench/start.sh and bench/footprint.sh on this machine's /dev/kvm and
bench/boot.sh (in the nested host where there is no VT-x/AMD-V), then prints one table:
row, hv, QEMU, hv/QEMU and the issue's target for that ratio. Lower is better everywhere.
  --no-boot     skip the boot rows (the slow part: ~15 minutes in the nested host)
  --save        write the ratios to bench/baseline.tsv (commit it with the change)
  --check [PCT] exit 1 if a row's hv/QEMU ratio is more than PCT % (default 10) above the
                baseline's. Ratios, not absolute times: QEMU runs in the same job, so a
                busy or different machine moves both columns together.
Builds what it needs first.
EOF2
}
BOOT=1 SAVE=0 CHECK=""
while (($#)); do
  case "$1" in
    --no-boot) BOOT=0; shift ;;
    --save) SAVE=1; shift ;;
    --check) CHECK=10; shift; if [[ ${1:-} =~ ^[0-9]+$ ]]; then CHECK=$1; shift; fi ;;
    -h|--help) usage; exit 0 ;;
    *) echo "all.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bazel build //broker:hvbroker //guest:exitbench //guest:hello >&2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
bench/exits.sh --tsv "$T/exits.tsv" >&2
bench/start.sh --tsv "$T/start.tsv" >&2
bench/footprint.sh --tsv "$T/footprint.tsv" >&2
[ "$BOOT" = 1 ] && bench/boot.sh --machines "hv pc" --tsv "$T/boot.tsv" >&2
cat "$T"/*.tsv >"$T/all"

target() {
  case "$1" in
    exit\ *) echo "<= 1.50" ;;
    boot\ ready*) echo "<= 1.00" ;;
    footprint*) echo "<= 1.00, hv <= 16384" ;;
    *) echo "-" ;;
  esac
}
echo
echo "# hv beside QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}') on $(uname -n): $(nproc) CPUs, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//'), $(date -u +%F)"
printf '%-22s %10s %10s %8s  %s\n' row hv qemu hv/qemu target
while IFS=$'\t' read -r row h q; do
  ratio=$(awk -v h="$h" -v q="$q" 'BEGIN { if (h == "-" || q == "-" || q == 0) print "-"; else printf "%.2f", h / q }')
  printf '%-22s %10s %10s %8s  %s\n' "$row" "$h" "$q" "$ratio" "$(target "$row")"
  printf '%s\t%s\n' "$row" "$ratio" >>"$T/ratios"
done <"$T/all"

if [ "$SAVE" = 1 ]; then
  cp "$T/ratios" bench/baseline.tsv
  echo "saved the ratios to bench/baseline.tsv"
fi
if [ -n "$CHECK" ]; then
  [ -f bench/baseline.tsv ] || { echo "all.sh: no bench/baseline.tsv (run with --save)" >&2; exit 1; }
  bad=0
  while IFS=$'\t' read -r row ratio; do
    base=$(awk -F'\t' -v r="$row" '$1 == r { print $2 }' bench/baseline.tsv)
    [ -n "$base" ] && [ "$base" != - ] && [ "$ratio" != - ] || continue
    if awk -v n="$ratio" -v b="$base" -v p="$CHECK" 'BEGIN { exit !(n > b * (1 + p / 100)) }'; then
      echo "REGRESSION $row: hv/QEMU $ratio, baseline $base (more than $CHECK % worse)"
      bad=1
    fi
  done <"$T/ratios"
  [ "$bad" = 0 ] && echo "no row more than $CHECK % worse than bench/baseline.tsv"
  exit "$bad"
fi
