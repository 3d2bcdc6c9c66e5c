#!/usr/bin/env bash
# Boots Debian's kernel through hv with 1 and 2 vCPUs, a guest panic, a COM port
# on a Unix socket, virtio-blk disks, virtio-net in user mode and on a tap, and
# the OmniOS guide's bhyve command line through `hvbroker bhyve`
# (tests/linux/scenarios.sh). Needs a usable /dev/kvm:
# tools/kvmhost provides a nested KVM host where the hardware has none (as here),
# or runs directly where it has VT-x/AMD-V.
set -euo pipefail
if [[ ! -e /dev/kvm ]]; then
  echo "SKIPPED: linux_boot_test needs /dev/kvm, which this host does not have" >&2
  exit 0
fi
export HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
here=$(dirname "$(readlink -f "$0")")
# Runfiles are symlinks: follow them to the checkout and the build outputs.
workspace=$(dirname "$(dirname "$here")")
broker=$(readlink -f "${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-hv}/broker/hvbroker")
"$workspace/tools/guest-images" --quiet
cache=${HV_CACHE:-$HOME/.cache/hv}
log=$(mktemp /tmp/linux_boot_test.XXXXXX)
trap 'rm -f "$log"' EXIT
run() {
  "$workspace/tools/kvmhost" --smp 2 --mem 3G --timeout 1800 -- \
    "$here/scenarios.sh" "$broker" "$cache/vmlinuz" "$cache/guest-initramfs.cpio.gz" "$@" |
    tee "$log"
}
# kvmhost exits 125 when the nested host itself failed (its kernel crashed or
# locked up under QEMU's emulation of SVM, which happens now and then) rather
# than the scenarios: the scenarios that had not passed yet run again, loudly,
# up to twice. A scenario that failed is never retried: the test fails.
scenarios=("$@")
((${#scenarios[@]})) ||
  read -r -a scenarios <<<"$(sed -n 's/^((${#SCENARIOS\[@\]})) || SCENARIOS=(\(.*\))$/\1/p' "$here/scenarios.sh")"
((${#scenarios[@]})) || { echo "linux_boot_test: no scenario list in scenarios.sh" >&2; exit 1; }
status=0 failed=0
for attempt in 1 2 3; do
  status=0
  set +e
  run "${scenarios[@]}"
  status=${PIPESTATUS[0]}
  set -e
  ((status == 125)) || break
  grep -q '^FAIL ' "$log" && { failed=1; break; }
  remaining=()
  for s in "${scenarios[@]}"; do
    grep -q "^PASS $s:" "$log" || remaining+=("$s")
  done
  scenarios=("${remaining[@]}")
  ((${#scenarios[@]})) || { status=0; break; }
  ((attempt < 3)) &&
    echo "linux_boot_test: the nested KVM host failed (not a scenario); running the scenarios that had not passed again (run $((attempt + 1)) of 3): ${scenarios[*]}" >&2
done
((failed)) && status=1
exit "$status"
