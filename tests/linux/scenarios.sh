#!/usr/bin/env bash
# Real Linux guests on hv: runs inside a host with a usable /dev/kvm (the nested
# KVM host from tools/kvmhost on machines without VT-x/AMD-V, directly elsewhere).
#   scenarios.sh HVBROKER VMLINUZ INITRD [SCENARIO...]
# Prints one "PASS name: ..." or "FAIL name: ..." line per check, timing lines
# "TIME name ready=S total=S", and exits non-zero if any check failed.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BROKER=$1 KERNEL=$2 INITRD=$3
shift 3
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(smoke1 smoke2 panic socket blk blk_restart ahci ahci_intx net_user net_tap bhyve_cli)
T=$(mktemp -d /tmp/hvlin.XXXXXX)
# The VM's processes run under a uid of their own: let them through to the
# control socket in $T/run (they cannot list $T).
chmod 711 "$T"
export HV_RUNTIME_DIR=$T/run
failures=0

pass() { echo "PASS $1: $2"; }
fail() { echo "FAIL $1: $2"; failures=$((failures + 1)); }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# vm_file NAME CPUS CMDLINE COM1 [DEVICES]   (COM1: "(stdio = void)" or "(socket = \"PATH\")";
# DEVICES: more entries for the devices list, e.g. '(slot = 3, emulation = "virtio-blk", path = "d.img"),')
vm_file() {
  cat >"$T/$1.capnp" <<VM
using import "/hv/vm.capnp".Vm;
const vm :Vm = (
  name = "$1",
  cpus = $2,
  memory = "512M",
  boot = (kernel = "$KERNEL", initrd = "$INITRD", cmdline = "console=ttyS0 $3"),
  devices = [(slot = 0, emulation = "hostbridge"), ${5:-} (slot = 31, emulation = "lpc")],
  lpc = (com1 = $4),
);
VM
  echo "$T/$1.capnp"
}

# boot NAME CPUS CMDLINE [COM1] [DEVICES]: runs the VM, records output and timing.
# BROKER_WRAP, if set, is a command the broker runs under.
# A guest that triple-faults (exit 3) or hangs (no exit within the limit, 124)
# is booted once more, and the run says so: under the nested host (QEMU's
# emulated SVM) a Debian guest on hv crashes early in about one boot in 10-30,
# cause not yet found (see README, "Known problem", and the issue notes). Every
# other outcome counts as it is.
boot() {
  boot_once "$@"
  local first
  first=$(cat "$T/$1.exit")
  if [[ $first == 3 || $first == 124 ]]; then
    echo "RETRY $1: exit $first: $(grep -m1 -o 'triple-faulted.*' "$T/$1.err" | cut -c1-160)$(grep -m1 -o 'rcu: INFO.*' "$T/$1.out" | cut -c1-100)"
    boot_once "$@"
  fi
}

boot_once() {
  local name=$1 cpus=$2 cmdline=$3 com1=${4:-"(stdio = void)"} devices=${5:-} limit=${BOOT_LIMIT:-360}
  local file start ready="" dated="" end
  file=$(vm_file "$name" "$cpus" "$cmdline" "$com1" "$devices")
  start=$(now)
  timeout "$limit" ${BROKER_WRAP:-} "$BROKER" up "$file" >"$T/$name.out" 2>"$T/$name.err" </dev/null &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [[ -z $ready ]] && grep -q HV-GUEST-READY "$T/$name.out" 2>/dev/null; then
      ready=$(now)
    fi
    # The host's clock when the guest's `date` line shows up, to compare with it.
    if [[ -z $dated ]] && grep -q '^date=' "$T/$name.out" 2>/dev/null; then
      dated=1
      date +%s >"$T/$name.hostdate"
    fi
    sleep 0.2
  done
  wait "$pid"
  echo $? >"$T/$name.exit"
  end=$(now)
  echo "TIME $name ready=$([[ -n $ready ]] && elapsed "$start" "$ready" || echo never) total=$(elapsed "$start" "$end")"
}

exit_of() { cat "$T/$1.exit"; }
show_tail() { echo "--- $1 stdout (tail)"; tail -n 15 "$T/$1.out"; echo "--- $1 stderr"; tail -n 15 "$T/$1.err"; }

check_smoke() {
  local name=$1 cpus=$2
  boot "$name" "$cpus" "panic=-1 hv.test=smoke"
  local ok=1
  grep -q HV-GUEST-READY "$T/$name.out" || { fail "$name" "no HV-GUEST-READY marker"; ok=0; }
  grep -q "^nproc=$cpus" "$T/$name.out" ||
    { fail "$name" "guest nproc is not $cpus: $(grep nproc= "$T/$name.out")"; ok=0; }
  local guest host
  guest=$(grep -o '^date=[0-9]*' "$T/$name.out" | cut -d= -f2)
  host=$(cat "$T/$name.hostdate" 2>/dev/null)
  if [[ -z $guest || -z $host ]] || ((guest - host > 5 || host - guest > 5)); then
    fail "$name" "guest date '$guest' is not within 5 s of the host's '$host'"
    ok=0
  fi
  grep -q "HV-GUEST-RESULT=0" "$T/$name.out" || { fail "$name" "the smoke test did not pass"; ok=0; }
  [[ $(exit_of "$name") == 0 ]] || { fail "$name" "hvbroker exited $(exit_of "$name"), not 0 (power-off)"; ok=0; }
  ((ok)) && pass "$name" "booted with $cpus vCPU(s), nproc=$cpus, date $guest vs host $host, powered off, exit 0"
  ((ok)) || show_tail "$name"
}

check_panic() {
  local run
  run=$(printf 'echo c > /proc/sysrq-trigger' | base64 -w0)
  boot panic 1 "panic=5 hv.run=$run"
  local code
  code=$(exit_of panic)
  if [[ $code == 8 ]] && grep -q "panicked" "$T/panic.err" && grep -q "sysrq" "$T/panic.err"; then
    pass panic "guest panic ended the VM with exit 8 and the panic message: $(grep -m1 -o 'Kernel panic.*' "$T/panic.err")"
  else
    fail panic "exit $code (want 8 with the panic message)"
    show_tail panic
  fi
}

