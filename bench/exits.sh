#!/usr/bin/env bash
# The price of a register access that leaves the guest: guest/exitbench.elf at CPL3 on
# this machine's /dev/kvm (directly, not nested: CPL3 runs at native speed here), on hv
# and on QEMU -M pc with the same program, ns per access and the hv/QEMU ratio.
set -euo pipefail

usage() {
  cat <<'EOF2'
Usage: bench/exits.sh [--runs N] [--n COUNT] [--tsv FILE]

Rows (each: COUNT accesses from CPL3, median of N runs):
  pio-read    inb from COM1's scratch register: hv's lpc process / QEMU's serial
  pio-read-lsr inb from COM1's line status register: on hv a published register,
              answered by hvcore from shared memory without waking lpc
  pio-write   outb to the same register (posted on hv)
  mmio-read   32-bit load of the virtio common configuration (device_feature_select)
              of a virtio-blk function at 0:3.0: hv's virtio-blk process / QEMU's
  pio-floor   inb from a port nobody decodes: the bare exit, no device behind it
Defaults: --runs 3, --n 300000. --tsv also writes "row<TAB>hv_ns<TAB>qemu_ns" lines.
Build first: bazel build //broker:hvbroker //guest:exitbench.
EOF2
}
RUNS=3 N=300000 TSV=""
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --tsv) TSV=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "exits.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -c /dev/kvm ] || { echo "exits.sh: no /dev/kvm" >&2; exit 1; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BROKER=$ROOT/.bazel/bin/broker/hvbroker GUEST=$ROOT/.bazel/bin/guest/exitbench.elf
[ -x "$BROKER" ] && [ -f "$GUEST" ] || { echo "exits.sh: build first (see --help)" >&2; exit 1; }
SCRATCH=$(mktemp -d)
chmod 711 "$SCRATCH"  # the VM's sandboxed processes (their own uid) reach its runtime dir
trap 'rm -rf "$SCRATCH"' EXIT
export HV_RUNTIME_DIR=$SCRATCH/run
truncate -s 1M "$SCRATCH/disk.img"
MMIO=0xc0000000
# hv: virtio-blk's BAR 0 holds the common configuration at offset 0.
cat >"$SCRATCH/vm.capnp" <<VM
using import "/hv/vm.capnp".Vm;
const vm :Vm = (name = "exitbench", cpus = 1, memory = "64M",
  boot = (kernel = "$GUEST", cmdline = "n=$N mmio=$MMIO bar=0x80001810"),
  devices = [(slot = 0, emulation = "hostbridge"), (slot = 3, emulation = "virtio-blk", path = "$SCRATCH/disk.img"),
             (slot = 31, emulation = "lpc")],
  lpc = (com1 = (stdio = void)));
VM
# QEMU: a modern-only virtio-blk-pci keeps it in BAR 4.
run_vmm() {
  if [ "$1" = hv ]; then
    timeout 300 "$BROKER" up "$SCRATCH/vm.capnp" </dev/null 2>"$SCRATCH/err" || { cat "$SCRATCH/err" >&2; return 1; }
  else
    timeout 300 qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 64M -nodefaults -no-user-config \
      -display none -no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1 \
      -drive "file=$SCRATCH/disk.img,if=none,id=d0,format=raw" \
      -device virtio-blk-pci,drive=d0,addr=3,disable-legacy=on \
      -kernel "$GUEST" -append "n=$N mmio=$MMIO bar=0x80001820" </dev/null 2>&1 || true
  fi
}
TSC_MHZ=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p' | tail -n1)
[ -n "$TSC_MHZ" ] || TSC_MHZ=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Detected \([0-9.]*\) MHz.*/\1/p' | tail -n1)
[ -n "$TSC_MHZ" ] || TSC_MHZ=$(awk -F: '/cpu MHz/ { print $2 + 0; exit }' /proc/cpuinfo)

for vmm in hv qemu; do
  for r in $(seq 1 "$RUNS"); do
    run_vmm "$vmm" >"$SCRATCH/$vmm.$r.out" || true
    awk -v mhz="$TSC_MHZ" '$2 ~ /^cycles=/ { split($2, c, "="); split($3, n, "="); printf "%s %.0f\n", $1, c[2] / n[2] * 1000 / mhz }' \
      "$SCRATCH/$vmm.$r.out" >>"$SCRATCH/$vmm.ns"
  done
done
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "# exit round trip, ns per access from CPL3 (median of $RUNS runs of $N; TSC $TSC_MHZ MHz; $(qemu-system-x86_64 --version | head -n1 | awk '{print "QEMU " $4}'))"
printf '%-10s %10s %10s %8s\n' row hv qemu hv/qemu
[ -n "$TSV" ] && : >"$TSV"
for row in pio-read pio-read-lsr pio-write mmio-read pio-floor; do
  h=$(awk -v r=$row '$1 == r { print $2 }' "$SCRATCH/hv.ns" | median)
  q=$(awk -v r=$row '$1 == r { print $2 }' "$SCRATCH/qemu.ns" | median)
  ratio=$(awk -v h="$h" -v q="$q" 'BEGIN { if (h == "-" || q == "-" || q == 0) print "-"; else printf "%.2f", h / q }')
  printf '%-10s %10s %10s %8s\n' "$row" "$h" "$q" "$ratio"
  [ -n "$TSV" ] && printf 'exit %s ns\t%s\t%s\n' "$row" "$h" "$q" >>"$TSV"
done
