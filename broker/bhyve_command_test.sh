#!/usr/bin/env bash
# `hvbroker bhyve` as a user runs it: --print-config writes a file that
# `hvbroker check` accepts; errors and help give the documented exit statuses.
set -uo pipefail
root=${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-hv}
broker=$(readlink -f "$root/broker/hvbroker")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
echo "not really a kernel" >vmlinuz
truncate -s 16M disk.img
failures=0
expect() {  # expect NAME WANT_STATUS GOT_STATUS
  if [[ $2 != "$3" ]]; then echo "FAIL $1: exit $3, want $2" >&2; failures=$((failures + 1)); else echo "ok $1"; fi
}

"$broker" bhyve --print-config -A -H -P -c 2 -m 512M -s 0,hostbridge -s 3:0,virtio-blk,disk.img,ro \
  -s 5,virtio-net,slirp -s 31,lpc -l com1,stdio --kernel vmlinuz --cmdline console=ttyS0 vm0 >vm0.capnp 2>err
expect print-config 0 $?
"$broker" check vm0.capnp >check.out 2>&1
expect "check of the printed file" 0 $?
grep -q "VM 'vm0', 2 vCPU(s), 512 MiB, kernel $dir/vmlinuz" check.out || { echo "FAIL check output: $(cat check.out)" >&2; failures=$((failures + 1)); }
grep -q "process virtio-blk@3.0" check.out && grep -q "process virtio-net@5.0" check.out ||
  { echo "FAIL check lists: $(cat check.out)" >&2; failures=$((failures + 1)); }
# The file is independent of the directory it was written in.
mkdir elsewhere && cp vm0.capnp elsewhere/ && "$broker" check elsewhere/vm0.capnp >/dev/null 2>&1
expect "check from another directory" 0 $?

# A device hv does not run yet: the file is still written, the status says it is not valid.
"$broker" bhyve --print-config -s 0,hostbridge -s 4,virtio-rnd --kernel vmlinuz vm1 >vm1.capnp 2>err
expect "print-config of an unsupported device" 1 $?
grep -q 'emulation = "virtio-rnd"' vm1.capnp || { echo "FAIL the file lacks the device" >&2; failures=$((failures + 1)); }
grep -qx "hvbroker bhyve: -s 4,virtio-rnd: 'virtio-rnd' is not supported by hv yet" err ||
  { echo "FAIL error: $(cat err)" >&2; failures=$((failures + 1)); }

# Malformed slots: nothing printed, every error named.
"$broker" bhyve --print-config -s 3 -s 40,foo -s 3:9,virtio-blk --kernel vmlinuz vm2 >vm2.capnp 2>err
expect "malformed slots" 1 $?
[[ ! -s vm2.capnp ]] || { echo "FAIL printed a file for a malformed command line" >&2; failures=$((failures + 1)); }
for want in "-s 3: no emulation after the slot" "-s 40,foo: slot 40 is outside 0-31" \
  "-s 40,foo: unknown emulation 'foo'" "-s 3:9,virtio-blk: function 9 is outside 0-7"; do
  grep -qF "hvbroker bhyve: $want" err || { echo "FAIL no error '$want' in: $(cat err)" >&2; failures=$((failures + 1)); }
done

# Running a VM whose file cannot start: exit 1 before anything runs.
"$broker" bhyve -s 0,hostbridge -s 3,virtio-blk,missing.img --kernel vmlinuz vm3 >/dev/null 2>err
expect "missing disk" 1 $?
grep -qF "hvbroker bhyve: -s 3,virtio-blk,missing.img: cannot open '$dir/missing.img'" err ||
  { echo "FAIL error: $(cat err)" >&2; failures=$((failures + 1)); }

"$broker" bhyve --help >help.out 2>&1
expect "--help" 0 $?
grep -q "^Exit status:" help.out || { echo "FAIL --help has no exit statuses" >&2; failures=$((failures + 1)); }
"$broker" bhyve -h >/dev/null 2>&1
expect "-h" 0 $?
"$broker" bhyve -s help >list.out 2>&1
expect "-s help" 0 $?
grep -qx "  virtio-blk" list.out && grep -qx "  virtio-rnd  (not supported by hv yet)" list.out ||
  { echo "FAIL -s help: $(cat list.out)" >&2; failures=$((failures + 1)); }
"$broker" bhyve >/dev/null 2>&1
expect "no arguments" 1 $?
exit $((failures > 0))