check_socket() {
  # The VM runs in the background while socat talks to it, so the retry of a
  # guest that crashed (see boot) covers the whole exchange, socat included.
  socket_once
  local first
  first=$(exit_of socket)
  if [[ $first == 3 || $first == 124 ]]; then
    echo "RETRY socket: exit $first: $(grep -m1 -o 'triple-faulted.*' "$T/socket.err" | cut -c1-160)"
    socket_once
  fi
  if grep -q socket-42 "$T/sock.out" && [[ $(exit_of socket) == 0 ]]; then
    pass socket "socat on the COM1 socket saw the boot, ran a command in the guest shell, powered off"
  else
    fail socket "exit $(exit_of socket); socat saw: $(tail -c 300 "$T/sock.out" | tr -d '\r')"
    show_tail socket
  fi
}

# Writes to socat's stdin; if socat is gone (its VM crashed), the write fails
# quietly instead of SIGPIPE ending the whole run.
say_to_socat() { (trap '' PIPE; printf "$1" >&$feed) 2>/dev/null; }

socket_once() {
  local sock=$T/console.sock
  rm -f "$sock" "$T/sock.in"
  # No hv.test: the guest's init offers a shell on the console, here a socket.
  boot_once socket 1 "panic=-1" "(socket = \"$sock\")" &
  local boot_pid=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
  mkfifo "$T/sock.in"
  socat -t 5 - "UNIX-CONNECT:$sock" <"$T/sock.in" >"$T/sock.out" 2>"$T/sock.err" &
  local socat_pid=$!
  exec {feed}>"$T/sock.in"
  for _ in $(seq 900); do
    grep -q HV-GUEST-READY "$T/sock.out" && break
    kill -0 "$socat_pid" 2>/dev/null || break  # the VM (and so the socket) went away
    sleep 0.2
  done
  sleep 3  # let the shell print its prompt
  say_to_socat 'echo socket-$((6*7))\n'
  for _ in $(seq 300); do grep -q socket-42 "$T/sock.out" && break; sleep 0.2; done
  say_to_socat 'poweroff -f\n'
  wait "$boot_pid"
  exec {feed}>&-
  wait "$socat_pid" 2>/dev/null
}

blocks() { stat -c %b "$1"; }
md5_at() { dd if="$1" bs=1M skip="$2" count="$3" 2>/dev/null | md5sum | cut -d' ' -f1; }

# virtio-blk: two disks, one read-only; a pattern written and read back through the
# guest's own driver, the host file checked after the VM ended, and a discard that
# gives the host its blocks back.
check_blk() {
  local a=$T/vda.img b=$T/vdb.img c=$T/vdc.img
  truncate -s 64M "$c"
  dd if=/dev/urandom of="$a" bs=1M count=32 2>/dev/null
  truncate -s 64M "$a"
  dd if=/dev/zero of="$b" bs=1M count=16 2>/dev/null
  local blocks_before
  blocks_before=$(blocks "$a")
  local script
  script=$(base64 -w0 <<'GUEST'
echo "sizes vda=$(cat /sys/block/vda/size) vdb=$(cat /sys/block/vdb/size) vdb-ro=$(cat /sys/block/vdb/ro)"
echo "vda-queues=$(ls /sys/block/vda/mq | wc -l)"
dd if=/dev/urandom of=/pattern bs=1M count=8 2>/dev/null
dd if=/pattern of=/dev/vda bs=1M seek=4 conv=fsync 2>/dev/null || echo write-failed
sync; echo 3 >/proc/sys/vm/drop_caches
echo "guest-sum=$(md5sum </pattern | cut -d' ' -f1)"
echo "readback-sum=$(dd if=/dev/vda bs=1M skip=4 count=8 2>/dev/null | md5sum | cut -d' ' -f1)"
if dd if=/pattern of=/dev/vdb bs=4k count=1 conv=fsync 2>/dev/null; then echo ro-write=accepted; else echo ro-write=refused; fi
blkdiscard -o 16777216 -l 16777216 /dev/vda && echo discard=done
mkfs.ext4 -q /dev/vdc && mount -t ext4 /dev/vdc /mnt && echo "written by the guest" >/mnt/hello &&
  umount /mnt && mount -t ext4 /dev/vdc /mnt && echo "ext4-read=$(cat /mnt/hello)" && umount /mnt
GUEST
)
  boot blk 2 "panic=-1 hv.run=$script" "(stdio = void)" \
    "(slot = 3, emulation = \"virtio-blk\", path = \"$a\", options = [(key = \"num_queues\", value = \"2\")]), (slot = 4, emulation = \"virtio-blk\", path = \"$b\", options = [(key = \"ro\")]), (slot = 4, function = 1, emulation = \"virtio-blk\", path = \"$c\"),"
  local out=$T/blk.out ok=1 guest_sum host_sum readback
  grep -q "sizes vda=131072 vdb=32768 vdb-ro=1" "$out" ||
    { fail blk "guest disk sizes: $(grep sizes "$out")"; ok=0; }
  grep -q "vda-queues=2" "$out" || { fail blk "vda should have 2 request queues: $(grep vda-queues "$out")"; ok=0; }
  guest_sum=$(sed -n 's/^guest-sum=//p' "$out" | tr -d '\r')
  readback=$(sed -n 's/^readback-sum=//p' "$out" | tr -d '\r')
  host_sum=$(md5_at "$a" 4 8)
  [[ -n $guest_sum && $guest_sum == "$readback" ]] ||
    { fail blk "guest read back '$readback', wrote '$guest_sum'"; ok=0; }
  [[ $guest_sum == "$host_sum" ]] || { fail blk "host file holds '$host_sum', guest wrote '$guest_sum'"; ok=0; }
  grep -q "ro-write=refused" "$out" || { fail blk "the read-only disk took a write"; ok=0; }
  local blocks_after
  blocks_after=$(blocks "$a")
  grep -q "discard=done" "$out" && ((blocks_after <= blocks_before - 16 * 2048 + 2048)) ||
    { fail blk "discard: st_blocks $blocks_before -> $blocks_after"; ok=0; }
  grep -q "ext4-read=written by the guest" "$out" ||
    { fail blk "ext4 round trip on vdc (slot 4 function 1) failed"; ok=0; }
  [[ $(debugfs -R "cat /hello" "$c" 2>/dev/null) == "written by the guest" ]] ||
    { fail blk "the host does not find /hello in vdc.img"; ok=0; }
  grep -q "HV-GUEST-RESULT=0" "$out" && [[ $(exit_of blk) == 0 ]] ||
    { fail blk "guest result/exit: $(exit_of blk)"; ok=0; }
  ((ok)) && pass blk "vda/vdb sizes right, 8 MiB pattern round trip (md5 $guest_sum) matches the host file, 2 request queues on vda, read-only disk refused a write, discard: st_blocks $blocks_before -> $blocks_after, mkfs.ext4 + mount + file on vdc at slot 4 function 1, read back by the host"
  ((ok)) || show_tail blk
}

