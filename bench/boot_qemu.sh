#!/usr/bin/env bash
# Reference boot times of QEMU/KVM with the Debian kernel + hv's guest initramfs.
set -euo pipefail

usage() {
  cat <<'EOF2'
Usage: bench/boot_qemu.sh [--runs N] [--machines "pc microvm"] [--vcpus "1 2"] [--mem SIZE]
                          [--append ARGS] [--l1-smp N]

Boots qemu-system-x86_64 -enable-kvm with ${HV_CACHE:-~/.cache/hv}/vmlinuz (Debian 6.1) and
guest-initramfs.cpio.gz (tools/guest-images), kernel command line
"console=ttyS0 quiet panic=-1 reboot=t hv.test=smoke" (+ --append), serial on stdout,
and prints, per run, the wall time from starting QEMU to the console line HV-GUEST-READY
and to QEMU's exit after the guest powered off, then the medians.

Needs a usable /dev/kvm: on this machine's KVM-PVM it re-runs itself inside
tools/kvmhost --smp N (--l1-smp, default 2), the nested KVM host. Timings inside the nested host
are only comparable with other measurements taken inside it (everything is emulated by TCG),
and are noisy when the machine is busy.

Defaults: --runs 3, --machines "pc microvm", --vcpus "1 2", --mem 512M.
EOF2
}

RUNS=3 MACHINES="pc microvm" VCPUS="1 2" MEM=512M APPEND_EXTRA="" L1_SMP=2
ARGS=("$@")
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --machines) MACHINES=$2; shift 2 ;;
    --vcpus) VCPUS=$2; shift 2 ;;
    --mem) MEM=$2; shift 2 ;;
    --append) APPEND_EXTRA=$2; shift 2 ;;
    --l1-smp) L1_SMP=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "boot_qemu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${HV_KVMHOST:-}" ] && { [ -d /sys/module/kvm_pvm ] || ! grep -qwE 'vmx|svm' /proc/cpuinfo; }; then
  exec "$ROOT/tools/kvmhost" --smp "$L1_SMP" --timeout 3600 -- "$ROOT/bench/boot_qemu.sh" "${ARGS[@]}"
fi

CACHE=${HV_CACHE:-$HOME/.cache/hv}
KERNEL=$CACHE/vmlinuz INITRD=$CACHE/guest-initramfs.cpio.gz
if [ ! -f "$KERNEL" ] || [ ! -f "$INITRD" ]; then
  if [ "${HV_KVMHOST:-}" = nested ]; then echo "boot_qemu.sh: run tools/guest-images first" >&2; exit 1; fi
  "$ROOT/tools/guest-images" --quiet
fi
APPEND="console=ttyS0 quiet panic=-1 reboot=t hv.test=smoke${APPEND_EXTRA:+ $APPEND_EXTRA}"

ms() {  # EPOCHREALTIME difference in ms
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}'), kernel $(cat "$CACHE/kernel-package" 2>/dev/null | awk '{print $3}'), host: ${HV_KVMHOST:-direct} ($(nproc) CPUs), -m $MEM"
echo "# append: $APPEND"
printf '%-8s %5s %4s %10s %10s %7s %s\n' machine vcpus run ready_ms exit_ms result guest
declare -A READY=() EXIT=()
for m in $MACHINES; do
  for v in $VCPUS; do
    for r in $(seq 1 "$RUNS"); do
      log=$(mktemp)
      ready="" result="-" guest=""
      start=$EPOCHREALTIME
      while IFS= read -r line; do
        now=$EPOCHREALTIME
        line=${line%$'\r'}
        case "$line" in
          *HV-GUEST-READY*) [ -n "$ready" ] || ready=$(ms "$start" "$now") ;;
          *HV-GUEST-RESULT=*) result=${line##*HV-GUEST-RESULT=} ;;
          nproc=*) guest="$guest $line" ;;
        esac
        echo "$line" >>"$log"
      done < <(timeout 600 qemu-system-x86_64 -enable-kvm -M "$m" -cpu host -smp "$v" -m "$MEM" \
                 -nodefaults -no-user-config -display none -no-reboot -serial stdio \
                 -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" </dev/null 2>&1)
      end=$EPOCHREALTIME
      total=$(ms "$start" "$end")
      printf '%-8s %5s %4s %10s %10s %7s %s\n' "$m" "$v" "$r" "${ready:--}" "$total" "$result" "${guest# }"
      if [ "$result" = 0 ]; then
        READY[$m/$v]+=" $ready"; EXIT[$m/$v]+=" $total"
      else
        echo "# $m/$v run $r failed; its output:" && sed 's/^/#   /' "$log" | tail -n 20
      fi
      rm -f "$log"
    done
  done
done
echo "# medians over successful runs (ms from QEMU start)"
printf '%-8s %5s %10s %10s\n' machine vcpus ready_ms exit_ms
for m in $MACHINES; do
  for v in $VCPUS; do
    printf '%-8s %5s %10s %10s\n' "$m" "$v" "$(echo "${READY[$m/$v]:-}" | median)" "$(echo "${EXIT[$m/$v]:-}" | median)"
  done
done
