#!/usr/bin/env bash
# Start rate: VMs started to the guest's first line per second, one after another, with
# guest/hello.elf on this machine's /dev/kvm: hv beside QEMU -M microvm (qboot). Not -M pc:
# here SeaBIOS runs at emulated CPL0 (see the environment note) and takes ~15 s.
set -euo pipefail
usage() {
  cat <<'EOF2'
Usage: bench/start.sh [--vms N] [--tsv FILE]
Starts N VMs one after another (default 20), each until hello.elf's line appears on its
console (the VM is then stopped), and prints the median time to that line and the rate
(VMs per second = 1 / median). --tsv writes "start ms<TAB>hv<TAB>qemu" and "start VMs/s" lines.
Build first: bazel build //broker:hvbroker //guest:hello.
EOF2
}
VMS=20 TSV=""
while (($#)); do
  case "$1" in
    --vms) VMS=$2; shift 2 ;;
    --tsv) TSV=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BROKER=$ROOT/.bazel/bin/broker/hvbroker GUEST=$ROOT/.bazel/bin/guest/hello.elf
[ -x "$BROKER" ] && [ -f "$GUEST" ] || { echo "start.sh: build first (see --help)" >&2; exit 1; }
SCRATCH=$(mktemp -d)
chmod 711 "$SCRATCH"  # the VM's sandboxed processes (their own uid) reach its runtime dir
trap 'rm -rf "$SCRATCH"' EXIT
export HV_RUNTIME_DIR=$SCRATCH/run
cat >"$SCRATCH/vm.capnp" <<VM
using import "/hv/vm.capnp".Vm;
const vm :Vm = (name = "start", cpus = 1, memory = "64M", boot = (kernel = "$GUEST"),
  devices = [(slot = 0, emulation = "hostbridge"), (slot = 31, emulation = "lpc")],
  lpc = (com1 = (stdio = void)));
VM
vmm() {
  if [ "$1" = hv ]; then
    exec "$BROKER" up "$SCRATCH/vm.capnp"
  else
    exec qemu-system-x86_64 -enable-kvm -M microvm -cpu host -m 64M -nodefaults -no-user-config \
      -display none -no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1 -kernel "$GUEST"
  fi
}
# one VMM: ms from launch to the guest's line
one() {
  local start=$EPOCHREALTIME line seen=0
  coproc V { vmm "$1" </dev/null 2>"$SCRATCH/$1.err"; }
  local pid=$V_PID
  while IFS= read -r -t 30 line <&"${V[0]}"; do
    if [[ $line == *"hello from the hv test guest"* ]]; then seen=1; break; fi
  done
  local now=$EPOCHREALTIME
  wait "$pid" 2>/dev/null || true
  if [ "$seen" = 0 ]; then
    echo "start.sh: $1 did not print the guest's line:" >&2
    cat "$SCRATCH/$1.err" >&2
    exit 1
  fi
  awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for vmm in hv qemu; do
  for _ in $(seq 1 "$VMS"); do one "$vmm" >>"$SCRATCH/$vmm.ms" || exit 1; done
done
h=$(median <"$SCRATCH/hv.ms") q=$(median <"$SCRATCH/qemu.ms")
echo "# start: launch to the guest's first line, median of $VMS VMs started one after another"
printf '%-10s %10s %10s %8s\n' row hv microvm hv/qemu
printf '%-10s %10s %10s %8s\n' "ms" "$h" "$q" "$(awk -v h=$h -v q=$q 'BEGIN { printf "%.2f", h / q }')"
printf '%-10s %10s %10s %8s\n' "VMs/s" "$(awk -v h=$h 'BEGIN { printf "%.1f", 1000 / h }')" \
  "$(awk -v q=$q 'BEGIN { printf "%.1f", 1000 / q }')" "$(awk -v h=$h -v q=$q 'BEGIN { printf "%.2f", q / h }')"
if [ -n "$TSV" ]; then
  printf 'start ms\t%s\t%s\n' "$h" "$q" >"$TSV"
fi