# AHCI: one controller with a disk on port 0 and a CD-ROM on port 1, found by the
# guest's own ahci driver. The CD holds an ISO this test builds; the guest mounts
# it as iso9660 and checksums its files. The disk takes mkfs.ext4 and a file
# round trip (checked again on the host), and fstrim gives the host its blocks back.
check_ahci() {
  local disk=$T/ahci-disk.img iso=$T/ahci.iso tree=$T/iso-tree
  mkdir -p "$tree/sub"
  dd if=/dev/urandom of="$tree/random.bin" bs=1M count=3 2>/dev/null
  dd if=/dev/urandom of="$tree/sub/odd.bin" bs=1000 count=77 2>/dev/null
  echo "hello from the host's ISO" >"$tree/sub/hello.txt"
  if command -v xorriso >/dev/null; then
    xorriso -as mkisofs -quiet -V HVTEST -o "$iso" "$tree" 2>/dev/null
  else
    genisoimage -quiet -V HVTEST -o "$iso" "$tree" 2>/dev/null
  fi
  [[ -s $iso ]] || { fail ahci "could not build the ISO (install xorriso: tools/setup)"; return; }
  local want_sums
  want_sums=$(cd "$tree" && md5sum random.bin sub/odd.bin sub/hello.txt | cut -d' ' -f1 | tr '\n' ' ')
  truncate -s 256M "$disk"
  local script
  script=$(base64 -w0 <<'GUEST'
for i in $(seq 1 50); do [ -b /dev/sda ] && [ -b /dev/sr0 ] && break; sleep 0.1; done
echo "pci-ids=$(cat /sys/bus/pci/drivers/ahci/*/vendor 2>/dev/null):$(cat /sys/bus/pci/drivers/ahci/*/device 2>/dev/null)"
echo "sda-size=$(cat /sys/block/sda/size) sda-model=$(cat /sys/block/sda/device/model | tr -d ' ') sr0-type=$(cat /sys/block/sr0/device/type)"
echo "ncq-depth=$(cat /sys/block/sda/device/queue_depth)"
echo "ahci-msi=$(grep ahci /proc/interrupts | grep -c MSI)"
mkdir -p /cd && mount -t iso9660 -o ro /dev/sr0 /cd && echo cd-mounted=yes
echo "cd-sums=$(cd /cd && md5sum random.bin sub/odd.bin sub/hello.txt | cut -d' ' -f1 | tr '\n' ' ')"
umount /cd
mkfs.ext4 -q -E nodiscard /dev/sda && mount -t ext4 /dev/sda /mnt && echo mkfs=ok
dd if=/dev/urandom of=/mnt/data bs=1M count=64 2>/dev/null
echo "written-sum=$(md5sum </mnt/data | cut -d' ' -f1)"
echo "ahci disk" >/mnt/hello
umount /mnt && echo 3 >/proc/sys/vm/drop_caches && mount -t ext4 /dev/sda /mnt
echo "read-sum=$(md5sum </mnt/data | cut -d' ' -f1)"
sync; echo "marker=before-trim"; sleep 1
rm /mnt/data && sync && fstrim -v /mnt && echo fstrim=done
umount /mnt
# Kernel messages from here on would interleave with the result line.
sleep 1; echo 1 >/proc/sys/kernel/printk
GUEST
)
  boot ahci 2 "panic=-1 hv.run=$script" "(stdio = void)" \
    "(slot = 4, emulation = \"ahci\", ports = [(type = hd, path = \"$disk\", options = [(key = \"ser\", value = \"HVDISK01\")]), (type = cd, path = \"$iso\")]),"
  local out=$T/ahci.out ok=1 written read blocks_now
  grep -q "pci-ids=0x8086:0x2922" "$out" || { fail ahci "the ahci driver did not bind 8086:2922: $(grep pci-ids "$out" | tr -d '\r')"; ok=0; }
  grep -q "sda-size=524288 .*sr0-type=5" "$out" || { fail ahci "disk/CD not found: $(grep sda-size "$out" | tr -d '\r')"; ok=0; }
  grep -q "ahci-msi=1" "$out" || { fail ahci "the driver does not use the controller's MSI: $(grep ahci-msi "$out" | tr -d '\r')"; ok=0; }
  grep -q "cd-mounted=yes" "$out" || { fail ahci "the ISO did not mount as iso9660"; ok=0; }
  grep -q "cd-sums=$want_sums" "$out" || { fail ahci "ISO files: $(grep cd-sums "$out" | tr -d '\r'), want $want_sums"; ok=0; }
  grep -q "mkfs=ok" "$out" || { fail ahci "mkfs.ext4 + mount failed"; ok=0; }
  written=$(sed -n 's/^written-sum=//p' "$out" | tr -d '\r')
  read=$(sed -n 's/^read-sum=//p' "$out" | tr -d '\r')
  [[ -n $written && $written == "$read" ]] || { fail ahci "64 MiB file: wrote $written, read back $read"; ok=0; }
  [[ $(debugfs -R "cat /hello" "$disk" 2>/dev/null) == "ahci disk" ]] || { fail ahci "the host does not find /hello on the disk"; ok=0; }
  blocks_now=$(blocks "$disk")
  # The 64 MiB file was written and deleted: after fstrim the image holds little more than ext4's metadata.
  grep -q "fstrim=done" "$out" && ((blocks_now < 40 * 2048)) ||
    { fail ahci "fstrim: $(grep -m1 'fstrim' "$out" | tr -d '\r'), image st_blocks $blocks_now (want < $((40 * 2048)))"; ok=0; }
  grep -q "HV-GUEST-RESULT=0" "$out" && [[ $(exit_of ahci) == 0 ]] || { fail ahci "guest result/exit: $(exit_of ahci)"; ok=0; }
  ((ok)) && pass ahci "ahci bound 8086:2922 with a 256 MiB disk and a CD on one controller ($(grep -o 'ncq-depth=[0-9]*' "$out"), MSI); ISO mounted as iso9660, 3 files md5 right; mkfs.ext4, 64 MiB file round trip md5 $written, /hello read on the host; fstrim left st_blocks $blocks_now"
  ((ok)) || show_tail ahci
}

