#!/usr/bin/env bash
# The IO500 comparison: the same `sealfs bench io500` configuration, and the
# same fio jobs, against every target in ONE run, so the ratios between
# targets are meaningful on a shared machine.
#
#   bench/compare.sh [--stonewall S] [--procs N] [--quick] [--rounds R]
#                    [--no-fsync] [--fio-size SIZE] [--fio-runtime S]
#                    [--easy-max SIZE] [--hard-max SEGMENTS] [--out-dir DIR]
#                    [--keep]
#
# Targets (in this order):
#   ext4j          a directory on a journaled ext4 loop image (the local disk)
#   tmpfs          a directory in /dev/shm
#   sealfs-preload LD_PRELOAD=libsealfs.so, prefix /sealfs, against a local
#                  cluster (`sealfs up`, 1 manager + 3 servers, state on
#                  the ext4 image), --sync none, SEALFS_TRANSPORT=shm
#                  (shared-memory rings to the same-host servers)
#   sealfs-preload-tcp  the same with SEALFS_TRANSPORT=tcp (loopback TCP)
#   sealfs-fuse    the same cluster through `sealfs mount` (rings)
#   sealfs-preload-fsync, sealfs-fuse-fsync
#                  preload (rings) and FUSE with a cluster started with the
#                  default --sync fsync (skipped with --no-fsync)
#   bindfs         passthrough FUSE (single-threaded) over the ext4 image
#   glusterfs      GlusterFS, 3 bricks on the ext4 image, glusterd and the
#                  bricks and the FUSE client in a private network namespace
#                  with only loopback (see ../shared/PEERS.md)
#
# On each target: `sealfs bench io500 --procs N --stonewall S` (verified
# reads), then fio (psync; 1 MiB sequential write, 1 MiB sequential read,
# 4 KiB random read, 4 KiB random write; N jobs, time-based, buffered I/O,
# no fsync), fio itself preloaded for the SealFS preload rows. The load
# average at the start of each target is recorded. With --rounds R the
# whole list runs R times, every other round in reverse order (so a load
# that drifts during the run favours no target), and each value is the
# median over the rounds.
#
# Writes <out-dir>/io500-compare.{md,tsv,png} (default bench/results; with
# --rounds > 1 also io500-compare-rounds.tsv, every round's values) and
# prints the Markdown. The plot is drawn by bench/plot (its own workspace,
# built into target/plot). Needs root (loop mount, FUSE, netns, apt).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
cmdline="bench/compare.sh${*:+ $*}"

stonewall="" procs=2 quick=0 fsync_rows=1 keep=0 rounds=1
fio_size="" fio_rt="" easy_max=2G hard_max=20000
out_dir="$repo/bench/results"
while [ $# -gt 0 ]; do
  case "$1" in
    --stonewall) stonewall="${2%s}"; shift 2 ;;
    --procs) procs="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --rounds) rounds="$2"; shift 2 ;;
    --no-fsync) fsync_rows=0; shift ;;
    --fio-size) fio_size="$2"; shift 2 ;;
    --fio-runtime) fio_rt="${2%s}"; shift 2 ;;
    --easy-max) easy_max="$2"; shift 2 ;;
    --hard-max) hard_max="$2"; shift 2 ;;
    --out-dir) out_dir="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then
  : "${stonewall:=5}" "${fio_size:=128M}" "${fio_rt:=5}"
else
  : "${stonewall:=30}" "${fio_size:=512M}" "${fio_rt:=20}"
fi
case "$stonewall$procs$fio_rt$rounds" in *[!0-9]*) echo "--stonewall, --procs, --fio-runtime, --rounds take whole numbers" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "needs root (loop mount, FUSE, network namespaces)" >&2; exit 2; }
py=/usr/bin/python3; [ -x "$py" ] || py=python3
log() { echo "[compare $(date +%T)] $*" >&2; }

# ---- 1. what the run needs --------------------------------------------------
need=()
command -v bindfs >/dev/null || need+=(bindfs)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v glusterd >/dev/null || need+=(glusterfs-server)
command -v mount.glusterfs >/dev/null || [ -x /sbin/mount.glusterfs ] || need+=(glusterfs-client)
command -v fio >/dev/null || need+=(fio)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -q >/dev/null || true
  timeout 900 apt-get install -y -q "${need[@]}" >/dev/null
fi

