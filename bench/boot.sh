#!/usr/bin/env bash
# Boot time of Debian's kernel + hv's guest initramfs on hv, beside QEMU/KVM
# (-M pc and -M microvm) booting the same images in the same host, with the ratio.
set -euo pipefail

usage() {
  cat <<'EOF2'
Usage: bench/boot.sh [--runs N] [--machines "hv pc microvm"] [--vcpus "1 2"] [--mem SIZE]
                     [--append ARGS] [--l1-smp N] [--tsv FILE]

Boots ${HV_CACHE:-~/.cache/hv}/vmlinuz (Debian 6.1) and guest-initramfs.cpio.gz
(tools/guest-images) with the kernel command line
"console=ttyS0 quiet panic=-1 reboot=t hv.test=smoke" (+ --append), serial on stdout, on
hv (hvbroker up, machine "hv"; build it first with bazel build //...) and on
qemu-system-x86_64 -enable-kvm -M pc / -M microvm, and prints, per run, the wall time from
starting the VMM to the console line HV-GUEST-READY and to its exit after the guest powered
off, then the medians and the ratio of hv to QEMU -M pc.

Needs a usable /dev/kvm: on this machine's KVM-PVM it re-runs itself inside
tools/kvmhost --smp N (--l1-smp, default 2), the nested KVM host. Timings inside the nested host
are only comparable with other measurements taken inside it (everything is emulated by TCG),
and are noisy when the machine is busy.

Runs alternate between the machines, after one untimed start of each VMM (so that
no machine alone pays for reading its executables into the page cache).
--tsv also writes "boot ready ms Nvcpu<TAB>hv<TAB>pc" and "boot exit ms Nvcpu" lines.

Defaults: --runs 3, --machines "hv pc microvm", --vcpus "1 2", --mem 512M.
EOF2
}

RUNS=3 MACHINES="hv pc microvm" VCPUS="1 2" MEM=512M APPEND_EXTRA="" L1_SMP=2 TSV=""
ARGS=("$@")
while (($#)); do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --machines) MACHINES=$2; shift 2 ;;
    --vcpus) VCPUS=$2; shift 2 ;;
    --mem) MEM=$2; shift 2 ;;
    --append) APPEND_EXTRA=$2; shift 2 ;;
    --l1-smp) L1_SMP=$2; shift 2 ;;
    --tsv) TSV=$2; shift 2 ;;
    --emit-tsv) TSV=-; shift ;;  # internal: TSV lines on stdout, prefixed "tsv<TAB>"
    -h|--help) usage; exit 0 ;;
    *) echo "boot.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${HV_KVMHOST:-}" ] && { [ -d /sys/module/kvm_pvm ] || ! grep -qwE 'vmx|svm' /proc/cpuinfo; }; then
  "$ROOT/tools/guest-images" --quiet
  # The nested host's files are not the host's: TSV lines come back on stdout.
  inner=()
  for ((i = 0; i < ${#ARGS[@]}; i++)); do
    if [ "${ARGS[i]}" = --tsv ]; then i=$((i + 1)); else inner+=("${ARGS[i]}"); fi
  done
  out=$(mktemp)
  set +e
  "$ROOT/tools/kvmhost" --smp "$L1_SMP" --mem 3G --timeout 3600 -- "$ROOT/bench/boot.sh" "${inner[@]}" --emit-tsv |
    tee "$out" | grep -v $'^tsv\t'
  rc=${PIPESTATUS[0]}
  [ -n "$TSV" ] && grep $'^tsv\t' "$out" | cut -f2- >"$TSV"
  rm -f "$out"
  exit "$rc"
fi

CACHE=${HV_CACHE:-$HOME/.cache/hv}
KERNEL=$CACHE/vmlinuz INITRD=$CACHE/guest-initramfs.cpio.gz
if [ ! -f "$KERNEL" ] || [ ! -f "$INITRD" ]; then
  if [ "${HV_KVMHOST:-}" = nested ]; then echo "boot.sh: run tools/guest-images first" >&2; exit 1; fi
  "$ROOT/tools/guest-images" --quiet
fi
APPEND="console=ttyS0 quiet panic=-1 reboot=t hv.test=smoke${APPEND_EXTRA:+ $APPEND_EXTRA}"

BROKER=$ROOT/.bazel/bin/broker/hvbroker
SCRATCH=$(mktemp -d)
export HV_RUNTIME_DIR=$SCRATCH/run
# The same VM for hv: bhyve's -c N -m MEM -s 0,hostbridge -s 31,lpc -l com1,stdio.
hv_vm() {  # vcpus -> path of a VM file
  cat >"$SCRATCH/boot$1.capnp" <<VM
using import "/hv/vm.capnp".Vm;
const vm :Vm = (name = "bootbench", cpus = $1, memory = "$MEM",
  boot = (kernel = "$KERNEL", initrd = "$INITRD", cmdline = "$APPEND"),
  devices = [(slot = 0, emulation = "hostbridge"), (slot = 31, emulation = "lpc")],
  lpc = (com1 = (stdio = void)));
VM
  echo "$SCRATCH/boot$1.capnp"
}
vmm() {  # machine vcpus: runs the VM, its console on stdout
  if [ "$1" = hv ]; then
    timeout 600 "$BROKER" up "$(hv_vm "$2")" </dev/null 2>"$SCRATCH/hv.err"
    cat "$SCRATCH/hv.err"  # hvbroker's own messages: why a run failed
  else
    timeout 600 qemu-system-x86_64 -enable-kvm -M "$1" -cpu host -smp "$2" -m "$MEM" \
      -nodefaults -no-user-config -display none -no-reboot -serial stdio \
      -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" </dev/null 2>&1
  fi
}

ms() {  # EPOCHREALTIME difference in ms
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}'), kernel $(cat "$CACHE/kernel-package" 2>/dev/null | awk '{print $3}'), host: ${HV_KVMHOST:-direct} ($(nproc) CPUs), -m $MEM"
echo "# append: $APPEND"
printf '%-8s %5s %4s %10s %10s %7s %s\n' machine vcpus run ready_ms exit_ms result guest
declare -A READY=() EXIT=()
"$BROKER" --help >/dev/null 2>&1 || true
for exe in hvcore/hvcore devproc/lpc/hv-lpc; do "$ROOT/.bazel/bin/$exe" --help >/dev/null 2>&1 || true; done
qemu-system-x86_64 --version >/dev/null
for r in $(seq 1 "$RUNS"); do
  for v in $VCPUS; do
    for m in $MACHINES; do
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
      done < <(vmm "$m" "$v")
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
echo "# medians over successful runs (ms from the VMM's start); ratio = hv / QEMU -M pc"
printf '%-8s %5s %10s %10s %12s %12s\n' machine vcpus ready_ms exit_ms ready_ratio exit_ratio
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
for m in $MACHINES; do
  for v in $VCPUS; do
    r=$(echo "${READY[$m/$v]:-}" | median) e=$(echo "${EXIT[$m/$v]:-}" | median)
    rr=- er=-
    if [ "$m" = hv ]; then
      rr=$(ratio "$r" "$(echo "${READY[pc/$v]:-}" | median)")
      er=$(ratio "$e" "$(echo "${EXIT[pc/$v]:-}" | median)")
    fi
    printf '%-8s %5s %10s %10s %12s %12s\n' "$m" "$v" "$r" "$e" "$rr" "$er"
  done
done
if [ -n "$TSV" ]; then
  for v in $VCPUS; do
    printf 'boot ready ms %svcpu\t%s\t%s\n' "$v" "$(echo "${READY[hv/$v]:-}" | median)" "$(echo "${READY[pc/$v]:-}" | median)"
    printf 'boot exit ms %svcpu\t%s\t%s\n' "$v" "$(echo "${EXIT[hv/$v]:-}" | median)" "$(echo "${EXIT[pc/$v]:-}" | median)"
  done | if [ "$TSV" = - ]; then sed $'s/^/tsv\t/'; else cat >"$TSV"; fi
fi
rm -rf "$SCRATCH"