# AHCI without MSI (pci=nomsi): INTx, level-triggered, on two single-port
# controllers (bhyve's ahci-hd and ahci-cd). A pattern goes through the disk
# with O_DIRECT in both directions, and a file is read from an ISO.
check_ahci_intx() {
  local disk=$T/intx-disk.img iso=$T/intx.iso tree=$T/intx-tree
  mkdir -p "$tree"
  dd if=/dev/urandom of="$tree/blob" bs=1M count=5 2>/dev/null
  xorriso -as mkisofs -quiet -o "$iso" "$tree" 2>/dev/null ||
    genisoimage -quiet -o "$iso" "$tree" 2>/dev/null
  [[ -s $iso ]] || { fail ahci_intx "could not build the ISO (install xorriso: tools/setup)"; return; }
  local want
  want=$(md5sum <"$tree/blob" | cut -d' ' -f1)
  truncate -s 64M "$disk"
  local script
  script=$(base64 -w0 <<'GUEST'
for i in $(seq 1 50); do [ -b /dev/sda ] && [ -b /dev/sr0 ] && break; sleep 0.1; done
echo "ahci-intx=$(grep ahci /proc/interrupts | grep -c IO-APIC) ahci-msi=$(grep ahci /proc/interrupts | grep -c MSI)"
mkdir -p /cd && mount -t iso9660 -o ro /dev/sr0 /cd && echo "cd-sum=$(md5sum </cd/blob | cut -d' ' -f1)"
dd if=/dev/urandom of=/pattern bs=1M count=16 2>/dev/null
dd if=/pattern of=/dev/sda bs=1M seek=8 oflag=direct conv=fsync 2>/dev/null || echo write-failed
echo "pattern-sum=$(md5sum </pattern | cut -d' ' -f1)"
echo "readback-sum=$(dd if=/dev/sda bs=1M skip=8 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
umount /cd
# Kernel messages from here on would interleave with the result line.
sleep 1; echo 1 >/proc/sys/kernel/printk
GUEST
)
  boot ahci_intx 2 "panic=-1 pci=nomsi hv.run=$script" "(stdio = void)" \
    "(slot = 5, emulation = \"ahci-hd\", path = \"$disk\"), (slot = 6, emulation = \"ahci-cd\", path = \"$iso\"),"
  local out=$T/ahci_intx.out ok=1 pattern readback host
  grep -q "ahci-intx=2 ahci-msi=0" "$out" || { fail ahci_intx "want both controllers on IO-APIC lines: $(grep ahci-intx "$out" | tr -d '\r')"; ok=0; }
  grep -q "cd-sum=$want" "$out" || { fail ahci_intx "ISO file: $(grep cd-sum "$out" | tr -d '\r'), want $want"; ok=0; }
  pattern=$(sed -n 's/^pattern-sum=//p' "$out" | tr -d '\r')
  readback=$(sed -n 's/^readback-sum=//p' "$out" | tr -d '\r')
  host=$(md5_at "$disk" 8 16)
  [[ -n $pattern && $pattern == "$readback" && $pattern == "$host" ]] ||
    { fail ahci_intx "16 MiB pattern: guest $pattern, read back $readback, host file $host"; ok=0; }
  grep -q "HV-GUEST-RESULT=0" "$out" && [[ $(exit_of ahci_intx) == 0 ]] || { fail ahci_intx "guest result/exit: $(exit_of ahci_intx)"; ok=0; }
  ((ok)) && pass ahci_intx "ahci-hd and ahci-cd on INTx (pci=nomsi): ISO file md5 $want, 16 MiB O_DIRECT pattern md5 $pattern in guest, read back and in the host file"
  ((ok)) || show_tail ahci_intx
}