log "building sealfs and libsealfs.so (release)"
timeout 1800 cargo build --release -q -p sealfs -p sealfs-shim
log "building the plotter (bench/plot, its own workspace)"
timeout 1800 cargo build --release -q --manifest-path bench/plot/Cargo.toml --target-dir "$repo/target/plot"
sealfs="$repo/target/release/sealfs"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit+uncommitted changes"
lib="$repo/target/release/libsealfs.so"
plot="$repo/target/plot/release/sealfs-compare-plot"
[ ! -e /sealfs ] || { echo "/sealfs exists on the local file system; the preload rows need the prefix to be virtual" >&2; exit 2; }

# ---- 2. scratch, cleanup ---------------------------------------------------
work="$(mktemp -d /tmp/sealfs-compare-XXXX)"
res="$work/res"; mkdir -p "$res"
img="$work/ext4.img"; disk="$work/disk"
shm="/dev/shm/sealfs-compare-$$"
ns="sealfs-cmp-$$" vol="" round=1
up_pid="" gl_socks=()

stop_cluster() {
  [ -n "$up_pid" ] || return 0
  kill -INT "$up_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$up_pid" 2>/dev/null || true # its own process group (setsid)
  wait "$up_pid" 2>/dev/null || true
  up_pid=""
}
unmount() { # mountpoint
  mountpoint -q "$1" || return 0
  fusermount3 -u "$1" 2>/dev/null || umount "$1" 2>/dev/null || umount -l "$1"
}
stop_gluster() {
  [ -e "/run/netns/$ns" ] || return 0
  unmount "$work/m-gluster"
  [ -z "$vol" ] || timeout 60 nsenter --net="/run/netns/$ns" gluster --mode=script volume stop "$vol" force >/dev/null 2>&1 || true
  local pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  for _ in $(seq 25); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.2; done
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -f "${gl_socks[@]}" 2>/dev/null || true
  [ -z "$vol" ] || rm -rf "/var/run/gluster/vols/$vol"
  gl_socks=() vol=""
  # its logs land in /var/log/glusterfs under names made from our paths
  local slug; slug="$(echo "${work#/}" | tr / -)"
  mkdir -p "$work/gluster-logs"
  mv /var/log/glusterfs/bricks/*"$slug"* /var/log/glusterfs/*"$slug"* "$work/gluster-logs/" 2>/dev/null || true
}
cleanup() {
  set +e
  for m in "$work/m-sealfs" "$work/m-bindfs"; do unmount "$m"; done
  stop_gluster
  stop_cluster
  mountpoint -q "$disk" && { umount "$disk" || umount -l "$disk"; }
  rm -rf "$shm"
  if [ "$keep" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a base port with base..base+3 free
  local p
  for _ in $(seq 50); do
    p=$(( 30000 + RANDOM % 20000 ))
    ss -Hltn | awk '{print $4}' | grep -Eq ":($p|$((p+1))|$((p+2))|$((p+3)))\$" || { echo "$p"; return; }
  done
  echo "no free port" >&2; return 1
}

log "ext4 loop image (journaled) in $work"
truncate -s 24G "$img"
mkfs.ext4 -q -F -O has_journal "$img"
mkdir -p "$disk" "$work/m-sealfs" "$work/m-bindfs" "$work/m-gluster"
mount -o loop "$img" "$disk"
mkdir -p "$disk/local" "$shm"

# ---- 3. one target -----------------------------------------------------------
order=()
io500_timeout=$(( 40 * stonewall + 300 ))
fio_timeout=$(( fio_rt + 300 ))

fio_one() { # label key dir rw bs env... → appends "key value unit" or "key FAIL reason"
  local label="$1" key="$2" dir="$3" rw="$4" bs="$5"; shift 5
  local out="$res/$label.r$round.$key.json" err="$res/$label.r$round.$key.err" rc=0
  timeout "$fio_timeout" env "$@" fio --name=cmp --directory="$dir" --ioengine=psync --rw="$rw" --bs="$bs" \
    --size="$fio_size" --numjobs="$procs" --runtime="$fio_rt" --time_based --fallocate=none \
    --group_reporting --output-format=json --output="$out" >/dev/null 2>"$err" || rc=$?
  "$py" - "$out" "$err" "$rc" "$key" "$rw" >>"$res/$label.r$round.tsv" <<'PY'
import json, sys
out, err, rc, key, rw = sys.argv[1:]
def fail(why):
    why = " ".join(why.split())[:160] or "no output"
    print(f"{key}\tFAIL\t{why}")
    sys.exit(0)
try:
    errtext = open(err, errors="replace").read().strip()
except OSError:
    errtext = ""
last = errtext.splitlines()[-1] if errtext else ""
if rc != "0":
    fail(("timed out" if rc == "124" else f"exit {rc}") + (f": {last}" if last else ""))
try:
    text = open(out, errors="replace").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]
except Exception as e:
    fail(f"unreadable fio output ({e}) {last}")
if j.get("error"):
    fail(f"fio job error {j['error']} {last}")
side = j["write" if "write" in rw else "read"]
if "rand" in rw:
    print(f"{key}\t{side['iops'] / 1000}\tkIOPS")
else:
    print(f"{key}\t{side['bw_bytes'] / 2**20}\tMiB/s")
PY
}

run_target() { # label dir env...   (env: VAR=value pairs for the preload rows)
  local label="$1" dir="$2"; shift 2
  [ "$round" != 1 ] || order+=("$label")
  sync; echo 3 >/proc/sys/vm/drop_caches
  local load; load="$(cut -d' ' -f1-3 /proc/loadavg)"
  local base="$res/$label.r$round"
  log "round $round/$rounds: $label: io500 in $dir (load $load)"
  echo "$load" >"$base.load"
  local rc=0
  timeout "$io500_timeout" env "$@" "$sealfs" bench io500 --target "$dir" --procs "$procs" \
    --stonewall "${stonewall}s" --easy-max "$easy_max" --hard-max "$hard_max" \
    --out "$base.io500.tsv" >"$base.io500.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ] && [ -s "$base.io500.tsv" ]; then
    cp "$base.io500.tsv" "$base.tsv"
  else
    local why; why="$(grep -v '^\s*$' "$base.io500.log" | tail -n 2 | tr '\n\t' '  ' | cut -c1-200)"
    [ "$rc" = 124 ] && why="timed out after ${io500_timeout}s; $why"
    echo "io500	FAIL	exit $rc: $why" >"$base.tsv"
    log "$label: io500 FAILED: $why"
  fi
  log "$label: fio"
  local fdir="$dir/fio-$label"
  env "$@" mkdir -p "$fdir" || true
  fio_one "$label" fio-write-1m "$fdir" write 1M "$@"
  fio_one "$label" fio-read-1m "$fdir" read 1M "$@"
  fio_one "$label" fio-randread-4k "$fdir" randread 4k "$@"
  fio_one "$label" fio-randwrite-4k "$fdir" randwrite 4k "$@"
  env "$@" rm -rf "$fdir" || true
  grep -h FAIL "$base.tsv" | sed "s/^/[compare] $label: /" >&2 || true
}

# ---- 4. the targets --------------------------------------------------------
group_ext4j() { run_target ext4j "$disk/local"; }
group_tmpfs() { run_target tmpfs "$shm"; }

sealfs_rows() { # sync policy, label suffix
  local sync="$1" sfx="$2" port state="$disk/sealfs-$1-r$round"
  port="$(free_port)"
  mkdir -p "$state"
  log "starting sealfs up (3 servers, --sync $sync, state on the ext4 image, manager 127.0.0.1:$port)"
  setsid "$sealfs" up --dir "$state" --servers 3 --port "$port" --sync "$sync" >"$work/up-$sync-r$round.log" 2>&1 &
  up_pid=$!
  local ok=0
  for _ in $(seq 150); do
    "$sealfs" status --manager "127.0.0.1:$port" --expect 3 >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
  done
  [ "$ok" = 1 ] || { cat "$work/up-$sync-r$round.log" >&2; echo "the cluster did not come up" >&2; exit 1; }
  # every server's ring socket (abstract, "@sealfs-ring:<addr>") is bound
  local rings=0
  for _ in $(seq 50); do
    rings=$(grep -cE "@sealfs-ring:127\.0\.0\.1:($((port+1))|$((port+2))|$((port+3)))\$" /proc/net/unix || true)
    [ "$rings" -ge 3 ] && break
    sleep 0.2
  done
  log "ring sockets bound: $rings of 3 servers"
  echo "$rings" >"$res/rings-$sync-r$round"
  local pre=(LD_PRELOAD="$lib" SEALFS_MANAGER="127.0.0.1:$port" SEALFS_MOUNT=/sealfs)
  run_target "sealfs-preload$sfx" "/sealfs/bench" "${pre[@]}" SEALFS_TRANSPORT=shm
  [ -n "$sfx" ] || run_target "sealfs-preload-tcp$sfx" "/sealfs/bench-tcp" "${pre[@]}" SEALFS_TRANSPORT=tcp
  # the run really went to SealFS: its directory exists there, not locally
  [ ! -e /sealfs ] || { echo "/sealfs appeared on the local file system: the preload row did not go to SealFS" >&2; exit 1; }
  SEALFS_MANAGER="127.0.0.1:$port" timeout 30 "$sealfs" stat /bench >/dev/null \
    || { echo "/bench is missing in SealFS after the preload row" >&2; exit 1; }
  SEALFS_TRANSPORT=shm timeout 30 "$sealfs" mount "$work/m-sealfs" --manager "127.0.0.1:$port" --background --log "$work/mount-$sync-r$round.log" >/dev/null
  run_target "sealfs-fuse$sfx" "$work/m-sealfs/bench-fuse"
  timeout 30 "$sealfs" umount "$work/m-sealfs" 2>/dev/null || unmount "$work/m-sealfs"
  stop_cluster
  rm -rf "$state"
}
group_sealfs_none() { sealfs_rows none ""; }
group_sealfs_fsync() { sealfs_rows fsync "-fsync"; }

group_bindfs() {
  mkdir -p "$disk/bindsrc"
  bindfs "$disk/bindsrc" "$work/m-bindfs"
  run_target bindfs "$work/m-bindfs"
  unmount "$work/m-bindfs"
}

group_gluster() {
  local wd="$work/glusterd-r$round" bricks="$disk/gl-r$round" host p s
  vol="cmp$$r$round"
  log "GlusterFS: glusterd in network namespace $ns (loopback only), volume $vol, 3 bricks"
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  mkdir -p "$wd/hooks" "$bricks/b1" "$bricks/b2" "$bricks/b3"
  cp -r /var/lib/glusterd/groups "$wd/" 2>/dev/null || true
  sed -e "s#/var/lib/glusterd#$wd#" \
      -e '/transport-type socket/a\    option transport.socket.bind-address 127.0.0.1' \
      /etc/glusterfs/glusterd.vol >"$wd.vol"
  nsenter --net="/run/netns/$ns" glusterd -N -f "$wd.vol" -l "$wd.log" >/dev/null 2>&1 &
  for _ in $(seq 50); do gl gluster --mode=script volume list >/dev/null 2>&1 && break; sleep 0.2; done
  host="$(hostname)" # bricks must be named by the host name (PEERS.md)
  gl gluster --mode=script volume create "$vol" "$host:$bricks/b1" "$host:$bricks/b2" "$host:$bricks/b3" force >/dev/null
  gl gluster --mode=script volume start "$vol" >/dev/null
  for p in $(ip netns pids "$ns"); do
    s="$(tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | sed -n '/^-S$/{n;p}')" || true
    [ -z "$s" ] || gl_socks+=("$s")
  done
  gl mount -t glusterfs "127.0.0.1:/$vol" "$work/m-gluster"
  run_target glusterfs "$work/m-gluster/bench"
  stop_gluster
  rm -rf "$bricks"
}
gl() { timeout 120 nsenter --net="/run/netns/$ns" "$@"; }

groups=(group_ext4j group_tmpfs group_sealfs_none)
[ "$fsync_rows" = 1 ] && groups+=(group_sealfs_fsync)
groups+=(group_bindfs group_gluster)
for round in $(seq "$rounds"); do
  list=("${groups[@]}")
  if [ $(( round % 2 )) = 0 ]; then # every other round backwards
    list=(); for (( i=${#groups[@]}-1; i>=0; i-- )); do list+=("${groups[$i]}"); done
  fi
  for g in "${list[@]}"; do "$g"; done
done

# ---- 5. the report ---------------------------------------------------------
mkdir -p "$out_dir"
meta="$(printf 'cmdline=%s\ndate=%s\ncores=%s\nprocs=%s\nstonewall=%s\nrounds=%s\nfio_size=%s\nfio_runtime=%s\neasy_max=%s\nhard_max=%s\nkernel=%s\ncommit=%s\n' \
  "$cmdline" "$(date -u '+%F %H:%M UTC')" "$(nproc)" "$procs" "$stonewall" "$rounds" "$fio_size" "$fio_rt" "$easy_max" "$hard_max" \
  "$(uname -r)" "$commit")"
"$py" - "$res" "$out_dir" "$meta" "${order[@]}" <<'PY'
import os, statistics, sys
res, out_dir, meta = sys.argv[1], sys.argv[2], dict(l.split("=", 1) for l in sys.argv[3].splitlines())
order = sys.argv[4:]
PHASES = ["ior-easy-write", "mdtest-easy-write", "ior-hard-write", "mdtest-hard-write", "find",
          "ior-easy-read", "mdtest-easy-stat", "ior-hard-read", "mdtest-hard-stat",
          "mdtest-easy-delete", "mdtest-hard-read", "mdtest-hard-delete"]
SCORES = ["score-bandwidth", "score-iops", "score-total"]
FIO = ["fio-write-1m", "fio-read-1m", "fio-randread-4k", "fio-randwrite-4k"]
UNIT = {**{p: ("GiB/s" if p.startswith("ior") else "kIOPS") for p in PHASES},
        "score-bandwidth": "GiB/s", "score-iops": "kIOPS", "score-total": "-",
        "fio-write-1m": "MiB/s", "fio-read-1m": "MiB/s", "fio-randread-4k": "kIOPS", "fio-randwrite-4k": "kIOPS"}
DESC = {
    "ext4j": "directory on a journaled ext4 loop image (the local disk)",
    "tmpfs": "directory in /dev/shm",
    "sealfs-preload": "LD_PRELOAD=libsealfs.so, SEALFS_TRANSPORT=shm (shared-memory rings), local cluster of 1 manager + 3 servers, --sync none, state on the ext4 image",
    "sealfs-preload-tcp": "the same cluster, SEALFS_TRANSPORT=tcp (loopback TCP)",
    "sealfs-fuse": "`sealfs mount` of the same cluster (the daemon on rings)",
    "sealfs-preload-fsync": "LD_PRELOAD=libsealfs.so on rings, a cluster started with --sync fsync (the default)",
    "sealfs-fuse-fsync": "`sealfs mount` of the --sync fsync cluster",
    "bindfs": "bindfs 1.14 (FUSE passthrough, single-threaded) over the ext4 image",
    "glusterfs": "GlusterFS 3 bricks on the ext4 image, FUSE client, glusterd in a loopback-only netns",
}
rounds = int(meta["rounds"])
val, fail, load, raw = {}, {}, {}, []
for t in order:
    got, fail[t], loads = {}, {}, []
    for r in range(1, rounds + 1):
        base = os.path.join(res, f"{t}.r{r}")
        with open(base + ".load") as f:
            loads.append(f.read().strip())
        with open(base + ".tsv") as f:
            for line in f:
                k, v, u = (line.rstrip("\n").split("\t") + ["", ""])[:3]
                raw.append((t, r, k, v, loads[-1]))
                if v == "FAIL":
                    fail[t].setdefault(k, f"round {r}: {u}" if rounds > 1 else u)
                else:
                    got.setdefault(k, []).append(float(v))
    # the median over the rounds that measured it
    val[t] = {k: statistics.median(v) for k, v in got.items()}
    load[t] = loads[0] if rounds == 1 else " / ".join(l.split()[0] for l in loads)

def fmt(x):
    if x is None: return "—"
    if x >= 100: return f"{x:,.0f}".replace(",", " ")
    if x >= 10: return f"{x:.1f}"
    if x >= 1: return f"{x:.2f}"
    return f"{x:.3f}"

def cell(t, k):
    if k in val[t]: return fmt(val[t][k])
    why = fail[t].get(k) or fail[t].get("io500")
    return f"FAIL ({why})" if why else "—"

def ratio(t, k, base="ext4j"):
    a, b = val[t].get(k), val.get(base, {}).get(k)
    if a is None or not b: return "—"
    return f"{a / b:.2f}×" if a / b >= 0.01 else f"{a / b:.4f}×"

keys = PHASES + SCORES + FIO
L = []
L.append(f"# IO500 comparison, {meta['date']}")
L.append("")
cmd = meta["cmdline"]
L.append(f"`{cmd}`: {meta['cores']} cores, kernel {meta['kernel']}, built from commit {meta['commit']}; "
         + (f"median of {rounds} rounds (every other round in reverse target order); " if rounds > 1 else "")
         + f"{meta['procs']} worker processes, {meta['stonewall']} s stonewall per write phase, "
         f"ior-easy cap {meta['easy_max']}/process, ior-hard cap {meta['hard_max']} segments/process; "
         f"fio psync, {meta['procs']} jobs × {meta['fio_size']}, {meta['fio_runtime']} s per job, buffered, no fsync. "
         "Every target measured in this one run, one after the other (page cache dropped before each); "
         "the machine is shared with other engineers' builds, so the load average at the start of each target is shown.")
L.append("")
rings = sorted(f for f in os.listdir(res) if f.startswith("rings-"))
if rings:
    L.append("Ring sockets bound when the SealFS rows started (of 3 servers): " + ", ".join(
        f"{f[6:]}: {open(os.path.join(res, f)).read().strip()}" for f in rings) + ".")
    L.append("")
L.append("| target | what |")
L.append("|---|---|")
for t in order:
    L.append(f"| {t} | {DESC.get(t, t)} |")
L.append("")
L.append("## Values")
L.append("")
L.append("| phase | unit | " + " | ".join(order) + " |")
L.append("|---|---|" + "---|" * len(order))
L.append(("| load avg at start (1/5/15 min) | | " if rounds == 1 else "| load avg at start (1 min, each round) | | ") + " | ".join(load[t] for t in order) + " |")
for k in keys:
    L.append(f"| {k} | {UNIT[k]} | " + " | ".join(cell(t, k) for t in order) + " |")
L.append("")
L.append("## Ratios to ext4j (the local disk)")
L.append("")
L.append("| phase | " + " | ".join(order) + " |")
L.append("|---|" + "---|" * len(order))
for k in keys:
    L.append(f"| {k} | " + " | ".join(ratio(t, k) for t in order) + " |")
L.append("")

def goals(pre, fuse):
    rows = []
    if pre not in val: return rows
    md = [p for p in PHASES if p.startswith("mdtest")]
    for p in md:
        a = val[pre].get(p)
        for other, need in (("glusterfs", 10.0), (fuse, 3.0)):
            b = val.get(other, {}).get(p)
            if a is None or b is None:
                rows.append((f"{p}: {pre} ≥ {need:g}× {other}", "not measured", "—"))
            else:
                rows.append((f"{p}: {pre} ≥ {need:g}× {other}", f"{fmt(a)} vs {fmt(b)} kIOPS = {a / b:.2f}×", "yes" if a >= need * b else "**no**"))
    for p in ("ior-easy-write", "ior-easy-read"):
        a, b = val[pre].get(p), val.get("ext4j", {}).get(p)
        if a is None or b is None:
            rows.append((f"{p}: {pre} ≥ 80 % of ext4j", "not measured", "—"))
        else:
            rows.append((f"{p}: {pre} ≥ 80 % of ext4j", f"{fmt(a)} vs {fmt(b)} GiB/s = {100 * a / b:.0f} %", "yes" if a >= 0.8 * b else "**no**"))
    a, b = val[pre].get("score-iops"), val.get("ext4j", {}).get("score-iops")
    if a is None or b is None:
        rows.append((f"metadata score: {pre} ≥ ext4j", "not measured", "—"))
    else:
        rows.append((f"metadata score: {pre} ≥ ext4j", f"{fmt(a)} vs {fmt(b)} kIOPS = {a / b:.2f}×", "yes" if a >= b else "**no**"))
    return rows

L.append("## Goals (issue 7)")
L.append("")
L.append("| goal | measured | met |")
L.append("|---|---|---|")
for pre, fuse in (("sealfs-preload", "sealfs-fuse"), ("sealfs-preload-tcp", "sealfs-fuse"), ("sealfs-preload-fsync", "sealfs-fuse-fsync")):
    for g in goals(pre, fuse):
        L.append("| " + " | ".join(g) + " |")
L.append("")
L.append("Phase rates are total work over the slowest worker's time; scores: bandwidth = geometric mean of the four ior phases, "
         "metadata = geometric mean of the seven mdtest phases and find, total = √(bandwidth · metadata). "
         "Every read in the io500 phases is verified against the written pattern.")
md = "\n".join(L) + "\n"
with open(os.path.join(out_dir, "io500-compare.md"), "w") as f:
    f.write(md)
with open(os.path.join(out_dir, "io500-compare.tsv"), "w") as f:
    f.write("target\tkey\tvalue\tunit\tload\n")
    for t in order:
        for k in keys:
            v = val[t].get(k)
            f.write(f"{t}\t{k}\t{'FAIL' if v is None else repr(v)}\t{UNIT[k]}\t{load[t]}\n")
if rounds > 1:
    with open(os.path.join(out_dir, "io500-compare-rounds.tsv"), "w") as f:
        f.write("target\tround\tkey\tvalue\tload\n")
        for row in raw:
            f.write("\t".join(map(str, row)) + "\n")
print(md)
PY
"$plot" "$out_dir/io500-compare.tsv" "$out_dir/io500-compare.png" \
  "IO500 scores / ext4j's (log scale), $(date -u +%F): $cmdline"
log "wrote $out_dir/io500-compare.md, .tsv and .png"
