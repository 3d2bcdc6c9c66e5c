#!/usr/bin/env bash
# Per-device restart: how long a device is away after its process is killed
# (from the broker seeing the death to the successor's deviceReady, as the
# broker logs "serves again ... ms"), and the longest stall the guest sees, over
# N SIGKILLs (default 50). Targets: under 20 ms away, under 100 ms stall.
#   bench/restart.sh [--kills N] [--no-blk]
# Rows:
#   lpc         guest/idle.elf on this machine's /dev/kvm (no nested host): the
#               lpc killed N times at random moments while the guest polls it
#   virtio-blk  a Debian guest in the nested KVM host (tools/kvmhost) running a
#               1 MiB write + O_DIRECT read-back loop on the disk while its
#               process is killed N times (tests/linux/scenarios.sh blk_restart);
#               the stall is the slowest write+verify round the guest timed
#               (10 ms resolution, /proc/uptime), which includes the restart
# There is no QEMU column: QEMU has no per-device restart.
set -euo pipefail
KILLS=50 BLK=1
while (($#)); do
  case "$1" in
    --kills) KILLS=$2; shift 2 ;;
    --no-blk) BLK=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "restart.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${HV_CACHE:-$HOME/.cache/hv}
(cd "$ROOT" && bazel build //broker:hvbroker //guest:idle >&2)
BROKER=$ROOT/.bazel/bin/broker/hvbroker
T=$(mktemp -d /tmp/hvrb.XXXXXX)
chmod 711 "$T"
trap 'rm -rf "$T"' EXIT
export HV_RUNTIME_DIR=$T/run

# median / p90 / max of the numbers on stdin, one per line
stats() { sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "%d\t%.1f\t%.1f\t%.1f", NR, a[int((NR + 1) / 2)], a[int(NR * 0.9 + 0.5)], a[NR]; else printf "0\t-\t-\t-" }'; }
served_ms() { grep -o "serves again (pid [0-9]*, sandboxed), [0-9.]* ms" "$1" | awk '{ print $(NF - 1) }'; }

# --- lpc, here -----------------------------------------------------------------
cat >"$T/idle.capnp" <<VM
using import "/hv/vm.capnp".Vm;
const vm :Vm = (name = "rbench", memory = "64M",
  boot = (kernel = "$ROOT/.bazel/bin/guest/idle.elf"),
  devices = [(slot = 0, emulation = "hostbridge"),
             (slot = 31, emulation = "lpc", restart = (mode = onFailure, limit = 100000, windowSeconds = 3600))],
  lpc = (com1 = (stdio = void)));
VM
"$BROKER" up --detach "$T/idle.capnp" >&2
lpc_pid() { "$BROKER" status rbench | awk '$1 == "lpc" && $4 == "running" { print $3 }'; }
for k in $(seq 1 "$KILLS"); do
  sleep "0.0$((RANDOM % 9 + 1))"
  pid=$(lpc_pid)
  kill -9 "$pid"
  for _ in $(seq 1 400); do
    new=$(lpc_pid)
    [[ -n $new && $new != "$pid" ]] && break
    sleep 0.01
  done
done
"$BROKER" stop --force rbench >&2
lpc_row=$(served_ms "$T/run/rbench.log" | stats)

# --- virtio-blk, in the nested host -------------------------------------------------
blk_row="0	-	-	-" stall="-"
if ((BLK)); then
  "$ROOT/tools/guest-images" --quiet
  HV_BLK_KILLS=$KILLS HV_BLK_LOOP_SECONDS=$((60 + KILLS * 3)) \
    "$ROOT/tools/kvmhost" --smp 2 --mem 3G --timeout 1800 -- \
    "$ROOT/tests/linux/scenarios.sh" "$BROKER" "$CACHE/vmlinuz" "$CACHE/guest-initramfs.cpio.gz" \
    blk_restart >"$T/blk.log" 2>&1 || true
  grep -E "^(PASS|FAIL)" "$T/blk.log" >&2 || tail -20 "$T/blk.log" >&2
  line=$(grep "^PASS blk_restart" "$T/blk.log" || true)
  if [[ -n $line ]]; then
    # "N restarts, median A ms, p90 B ms, max C ms; slowest guest round slowest-ms=S"
    blk_row=$(echo "$line" | sed -n 's/.*: \([0-9]*\) restarts, median \([0-9.]*\) ms, p90 \([0-9.]*\) ms, max \([0-9.]*\) ms.*/\1\t\2\t\3\t\4/p')
    stall=$(echo "$line" | sed -n 's/.*slowest-ms=\([0-9]*\).*/\1/p')
  fi
fi

printf "%-11s %8s %12s %12s %12s %14s\n" device kills "median ms" "p90 ms" "max ms" "max stall ms"
IFS=$'\t' read -r n med p90 max <<<"$lpc_row"
printf "%-11s %8s %12s %12s %12s %14s\n" lpc "$n" "$med" "$p90" "$max" "-"
IFS=$'\t' read -r n med p90 max <<<"$blk_row"
printf "%-11s %8s %12s %12s %12s %14s\n" virtio-blk "$n" "$med" "$p90" "$max" "$stall"
echo "(death to serving: the broker's pidfd wake-up to the successor's deviceReady; virtio-blk in the nested host)"
