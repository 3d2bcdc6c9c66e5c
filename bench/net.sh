#!/usr/bin/env bash
# virtio-net inside a Linux guest, hv beside QEMU's virtio-net (userspace, no
# vhost) on a tap in the same host: TCP throughput host->guest and guest->host,
# and TCP request/response latency (1-byte echo round trips). Each VMM gets a
# network namespace of its own with a tap at 10.9.0.1, the guest at 10.9.0.2.
# Prints the table with hv/QEMU ratios.
#   bench/net.sh [--mbytes N] [--round-trips N]
# Needs a usable /dev/kvm and root (namespaces, taps): on machines without
# VT-x/AMD-V it re-runs itself in the nested KVM host (tools/kvmhost).
set -euo pipefail
MBYTES=32 TRIPS=2000
ARGS=("$@")
while (($#)); do
  case "$1" in
    --mbytes) MBYTES=$2; shift 2 ;;
    --round-trips) TRIPS=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "net.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${HV_CACHE:-$HOME/.cache/hv}
if [ -z "${HV_KVMHOST:-}" ]; then
  "$ROOT/tools/guest-images" --quiet
  (cd "$ROOT" && bazel build //broker:hvbroker >&2)
  exec "$ROOT/tools/kvmhost" --smp 2 --mem 3G --timeout 3600 -- "$ROOT/bench/net.sh" "${ARGS[@]}"
fi

KERNEL=$CACHE/vmlinuz INITRD=$CACHE/guest-initramfs.cpio.gz
T=$(mktemp -d /tmp/hvnetbench.XXXXXX)
export HV_RUNTIME_DIR=$T/run
NS=hvbench$$ TAP=benchtap0 GUEST=10.9.0.2
# The guest: a sink (5001), a source of zeroes (5002), an echo server (5003);
# a connection to 5004 ends it.
GUEST_SCRIPT=$(base64 -w0 <<'GUEST'
ip link set lo up; ip link set eth0 up; ip addr add 10.9.0.2/24 dev eth0
nc -l -p 5001 >/dev/null &
nc -l -p 5002 </dev/zero >/dev/null &
nc -l -p 5003 -e cat &
echo HV-BENCH-UP
nc -l -p 5004 >/dev/null
GUEST
)
APPEND="console=ttyS0 quiet panic=-1 hv.run=$GUEST_SCRIPT"

in_ns() { ip netns exec "$NS" "$@"; }
make_ns() {
  ip netns add "$NS"
  in_ns ip link set lo up
  in_ns ip tuntap add dev "$TAP" mode tap vnet_hdr
  in_ns ip addr add 10.9.0.1/24 dev "$TAP"
  in_ns ip link set "$TAP" up
}
now() { date +%s.%N; }

# Measures a guest that printed HV-BENCH-UP into $1; prints "name=value ..." on stdout.
measure() {
  local out=$1
  for _ in $(seq 3000); do grep -q HV-BENCH-UP "$out" 2>/dev/null && break; sleep 0.2; done
  grep -q HV-BENCH-UP "$out" || { echo "no-guest"; return; }
  sleep 2
  local bytes=$((MBYTES << 20)) a b c d
  a=$(now)
  head -c "$bytes" /dev/zero | in_ns socat -u - "TCP:$GUEST:5001"
  b=$(now)
  c=$(now)
  in_ns socat -u "TCP:$GUEST:5002" - 2>/dev/null | head -c "$bytes" >/dev/null
  d=$(now)
  local rtt
  rtt=$(in_ns python3 - "$GUEST" "$TRIPS" <<'PY'
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5003), timeout=30)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    s.sendall(b"x")
    if s.recv(1) != b"x":
        raise SystemExit("echo broken")
    times.append(time.perf_counter() - t)
times.sort()
print("%.1f" % (times[len(times) // 2] * 1e6))
PY
  ) || rtt=""
  in_ns socat -u /dev/null "TCP:$GUEST:5004" 2>/dev/null || true
  awk -v m="$MBYTES" -v a="$a" -v b="$b" -v c="$c" -v d="$d" -v r="$rtt" \
    'BEGIN { printf "to_guest_mbs=%.1f from_guest_mbs=%.1f rtt_us=%s\n", m / (b - a), m / (d - c), r }'
}

run_hv() {
  cat >"$T/vm.capnp" <<VM
using import "/hv/vm.capnp".Vm;
const vm :Vm = (name = "netbench", cpus = 2, memory = "512M",
  boot = (kernel = "$KERNEL", initrd = "$INITRD", cmdline = "$APPEND"),
  devices = [(slot = 0, emulation = "hostbridge"), (slot = 2, emulation = "virtio-net", path = "$TAP"),
             (slot = 31, emulation = "lpc")],
  lpc = (com1 = (stdio = void)));
VM
  in_ns timeout 900 "$ROOT/.bazel/bin/broker/hvbroker" up "$T/vm.capnp" </dev/null >"$T/hv.out" 2>&1 &
  local pid=$!
  measure "$T/hv.out"
  wait "$pid" || true
}
run_qemu() {
  in_ns timeout 900 qemu-system-x86_64 -enable-kvm -M pc -cpu host -smp 2 -m 512M -nodefaults \
    -no-user-config -display none -no-reboot -serial stdio -kernel "$KERNEL" -initrd "$INITRD" \
    -append "$APPEND" -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no,vhost=off" \
    -device virtio-net-pci,netdev=n0 </dev/null >"$T/qemu.out" 2>&1 &
  local pid=$!
  measure "$T/qemu.out"
  wait "$pid" || true
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2" | head -n1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }

declare -A R
for vmm in hv qemu; do
  make_ns
  case $vmm in
    hv) R[$vmm]=$(run_hv) ;;
    qemu) R[$vmm]=$(run_qemu) ;;
  esac
  echo "# $vmm: ${R[$vmm]}"
  ip netns del "$NS"
done
echo "# guest: 2 vCPUs, 512 MiB, Debian 6.1 virtio_net; $MBYTES MiB each way over one TCP connection; median of $TRIPS 1-byte echo round trips"
echo "# QEMU's virtio-net without vhost (userspace, as hv's); both on a tap in their own namespace"
printf '%-22s %12s %12s %10s\n' metric hv qemu hv/qemu
for m in to_guest_mbs from_guest_mbs rtt_us; do
  a=$(field "$m" "${R[hv]}") b=$(field "$m" "${R[qemu]}")
  printf '%-22s %12s %12s %10s\n' "$m" "${a:--}" "${b:--}" "$(ratio "$a" "$b")"
done
rm -rf "$T"