# Per-device restart: the guest writes and verifies 1 MiB chunks on a virtio-blk
# disk (O_DIRECT, fsync) for a while, while the host SIGKILLs the disk's process
# $HV_BLK_KILLS times (default 20) at random moments. The loop runs until the
# host writes STOP into a second disk (vdb) once it has killed enough, or for
# at most $HV_BLK_LOOP_SECONDS (default 400; the VM may take 560 s in all). The broker restarts it each time
# (restart = onFailure); the successor resumes from the state region and redoes
# the requests in flight. No I/O error, every read matches what was written,
# the host file holds the last write of every chunk, and each successor is
# sandboxed again (seccomp filter mode, namespaces of its own).
BLK_KILLS=${HV_BLK_KILLS:-20}
check_blk_restart() {
  local a=$T/restart.img stop=$T/stop.img name=blkrestart
  truncate -s 64M "$a"
  truncate -s 1M "$stop"
  local script
  script=$(base64 -w0 <<'GUEST'
echo "blk-loop start"
end=$(( $(date +%s) + LOOPSECONDS ))
i=0; bad=0; slowest=0
while [ "$(date +%s)" -lt "$end" ] && [ "$(dd if=/dev/vdb bs=512 count=1 iflag=direct 2>/dev/null | head -c 4)" != STOP ]; do
  c=$((i % 16))
  dd if=/dev/urandom of=/chunk bs=64k count=16 2>/dev/null
  t0=$(cut -d' ' -f1 /proc/uptime)
  dd if=/chunk of=/dev/vda bs=64k seek=$((c * 16)) oflag=direct conv=fsync 2>/dev/null || { echo "write-error $i"; bad=$((bad + 1)); }
  back=$(dd if=/dev/vda bs=64k skip=$((c * 16)) count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  t1=$(cut -d' ' -f1 /proc/uptime)
  want=$(md5sum </chunk | cut -d' ' -f1)
  [ "$back" = "$want" ] || { echo "mismatch $i chunk $c"; bad=$((bad + 1)); }
  eval "sum_$c=$want"
  ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')
  [ "$ms" -gt "$slowest" ] && slowest=$ms
  i=$((i + 1))
done
for c in $(seq 0 15); do eval "echo chunk-$c=\${sum_$c:-none}"; done
echo "ioerrors=$(dmesg | grep -ci 'i/o error')"
echo "blk-loop done iterations=$i bad=$bad slowest-ms=$slowest"
GUEST
)
  script=$(echo "$script" | base64 -d | sed "s/LOOPSECONDS/${HV_BLK_LOOP_SECONDS:-400}/" | base64 -w0)
  # The killer: waits for the loop, then kills the disk's process at random
  # moments and checks each successor's sandbox. It learns each successor's
  # pid from the broker's "serves again (pid N" line (spawning `hvbroker
  # status` for every poll is slow under the nested host).
  (
    for _ in $(seq 1 900); do grep -q "blk-loop start" "$T/$name.out" 2>/dev/null && break; sleep 0.2; done
    pid=$("$BROKER" status "$name" 2>/dev/null | awk '$1 == "disk" && $4 == "running" { print $3 }')
    for k in $(seq 1 "$BLK_KILLS"); do
      sleep "0.$((RANDOM % 5 + 1))"
      [[ -n $pid ]] || { echo "no-process $k"; break; }
      served=$(grep -c "serves again" "$T/$name.err")
      kill -9 "$pid" && echo "killed $k $pid"
      new=""
      for _ in $(seq 1 3000); do
        if (($(grep -c "serves again" "$T/$name.err") > served)); then
          new=$(grep -o "serves again (pid [0-9]*" "$T/$name.err" | tail -1 | grep -o "[0-9]*$")
          break
        fi
        sleep 0.02
      done
      if [[ -n $new && $new != "$pid" ]] && grep -q "^Seccomp:[[:space:]]*2" "/proc/$new/status" &&
        grep -q "^NoNewPrivs:[[:space:]]*1" "/proc/$new/status" &&
        [[ $(readlink "/proc/$new/ns/pid") != $(readlink /proc/self/ns/pid) &&
          $(readlink "/proc/$new/ns/mnt") != $(readlink /proc/self/ns/mnt) &&
          $(readlink "/proc/$new/ns/user") != $(readlink /proc/self/ns/user) ]]; then
        echo "sandboxed $k $new"
      else
        echo "NOT-SANDBOXED $k ${new:-none}"
      fi
      pid=$new
    done
    # Enough: the guest's loop stops at its next round.
    printf STOP | dd of="$stop" conv=notrunc 2>/dev/null
  ) >"$T/$name.killer" 2>&1 &
  local killer=$!
  BOOT_LIMIT=560 boot "$name" 2 "panic=-1 hv.run=$script" "(stdio = void)" \
    "(slot = 3, emulation = \"virtio-blk\", path = \"$a\", name = \"disk\", restart = (mode = onFailure, limit = 1000, windowSeconds = 600)), (slot = 4, emulation = \"virtio-blk\", path = \"$stop\"),"
  wait "$killer"
  local out=$T/$name.out ok=1
  local killed sandboxed
  killed=$(grep -c "^killed" "$T/$name.killer")
  sandboxed=$(grep -c "^sandboxed" "$T/$name.killer")
  ((killed == BLK_KILLS)) || { fail blk_restart "killed $killed times, wanted $BLK_KILLS: $(tr '\n' ' ' <"$T/$name.killer" | cut -c1-300)"; ok=0; }
  ((sandboxed == killed)) || { fail blk_restart "only $sandboxed of $killed successors were sandboxed: $(grep NOT "$T/$name.killer" | head -3)"; ok=0; }
  local restarts
  restarts=$(grep -c "serves again" "$T/$name.err")
  ((restarts >= killed)) || { fail blk_restart "$restarts successors served, $killed kills"; ok=0; }
  grep -q "blk-loop done" "$out" || { fail blk_restart "the guest loop did not finish"; ok=0; }
  grep -q "blk-loop done .* bad=0 " "$out" || { fail blk_restart "guest saw errors: $(grep -m3 -e write-error -e mismatch "$out" | tr '\n' ' ')"; ok=0; }
  grep -q "^ioerrors=0" "$out" || { fail blk_restart "the guest kernel logged I/O errors: $(grep ioerrors "$out")"; ok=0; }
  local c host_sum guest_sum chunks_ok=0
  for c in $(seq 0 15); do
    guest_sum=$(sed -n "s/^chunk-$c=//p" "$out" | tr -d '\r')
    host_sum=$(md5_at "$a" "$c" 1)
    [[ $guest_sum == "$host_sum" ]] && chunks_ok=$((chunks_ok + 1))
  done
  ((chunks_ok == 16)) || { fail blk_restart "only $chunks_ok of 16 chunks in the host file match the guest's last writes"; ok=0; }
  [[ $(exit_of "$name") == 0 ]] || { fail blk_restart "hvbroker exited $(exit_of "$name")"; ok=0; }
  local gaps
  gaps=$(grep -o "serves again (pid [0-9]*, sandboxed), [0-9.]* ms" "$T/$name.err" | awk '{ print $(NF - 1) }' | sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "%d restarts, median %.1f ms, p90 %.1f ms, max %.1f ms", NR, a[int((NR + 1) / 2)], a[int(NR * 0.9 + 0.5)], a[NR] }')
  ((ok)) && pass blk_restart "$(grep -o 'iterations=[0-9]*' "$out") write+verify rounds, $killed SIGKILLs of the disk process, every successor sandboxed, 0 I/O errors, 16/16 chunks match in the host file; death to serving: $gaps; slowest guest round $(grep -o 'slowest-ms=[0-9]*' "$out")"
  ((ok)) || { show_tail "$name"; cat "$T/$name.killer" | tail -5; }
}

# virtio-net, user mode (libslirp in the device process): the guest gets its
# address by DHCP, fetches a page from an HTTP server on the host's loopback, and
# serves a token through a port forward that the host connects to.
check_net_user() {
  local www=$T/www http_port=$((20000 + RANDOM % 10000)) fwd_port=$((30000 + RANDOM % 10000))
  mkdir -p "$www"
  head -c 225000 /dev/urandom | base64 >"$www/page.txt"
  local page_sum
  page_sum=$(md5sum <"$www/page.txt" | cut -d' ' -f1)
  busybox httpd -f -p "127.0.0.1:$http_port" -h "$www" &
  local httpd_pid=$!
  # DNS: the VM sees a resolv.conf naming a server the test runs on a loopback
  # address of its own (bind-mounted in a mount namespace for the broker only:
  # the host's file is untouched); libslirp forwards the guest's queries to it.
  local dns_ip=127.77.$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1)) dns_name=hv-dns-test.example
  echo "nameserver $dns_ip" >"$T/resolv.conf"
  chmod 644 "$T/resolv.conf"
  /usr/bin/python3 "$HERE/dns_responder.py" "$dns_ip" "$dns_name" 10.0.2.2 "$T/dns.ready" >"$T/dns.log" 2>&1 &
  local dns_pid=$!
  for _ in $(seq 50); do [[ -e $T/dns.ready ]] && break; sleep 0.1; done
  local script
  script=$(base64 -w0 <<GUEST
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -q -f -n -t 20 -T 1 >/dev/null 2>&1 || echo dhcp=failed
echo "guest-addr=\$(ip -4 -o addr show eth0 | sed -n 's/.* inet \([0-9.\/]*\).*/\1/p')"
echo "guest-mac=\$(cat /sys/class/net/eth0/address)"
# HTTP/1.0 by hand (busybox's static wget crashes resolving in this initramfs).
printf 'GET /page.txt HTTP/1.0\r\n\r\n' | timeout 60 nc 10.0.2.2 $http_port >/tmp/response
echo "http-status=\$(head -n1 /tmp/response)"
echo "http-sum=\$(tr -d '\r' </tmp/response | sed '1,/^\$/d' | md5sum | cut -d' ' -f1)"
echo "dns=\$(nslookup $dns_name 10.0.2.3 2>&1 | sed -n '/^Name:/,\$s/^Address: *//p' | head -n1)"
echo HV-NET-LISTENING
echo forward-token-\$((6*7)) | timeout 300 nc -l -p 8022 >/dev/null; echo forward-nc=\$?
GUEST
)
  cat >"$T/with-resolv.sh" <<WRAP
