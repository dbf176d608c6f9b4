#!/usr/bin/env bash
# FUSE mount speed, in one run, as ratios: the SealFS mount vs a
# passthrough FUSE file system (bindfs, single- and multi-threaded) over the
# local disk vs the local disk itself.
#
#   bench/fuse.sh [--size-mib 1024] [--files 50000] [--servers 3] [--keep]
#
# Phases: sequential 1 MiB writes of one file (dd, fdatasync at the end),
# sequential 1 MiB reads of it after dropping the page cache, then create /
# stat / delete of N empty files (one process, the system's python3).
#
# Storage: everything (the local reference, bindfs's backing directory, the
# SealFS servers' meta and data dirs) lives on one journaled ext4 loop
# image, so the three see the same disk. SealFS runs `sealfs up` with its
# default --sync fsync (acknowledged = in the server's page cache, durable
# within a second or at fsync, as the local file system's own write-back),
# 3 servers, 1 MiB chunks; the daemon reaches them over shared-memory rings
# (SEALFS_TRANSPORT=auto).
# Needs root, bindfs and fuse3 (apt). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=1024 files=50000 servers=3 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --servers) servers="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
command -v bindfs >/dev/null || { echo "bindfs is not installed (apt-get install bindfs)"; exit 2; }
py=/usr/bin/python3; [ -x "$py" ] || py=python3

if [ -z "${SEALFS_BIN:-}" ]; then
  cargo build --release -q --bin sealfs
fi
sealfs="${SEALFS_BIN:-$PWD/target/release/sealfs}"
work="$(mktemp -d /tmp/sealfs-fusebench-XXXX)"
img="$work/ext4.img"; disk="$work/disk"
up_pid=""
cleanup() {
  set +e
  for m in "$work/m-sealfs" "$work/m-bindfs" "$work/m-bindfs-mt"; do
    mountpoint -q "$m" && { "$sealfs" umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
  done
  [ -n "$up_pid" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
  mountpoint -q "$disk" && umount "$disk"
  [ "$keep" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

truncate -s $(( size_mib * 4 + 8192 ))M "$img"
mkfs.ext4 -q -F "$img"
mkdir -p "$disk"
mount -o loop "$img" "$disk"
mkdir -p "$disk/local" "$disk/bindsrc" "$disk/bindsrc-mt" "$disk/sealfs" "$work/m-sealfs" "$work/m-bindfs" "$work/m-bindfs-mt"

port=$(( 30000 + RANDOM % 20000 ))
"$sealfs" up --dir "$disk/sealfs" --servers "$servers" --port "$port" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 100); do "$sealfs" status --manager "127.0.0.1:$port" --expect "$servers" >/dev/null 2>&1 && break; sleep 0.2; done
"$sealfs" mount "$work/m-sealfs" --manager "127.0.0.1:$port" --background --log "$work/mount.log" >/dev/null
bindfs "$disk/bindsrc" "$work/m-bindfs"
bindfs --multithreaded "$disk/bindsrc-mt" "$work/m-bindfs-mt"

now() { date +%s.%N; }
rate() { "$py" -c "import sys; print(f'{float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.1f}')" "$@"; }

seq_phase() { # dir → "write_MiBps read_MiBps"
  local d="$1" t0 t1 w r
  sync
  t0=$(now); dd if=/dev/zero of="$d/big" bs=1M count="$size_mib" conv=fdatasync status=none; t1=$(now)
  w=$(rate "$size_mib" "$t0" "$t1")
  sync; echo 3 >/proc/sys/vm/drop_caches
  t0=$(now); dd if="$d/big" of=/dev/null bs=1M status=none; t1=$(now)
  r=$(rate "$size_mib" "$t0" "$t1")
  rm -f "$d/big"
  echo "$w $r"
}

meta_phase() { # dir → "create stat delete" (ops/s)
  "$py" - "$1" "$files" <<'PY'
import os, sys, time
d, n = os.path.join(sys.argv[1], "meta"), int(sys.argv[2])
os.mkdir(d)
names = [os.path.join(d, f"f{i:06d}") for i in range(n)]
t0 = time.perf_counter()
for p in names:
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
t1 = time.perf_counter()
for p in names:
    os.stat(p)
t2 = time.perf_counter()
for p in names:
    os.unlink(p)
t3 = time.perf_counter()
os.rmdir(d)
print(f"{n/(t1-t0):.0f} {n/(t2-t1):.0f} {n/(t3-t2):.0f}")
PY
}

declare -A W R C S D
for t in local bindfs bindfs-mt sealfs; do
  case $t in
    local) d="$disk/local" ;;
    *) d="$work/m-$t" ;;
  esac
  read -r W[$t] R[$t] < <(seq_phase "$d")
  sync; echo 3 >/proc/sys/vm/drop_caches
  read -r C[$t] S[$t] D[$t] < <(meta_phase "$d")
  echo "measured $t" >&2
done

ratio() { "$py" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
echo
echo "SealFS FUSE mount benchmark: $(date -u +%F), $(nproc) cores, ${size_mib} MiB file, $files files, $servers servers (sync fsync), ext4 (journaled loop image)"
echo
echo "| phase | local ext4j | bindfs | bindfs --multithreaded | sealfs mount | sealfs / bindfs | sealfs / bindfs-mt | sealfs / local |"
echo "|---|---|---|---|---|---|---|---|"
row() { # name assoc-array-name unit
  local -n a="$2"
  echo "| $1 ($3) | ${a[local]} | ${a[bindfs]} | ${a[bindfs-mt]} | ${a[sealfs]} | $(ratio "${a[sealfs]}" "${a[bindfs]}") | $(ratio "${a[sealfs]}" "${a[bindfs-mt]}") | $(ratio "${a[sealfs]}" "${a[local]}") |"
}
row "sequential write, 1 MiB" W "MiB/s"
row "sequential read, 1 MiB, cold" R "MiB/s"
row "create empty files" C "ops/s"
row "stat" S "ops/s"
row "delete" D "ops/s"
