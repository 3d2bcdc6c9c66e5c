#!/usr/bin/env bash
# An AHCI disk inside a Linux guest: hv's ahci-hd beside QEMU's ich9-ahci with an
# ide-hd on the same disk file in the same host, and the same workload on the
# host directly (the ceiling): the rows of bench/blk.sh, which runs it.
#   bench/ahci.sh [--seconds S] [--runs N]
exec "$(dirname "${BASH_SOURCE[0]}")/blk.sh" --ahci "$@"