#!/bin/sh
exec unshare --mount -- sh -c 'mount --bind "\$0" /etc/resolv.conf && exec "\$@"' "$T/resolv.conf" "\$@"
WRAP
  chmod 755 "$T/with-resolv.sh"
  BROKER_WRAP=$T/with-resolv.sh \
  boot net_user 1 "panic=-1 hv.run=$script" "(stdio = void)" \
    "(slot = 2, emulation = \"virtio-net\", path = \"user\", options = [(key = \"hostfwd\", value = \"tcp:127.0.0.1:$fwd_port-:8022\")])," &
  local boot_pid=$!
  for _ in $(seq 3000); do grep -q HV-NET-LISTENING "$T/net_user.out" 2>/dev/null && break; kill -0 $boot_pid 2>/dev/null || break; sleep 0.2; done
  local got=""
  for _ in $(seq 60); do
    got=$(timeout 10 busybox nc 127.0.0.1 "$fwd_port" </dev/null 2>/dev/null | tr -d '\r\n')
    [[ $got == forward-token-42 ]] && break
    sleep 1
  done
  wait "$boot_pid"
  kill "$httpd_pid" "$dns_pid" 2>/dev/null; wait "$httpd_pid" "$dns_pid" 2>/dev/null
  local out=$T/net_user.out ok=1 mac logged
  grep -q "^guest-addr=10.0.2.15/24" "$out" || { fail net_user "DHCP: $(grep -E 'guest-addr|dhcp=' "$out" | tr -d '\r')"; ok=0; }
  mac=$(sed -n 's/^guest-mac=//p' "$out" | tr -d '\r')
  logged=$(grep -o 'mac [0-9a-f:]*' "$T/net_user.err" | head -n1 | cut -d' ' -f2)
  [[ $mac == 02:68:76:* && $mac == "$logged" ]] || { fail net_user "guest MAC '$mac', device says '$logged'"; ok=0; }
  grep -q "^http-sum=$page_sum" "$out" || { fail net_user "HTTP page from the host: $(grep http-sum "$out" | tr -d '\r'), want $page_sum"; ok=0; }
  [[ $got == forward-token-42 ]] || { fail net_user "port forward 127.0.0.1:$fwd_port -> guest:8022 gave '$got'"; ok=0; }
  grep -q "forward-nc=0" "$out" || { fail net_user "the guest's listener did not see the connection"; ok=0; }
  grep -q "^dns=10.0.2.2" "$out" && grep -q "query $dns_name" "$T/dns.log" ||
    { fail net_user "DNS: the guest got '$(sed -n 's/^dns=//p' "$out" | tr -d '\r')' for $dns_name, the host's server saw: $(head -c 300 "$T/dns.log")"; ok=0; }
  grep -q "HV-GUEST-RESULT=0" "$out" && [[ $(exit_of net_user) == 0 ]] || { fail net_user "guest result/exit: $(exit_of net_user)"; ok=0; }
  local counters
  counters=$(grep -o 'rx [0-9]* packets.*' "$T/net_user.err" | tail -n1)
  ((ok)) && pass net_user "DHCP gave $(sed -n 's/^guest-addr=//p' "$out" | tr -d '\r'), MAC $mac (derived from the VM name and slot), 300 kB page from the host's loopback over HTTP (md5 $page_sum), host -> guest port forward delivered the token, $dns_name resolved through 10.0.2.3 by the host's DNS server; device counters: $counters"
  ((ok)) || show_tail net_user
}

