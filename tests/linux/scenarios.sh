#!/usr/bin/env bash
# Real Linux guests on hv: runs inside a host with a usable /dev/kvm (the nested
# KVM host from tools/kvmhost on machines without VT-x/AMD-V, directly elsewhere).
#   scenarios.sh HVBROKER VMLINUZ INITRD [SCENARIO...]
# Prints one "PASS name: ..." or "FAIL name: ..." line per check, timing lines
# "TIME name ready=S total=S", and exits non-zero if any check failed.
set -uo pipefail
BROKER=$1 KERNEL=$2 INITRD=$3
shift 3
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(smoke1 smoke2 panic socket blk blk_restart net_user net_tap)
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
  timeout "$limit" "$BROKER" up "$file" >"$T/$name.out" 2>"$T/$name.err" </dev/null &
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
echo HV-NET-LISTENING
echo forward-token-\$((6*7)) | timeout 300 nc -l -p 8022 >/dev/null; echo forward-nc=\$?
GUEST
)
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
  kill "$httpd_pid" 2>/dev/null; wait "$httpd_pid" 2>/dev/null
  local out=$T/net_user.out ok=1 mac logged
  grep -q "^guest-addr=10.0.2.15/24" "$out" || { fail net_user "DHCP: $(grep -E 'guest-addr|dhcp=' "$out" | tr -d '\r')"; ok=0; }
  mac=$(sed -n 's/^guest-mac=//p' "$out" | tr -d '\r')
  logged=$(grep -o 'mac [0-9a-f:]*' "$T/net_user.err" | head -n1 | cut -d' ' -f2)
  [[ $mac == 02:68:76:* && $mac == "$logged" ]] || { fail net_user "guest MAC '$mac', device says '$logged'"; ok=0; }
  grep -q "^http-sum=$page_sum" "$out" || { fail net_user "HTTP page from the host: $(grep http-sum "$out" | tr -d '\r'), want $page_sum"; ok=0; }
  [[ $got == forward-token-42 ]] || { fail net_user "port forward 127.0.0.1:$fwd_port -> guest:8022 gave '$got'"; ok=0; }
  grep -q "forward-nc=0" "$out" || { fail net_user "the guest's listener did not see the connection"; ok=0; }
  grep -q "HV-GUEST-RESULT=0" "$out" && [[ $(exit_of net_user) == 0 ]] || { fail net_user "guest result/exit: $(exit_of net_user)"; ok=0; }
  local counters
  counters=$(grep -o 'rx [0-9]* packets.*' "$T/net_user.err" | tail -n1)
  ((ok)) && pass net_user "DHCP gave $(sed -n 's/^guest-addr=//p' "$out" | tr -d '\r'), MAC $mac (derived from the VM name and slot), 300 kB page from the host's loopback over HTTP (md5 $page_sum), host -> guest port forward delivered the token; device counters: $counters"
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

for s in "${SCENARIOS[@]}"; do
  case $s in
    smoke1) check_smoke smoke1 1 ;;
    smoke2) check_smoke smoke2 2 ;;
    panic) check_panic ;;
    socket) check_socket ;;
    blk) check_blk ;;
    blk_restart) check_blk_restart ;;
    net_user) check_net_user ;;
    net_tap) check_net_tap ;;
    *) fail "$s" "unknown scenario" ;;
  esac
done
rm -rf "$T"
exit $((failures > 0))
