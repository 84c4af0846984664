#!/usr/bin/env bash
# Builds examples/sample/balena-sample.img: a 16 MiB disk laid out like balenaOS
# (MBR: 1 boot FAT, 2 rootA, 3 rootB, 4 extended, 5 state, 6 data), small enough to commit.
# Needs sfdisk (fdisk), mkfs.vfat (dosfstools) and mkfs.ext4 (e2fsprogs); no root, no loop devices.
set -euo pipefail
out=${1:-examples/sample/balena-sample.img}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
MiB=1048576
truncate -s 16M "$out.tmp"
sfdisk --quiet "$out.tmp" <<'TABLE'
label: dos
start=2048, size=8192, type=c, bootable
start=10240, size=4096, type=83
start=14336, size=4096, type=83
start=18432, type=5
start=20480, size=2048, type=83
start=24576, type=83
TABLE
put() { # put <partition image> <start sector>
  dd if="$1" of="$out.tmp" bs=512 seek="$2" conv=notrunc status=none
}
mkfs_ext4() { # mkfs_ext4 <label> <sectors>
  truncate -s $(($2 * 512)) "$work/$1.img"
  mkfs.ext4 -q -F -b 1024 -L "$1" -E root_owner=0:0 -O ^has_journal -T small -U clear -E hash_seed=00000000-0000-0000-0000-000000000000 "$work/$1.img"
}
truncate -s $((8192 * 512)) "$work/boot.img"
mkfs.vfat -n RESIN-BOOT -i 12345678 "$work/boot.img" >/dev/null
put "$work/boot.img" 2048
mkfs_ext4 resin-rootA 4096 && put "$work/resin-rootA.img" 10240
mkfs_ext4 resin-rootB 4096 && put "$work/resin-rootB.img" 14336
mkfs_ext4 resin-state 2048 && put "$work/resin-state.img" 20480
mkfs_ext4 resin-data $((32768 - 24576)) && put "$work/resin-data.img" 24576
mv "$out.tmp" "$out"
echo "wrote $out"