# virtio-net on a tap with 2 queue pairs, inside a network namespace this test
# creates (the host's own interfaces are never touched): the guest and the
# namespace ping each other, then 100 MB go to the guest over TCP and come back,
# checksums compared on both ends.
check_net_tap() {
  local ns=hvnet$$ tap=hvtap0 data=$T/net-100M back=$T/net-back
  if ! ip netns add "$ns"; then fail net_tap "cannot create a network namespace"; return; fi
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip tuntap add dev "$tap" mode tap vnet_hdr multi_queue
  ip netns exec "$ns" ip addr add 10.9.0.1/24 dev "$tap"
  ip netns exec "$ns" ip link set "$tap" up
  head -c 100M /dev/urandom >"$data"
  local sum
  sum=$(md5sum <"$data" | cut -d' ' -f1)
  # One-way (-u): busybox's nc ends a connection at the first half-close.
  ip netns exec "$ns" socat -u "OPEN:$data" TCP-LISTEN:5001,reuseaddr &
  local send_pid=$!
  ip netns exec "$ns" socat -u TCP-LISTEN:5002,reuseaddr "CREATE:$back" &
  local recv_pid=$!
  # The broker (and so the device) runs inside the namespace, where the tap is.
  printf '#!/bin/sh\nexec ip netns exec %s %s "$@"\n' "$ns" "$BROKER" >"$T/broker-in-ns"
  chmod +x "$T/broker-in-ns"
  local BROKER=$T/broker-in-ns
  local script
  script=$(base64 -w0 <<'GUEST'
ip link set lo up; ip link set eth0 up; ip addr add 10.9.0.2/24 dev eth0
echo "guest-queues=$(ls -d /sys/class/net/eth0/queues/rx-* | wc -l)"
ping -c 3 -W 5 10.9.0.1 >/dev/null && echo guest-ping=ok
echo HV-NET-UP
start=$(date +%s)
timeout 400 nc 10.9.0.1 5001 </dev/null >/tmp/data
mid=$(date +%s)
echo "rx-sum=$(md5sum </tmp/data | cut -d' ' -f1) rx-size=$(wc -c </tmp/data) rx-seconds=$((mid - start))"
mid=$(date +%s)
timeout 400 nc 10.9.0.1 5002 </tmp/data >/dev/null; echo "send-back=$? tx-seconds=$(($(date +%s) - mid))"
sleep 20  # until the namespace has pinged us
GUEST
)
  boot net_tap 2 "panic=-1 hv.run=$script" "(stdio = void)" \
    "(slot = 2, emulation = \"virtio-net\", path = \"$tap\", options = [(key = \"queues\", value = \"2\")])," &
  local boot_pid=$!
  for _ in $(seq 3000); do grep -q HV-NET-UP "$T/net_tap.out" 2>/dev/null && break; kill -0 $boot_pid 2>/dev/null || break; sleep 0.2; done
  local host_ping=failed
  ip netns exec "$ns" busybox ping -c 3 -W 5 10.9.0.2 >/dev/null 2>&1 && host_ping=ok
  wait "$boot_pid"
  kill "$send_pid" "$recv_pid" 2>/dev/null; wait "$send_pid" "$recv_pid" 2>/dev/null
  local out=$T/net_tap.out ok=1 back_sum
  back_sum=$(md5sum <"$back" | cut -d' ' -f1)
  grep -q "guest-queues=2" "$out" || { fail net_tap "the guest should see 2 queue pairs: $(grep guest-queues "$out" | tr -d '\r')"; ok=0; }
  grep -q "guest-ping=ok" "$out" || { fail net_tap "the guest could not ping the namespace"; ok=0; }
  [[ $host_ping == ok ]] || { fail net_tap "the namespace could not ping the guest"; ok=0; }
  grep -q "rx-sum=$sum rx-size=104857600" "$out" || { fail net_tap "100 MB to the guest: $(grep rx-sum "$out" | tr -d '\r'), want $sum"; ok=0; }
  [[ $back_sum == "$sum" ]] || { fail net_tap "100 MB back from the guest: md5 $back_sum ($(stat -c %s "$back") bytes), want $sum"; ok=0; }
  grep -q "HV-GUEST-RESULT=0" "$out" && [[ $(exit_of net_tap) == 0 ]] || { fail net_tap "guest result/exit: $(exit_of net_tap)"; ok=0; }
  local counters rx_s tx_s
  counters=$(grep -o 'rx [0-9]* packets.*' "$T/net_tap.err" | tail -n1)
  rx_s=$(sed -n 's/.*rx-seconds=\([0-9]*\).*/\1/p' "$out" | tr -d '\r')
  tx_s=$(sed -n 's/.*tx-seconds=\([0-9]*\).*/\1/p' "$out" | tr -d '\r')
  ((ok)) && pass net_tap "2 queue pairs; guest and namespace pinged each other; 100 MB namespace -> guest in ${rx_s}s and back in ${tx_s}s over TCP, md5 $sum on both ends; device counters: $counters"
  ((ok)) || show_tail net_tap
  ip netns del "$ns"
  rm -f "$data" "$back"
}

