#!/usr/bin/env bash
# Memory footprint of one running VM: the proportional set size (PSS) of all of hv's
# processes (broker, core, one per device) beside QEMU's for the same VM, guest RAM
# excluded (hv's RAM memfd; QEMU's RAM is made a memfd backend so it can be told apart).
# The guest is guest/exitbench.elf spinning at CPL3 on this machine's /dev/kvm.
set -euo pipefail
usage() {
  cat <<'EOF2'
Usage: bench/footprint.sh [--tsv FILE]
VM: 1 vCPU, 64 MiB, hostbridge, lpc (COM1), virtio-blk on a 1 MiB file, virtio-net in
user mode (libslirp; QEMU: -netdev user).
Prints PSS in KiB per process and in total; --tsv writes "footprint PSS KiB<TAB>hv<TAB>qemu".
Build first: bazel build //broker:hvbroker //guest:exitbench.
EOF2
}
TSV=""
while (($#)); do
  case "$1" in
    --tsv) TSV=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "footprint.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BROKER=$ROOT/.bazel/bin/broker/hvbroker GUEST=$ROOT/.bazel/bin/guest/exitbench.elf
[ -x "$BROKER" ] && [ -f "$GUEST" ] || { echo "footprint.sh: build first (see --help)" >&2; exit 1; }
SCRATCH=$(mktemp -d)
chmod 711 "$SCRATCH"  # the VM's sandboxed processes (their own uid) reach its runtime dir
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$SCRATCH"; }
trap cleanup EXIT
export HV_RUNTIME_DIR=$SCRATCH/run
truncate -s 1M "$SCRATCH/disk.img"
CMDLINE="n=100000000000 floor=0x80"  # spins in its first phase until killed

# pss PID...: KiB of PSS over every mapping but guest RAM.
pss() {
  local total=0 p kib
  for p in "$@"; do
    kib=$(awk '/^[0-9a-f]+-[0-9a-f]+ / { ram = ($0 ~ /memfd:(hv-ram|memory-backend-memfd)/) }
               /^Pss:/ && !ram { s += $2 } END { print s + 0 }' "/proc/$p/smaps" 2>/dev/null || echo 0)
    printf '  %-28s %8s KiB\n' "$(tr '\0' ' ' <"/proc/$p/cmdline" | awk '{ n = split($1, a, "/"); print a[n] ($0 ~ /--name/ ? " " $NF : "") }')" "$kib" >&2
    total=$((total + kib))
  done
  echo "$total"
}
wait_for() { for _ in $(seq 1 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

cat >"$SCRATCH/vm.capnp" <<VM
using import "/hv/vm.capnp".Vm;
const vm :Vm = (name = "footprint", cpus = 1, memory = "64M",
  boot = (kernel = "$GUEST", cmdline = "$CMDLINE"),
  devices = [(slot = 0, emulation = "hostbridge"), (slot = 2, emulation = "virtio-net", path = "user"),
             (slot = 3, emulation = "virtio-blk", path = "$SCRATCH/disk.img"), (slot = 31, emulation = "lpc")],
  lpc = (com1 = (stdio = void)));
VM
"$BROKER" up "$SCRATCH/vm.capnp" >"$SCRATCH/hv.out" 2>&1 </dev/null &
pids+=($!)
wait_for "$SCRATCH/hv.out" exitbench || { echo "footprint.sh: hv did not start" >&2; cat "$SCRATCH/hv.out" >&2; exit 1; }
sleep 1
echo "hv:" >&2
hv_kib=$(pss "${pids[0]}" $(pgrep -P "${pids[0]}"))

qemu-system-x86_64 -enable-kvm -M pc,memory-backend=ram -cpu host -m 64M -nodefaults -no-user-config \
  -object memory-backend-memfd,id=ram,size=64M -display none -no-reboot -serial stdio \
  -device isa-debug-exit,iobase=0xf4,iosize=1 \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0,addr=2 \
  -drive "file=$SCRATCH/disk.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0,addr=3 \
  -kernel "$GUEST" -append "$CMDLINE" >"$SCRATCH/qemu.out" 2>&1 </dev/null &
pids+=($!)
wait_for "$SCRATCH/qemu.out" exitbench || { echo "footprint.sh: QEMU did not start" >&2; cat "$SCRATCH/qemu.out" >&2; exit 1; }
sleep 1
echo "qemu:" >&2
qemu_kib=$(pss "${pids[1]}")

echo "# footprint: PSS of all VMM processes of one running VM, guest RAM excluded (KiB)"
printf '%-10s %10s %10s %8s\n' row hv qemu hv/qemu
printf '%-10s %10s %10s %8s\n' PSS "$hv_kib" "$qemu_kib" "$(awk -v h=$hv_kib -v q=$qemu_kib 'BEGIN { printf "%.2f", h / q }')"
[ -n "$TSV" ] && printf 'footprint PSS KiB\t%s\t%s\n' "$hv_kib" "$qemu_kib" >"$TSV"
exit 0
