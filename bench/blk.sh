#!/usr/bin/env bash
# virtio-blk inside a Linux guest, hv beside QEMU's virtio-blk on the same disk
# file in the same host, and the same workload on the host directly (the
# ceiling): 4 KiB random reads at queue depth 1 and 32, 1 MiB sequential reads
# and writes (bench/blkbench.c, O_DIRECT in the guest). Prints the table with
# hv/QEMU ratios. With --ahci, the same rows for an AHCI disk: hv's ahci-hd beside
# QEMU's ich9-ahci with an ide-hd (bench/ahci.sh).
#   bench/blk.sh [--ahci] [--seconds S] [--runs N]
# Needs a usable /dev/kvm: on machines without VT-x/AMD-V it re-runs itself in
# the nested KVM host (tools/kvmhost), where the disk file lives in RAM.
set -euo pipefail
SECONDS_PER_TEST=3 RUNS=1 AHCI=0
ARGS=("$@")
while (($#)); do
  case "$1" in
    --seconds) SECONDS_PER_TEST=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --ahci) AHCI=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "blk.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${HV_CACHE:-$HOME/.cache/hv}
if [ -z "${HV_KVMHOST:-}" ]; then
  "$ROOT/tools/guest-images" --quiet
  (cd "$ROOT" && bazel build //broker:hvbroker >&2)
  # The benchmark program rides in a second initramfs the kernel unpacks after the first.
  stage=$(mktemp -d)
  mkdir -p "$stage/bin"
  gcc -O2 -static -o "$stage/bin/blkbench" "$ROOT/bench/blkbench.c" 2>/dev/null
  (cd "$stage" && find . | cpio -o -H newc -R 0:0 --quiet | gzip) >"$stage.cpio.gz"
  cat "$CACHE/guest-initramfs.cpio.gz" "$stage.cpio.gz" >"$CACHE/bench-initramfs.cpio.gz"
  cp "$stage/bin/blkbench" "$CACHE/blkbench"
  rm -rf "$stage" "$stage.cpio.gz"
  exec "$ROOT/tools/kvmhost" --smp 2 --mem 3G --timeout 3600 -- "$ROOT/bench/blk.sh" "${ARGS[@]}"
fi

KERNEL=$CACHE/vmlinuz INITRD=$CACHE/bench-initramfs.cpio.gz
T=$(mktemp -d)
chmod 711 "$T"  # the VM's sandboxed processes (their own uid) reach its runtime dir
export HV_RUNTIME_DIR=$T/run
DISK=$T/disk.img
dd if=/dev/urandom of="$DISK" bs=1M count=256 2>/dev/null
if ((AHCI)); then
  NAME=ahcibench GUEST_DISK=/dev/sda
  HV_DEVICE="(slot = 4, emulation = \"ahci-hd\", path = \"$DISK\")"
  QEMU_DEVICE=(-device ich9-ahci,id=ahci -device ide-hd,drive=d0,bus=ahci.0)
  WHAT="hv: ahci-hd; QEMU: ich9-ahci + ide-hd"
else
  NAME=blkbench GUEST_DISK=/dev/vda
  HV_DEVICE="(slot = 3, emulation = \"virtio-blk\", path = \"$DISK\")"
  QEMU_DEVICE=(-device virtio-blk-pci,drive=d0)
  WHAT="virtio-blk on both"
fi
# The SCSI scan that makes /dev/sda may finish after init starts the command.
RUN=$(printf 'for i in $(seq 100); do [ -b %s ] && break; sleep 0.1; done; blkbench %s %s' \
  "$GUEST_DISK" "$GUEST_DISK" "$SECONDS_PER_TEST" | base64 -w0)
APPEND="console=ttyS0 quiet panic=-1 hv.run=$RUN"

run_hv() {
  cat >"$T/vm.capnp" <<VM
using import "/hv/vm.capnp".Vm;
const vm :Vm = (name = "$NAME", cpus = 2, memory = "512M",
  boot = (kernel = "$KERNEL", initrd = "$INITRD", cmdline = "$APPEND"),
  devices = [(slot = 0, emulation = "hostbridge"), $HV_DEVICE,
             (slot = 31, emulation = "lpc")],
  lpc = (com1 = (stdio = void)));
VM
  timeout 600 "$ROOT/.bazel/bin/broker/hvbroker" up "$T/vm.capnp" </dev/null 2>&1
}
run_qemu() {
  timeout 600 qemu-system-x86_64 -enable-kvm -M pc -cpu host -smp 2 -m 512M -nodefaults \
    -no-user-config -display none -no-reboot -serial stdio -kernel "$KERNEL" -initrd "$INITRD" \
    -append "$APPEND" -drive "file=$DISK,if=none,id=d0,format=raw" \
    "${QEMU_DEVICE[@]}" </dev/null 2>&1
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2" | head -n1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }

declare -A R
for vmm in hv qemu host; do
  for r in $(seq "$RUNS"); do
    case $vmm in
      hv) line=$(run_hv | tr -d '\r' | grep '^blkbench ' || true) ;;
      qemu) line=$(run_qemu | tr -d '\r' | grep '^blkbench ' || true) ;;
      host) line=$("$CACHE/blkbench" "$DISK" "$SECONDS_PER_TEST") ;;
    esac
    echo "# $vmm run $r: ${line:-FAILED}"
    R[$vmm]=$line
  done
done
echo "# disk: a 256 MiB file in RAM (the nested host's /tmp), guest: 2 vCPUs, 512 MiB, O_DIRECT on $GUEST_DISK ($WHAT)"
printf '%-22s %12s %12s %12s %10s\n' workload hv qemu host hv/qemu
for m in qd1_iops qd32_iops seqread_mbs seqwrite_mbs; do
  a=$(field "$m" "${R[hv]}") b=$(field "$m" "${R[qemu]}") c=$(field "$m" "${R[host]}")
  printf '%-22s %12s %12s %12s %10s\n' "$m" "${a:--}" "${b:--}" "${c:--}" "$(ratio "$a" "$b")"
done
rm -rf "$T"