# bhyve's command line (hvbroker bhyve): the OmniOS guide's `bhyve` invocation
# from the seeds, its ISO and zvol replaced by files here, its VNIC by a tap
# named bhyve0 in a network namespace this test creates, and `-l bootrom` by hv's
# --kernel/--initrd/--cmdline. First the whole command line: hv must refuse it,
# naming -B, -l bootrom and each device it does not run yet (`hvbroker bhyve -s
# help` says which), and nothing else. Then the rest boots: 4 vCPUs, 1G, the disk
# on slot 3 and the NIC on slot 5 work from the guest's own drivers.
check_bhyve_cli() {
  local iso=$T/disc1.iso disk=$T/bhyve0.img ns=hvbhyve$$
  truncate -s 16M "$iso"
  dd if=/dev/urandom of="$disk" bs=1M count=8 2>/dev/null
  truncate -s 64M "$disk"
  local disk_sum
  disk_sum=$(md5_at "$disk" 0 8)
  local script
  script=$(base64 -w0 <<'GUEST'
echo "nproc=$(nproc) mem-kb=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)"
echo "blocks=$(ls /sys/block | tr '\n' ' ')"
echo "vda-sum=$(dd if=/dev/vda bs=1M count=8 2>/dev/null | md5sum | cut -d' ' -f1)"
echo "pci=$(for d in /sys/bus/pci/devices/*; do printf '%s:%s ' "${d##*/}" "$(cat "$d/device")"; done)"
ip link set lo up; ip link set eth0 up; ip addr add 10.9.1.2/24 dev eth0
ping -c 3 -W 5 10.9.1.1 >/dev/null && echo guest-ping=ok
echo bhyve-cli-marker | dd of=/dev/vda bs=512 seek=32768 conv=fsync 2>/dev/null && echo disk-write=ok
GUEST
)
  local boot_args=(--kernel "$KERNEL" --initrd "$INITRD" --cmdline "console=ttyS0 panic=-1 hv.run=$script")
  # The seeds' command line, word for word but for the paths.
  local omnios=(-H -B "1,product=OmniOS HVM" -s 0,amd_hostbridge -s 1,lpc
    -l bootrom,/usr/share/bhyve/firmware/BHYVE.fd -l com1,stdio -c 4 -m 1G
    -s "2:0,ahci-cd,$iso" -s "3:0,virtio-blk,$disk" -s 5:0,virtio-net-viona,bhyve0
    -s 30,fbuf,vga=off,tcp=0.0.0.0:5900,wait,w=1024,h=768 -s 31,xhci,tablet)
  local not_landed
  not_landed=$("$BROKER" bhyve -s help | sed -n 's/^  \([a-z_-]*\)  (not supported by hv yet)$/\1/p' | tr '\n' ' ')
  local ok=1 code=0
  "$BROKER" bhyve "${omnios[@]}" "${boot_args[@]}" testvm >"$T/bhyve_full.out" 2>"$T/bhyve_full.err" </dev/null || code=$?
  local want=("-B 1,product=OmniOS HVM: SMBIOS tables are not supported by hv"
    "-l bootrom,/usr/share/bhyve/firmware/BHYVE.fd: hv has no firmware")
  # The supported subset: the seeds' options without -B, -l bootrom and the devices not landed.
  local subset=() i=0 dropped=()
  while ((i < ${#omnios[@]})); do
    local opt=${omnios[i]} arg=${omnios[i + 1]:-}
    if [[ $opt == -B || $arg == bootrom,* ]]; then
      dropped+=("$opt $arg"); i=$((i + 2)); continue
    fi
    if [[ $opt == -s ]]; then
      local emulation=${arg#*,}; emulation=${emulation%%,*}
      if [[ " $not_landed " == *" $emulation "* ]]; then
        want+=("-s $arg: '$emulation' is not supported by hv yet")
        dropped+=("-s $arg"); i=$((i + 2)); continue
      fi
    fi
    if [[ $opt == -H ]]; then subset+=("$opt"); i=$((i + 1)); continue; fi
    # Once fbuf runs: its `wait` would hold the boot until a VNC client connects.
    [[ $arg == *,fbuf,* ]] && arg=${arg/,wait,/,}
    subset+=("$opt" "$arg"); i=$((i + 2))
  done
  [[ $code == 1 ]] || { fail bhyve_cli "the whole OmniOS command line: exit $code, want 1"; ok=0; }
  local line
  for line in "${want[@]}"; do
    grep -qF "hvbroker bhyve: $line" "$T/bhyve_full.err" || { fail bhyve_cli "no error '$line'"; ok=0; }
  done
  local errors
  errors=$(grep -vc '^hvbroker bhyve: note: ' "$T/bhyve_full.err")
  ((errors == ${#want[@]})) || { fail bhyve_cli "$errors errors for the whole command line, want ${#want[@]}"; ok=0; }
  grep -q "^hvbroker bhyve: note: -s 5:0,virtio-net-viona,bhyve0: .*virtio-net on the tap 'bhyve0'" "$T/bhyve_full.err" ||
    { fail bhyve_cli "no note that viona runs as virtio-net"; ok=0; }
  ((ok)) || { echo "--- stderr of the whole command line"; cat "$T/bhyve_full.err"; }

  if ! ip netns add "$ns"; then fail bhyve_cli "cannot create a network namespace"; return; fi
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip tuntap add dev bhyve0 mode tap vnet_hdr
  ip netns exec "$ns" ip addr add 10.9.1.1/24 dev bhyve0
  ip netns exec "$ns" ip link set bhyve0 up
  bhyve_once "$ns" "${subset[@]}" "${boot_args[@]}" testvm
  code=$(exit_of bhyve_cli)
  if [[ $code == 3 || $code == 124 ]]; then
    echo "RETRY bhyve_cli: exit $code: $(grep -m1 -o 'triple-faulted.*' "$T/bhyve_cli.err" | cut -c1-160)"
    bhyve_once "$ns" "${subset[@]}" "${boot_args[@]}" testvm
  fi
  ip netns del "$ns"
  local out=$T/bhyve_cli.out
  grep -q "^nproc=4 " "$out" || { fail bhyve_cli "-c 4: $(grep nproc= "$out" | tr -d '\r')"; ok=0; }
  local mem_kb
  mem_kb=$(sed -n 's/.*mem-kb=\([0-9]*\).*/\1/p' "$out" | tr -d '\r')
  [[ -n $mem_kb ]] && ((mem_kb > 900000 && mem_kb <= 1048576)) || { fail bhyve_cli "-m 1G: MemTotal ${mem_kb:-?} kB"; ok=0; }
  grep -q "^vda-sum=$disk_sum" "$out" || { fail bhyve_cli "-s 3:0,virtio-blk: the guest read $(grep vda-sum "$out" | tr -d '\r'), want $disk_sum"; ok=0; }
  grep -q "pci=.*0000:00:03.0:0x1042 .*0000:00:05.0:0x1041 " "$out" ||
    { fail bhyve_cli "virtio-blk at 00:03.0 and virtio-net at 00:05.0: $(grep pci= "$out" | tr -d '\r')"; ok=0; }
  grep -q "guest-ping=ok" "$out" || { fail bhyve_cli "-s 5:0,virtio-net-viona,bhyve0: the guest could not ping the namespace"; ok=0; }
  local cd_seen=""
  if [[ " $not_landed " != *" ahci-cd "* ]]; then  # AHCI has landed: the ISO is booted with the rest
    grep -q "^blocks=.*sr0" "$out" && cd_seen=", the ISO as CD-ROM sr0 at 00:02.0" ||
      { fail bhyve_cli "-s 2:0,ahci-cd: no CD-ROM in the guest: $(grep blocks= "$out" | tr -d '\r')"; ok=0; }
  fi
  [[ $(dd if="$disk" bs=512 skip=32768 count=1 2>/dev/null | head -n1) == bhyve-cli-marker ]] ||
    { fail bhyve_cli "the guest's write did not reach $disk"; ok=0; }
  # Each step in the guest is checked above by its own line (HV-GUEST-RESULT only
  # repeats the last one's, and a kernel message can land inside that line).
  [[ $(exit_of bhyve_cli) == 0 ]] || { fail bhyve_cli "hvbroker exited $(exit_of bhyve_cli), not 0 (power-off)"; ok=0; }
  ((ok)) && pass bhyve_cli "the OmniOS command line: refused with $(( ${#want[@]} )) precise errors (${dropped[*]}); without those it booted: 4 vCPUs, ${mem_kb} kB, the disk at 00:03.0 read (md5 $disk_sum) and written, viona as virtio-net on tap bhyve0 at 00:05.0 pinged the namespace${cd_seen}; powered off, exit 0"
  ((ok)) || show_tail bhyve_cli
}

# bhyve_once NAMESPACE ARGS...: hvbroker bhyve ARGS inside the namespace (where its tap is).
bhyve_once() {
  local ns=$1
  shift
  local start end
  start=$(now)
  timeout 360 ip netns exec "$ns" "$BROKER" bhyve "$@" >"$T/bhyve_cli.out" 2>"$T/bhyve_cli.err" </dev/null
  echo $? >"$T/bhyve_cli.exit"
  end=$(now)
  echo "TIME bhyve_cli total=$(elapsed "$start" "$end")"
}

for s in "${SCENARIOS[@]}"; do
  case $s in
    smoke1) check_smoke smoke1 1 ;;
    smoke2) check_smoke smoke2 2 ;;
    panic) check_panic ;;
    socket) check_socket ;;
    blk) check_blk ;;
    blk_restart) check_blk_restart ;;
    ahci) check_ahci ;;
    ahci_intx) check_ahci_intx ;;
    net_user) check_net_user ;;
    net_tap) check_net_tap ;;
    bhyve_cli) check_bhyve_cli ;;
    *) fail "$s" "unknown scenario" ;;
  esac
done
rm -rf "$T"
exit $((failures > 0))
