#!/usr/bin/env bash
# fuse-vs-ext4.sh — the same fio jobs and the same metadata loop on an oxblob FUSE mount and
# on a plain directory of the ext4 disk the image lives on, alternating per job, then a ratio
# table (oxblob / ext4) and JSON in bench/out/fuse-vs-ext4.json.
#
# Env: OXBLOB_BENCH_DIR (default /var/tmp), OXBLOB_BENCH_SECONDS (10), OXBLOB_BENCH_SIZE
# (256m, the fio file), OXBLOB_BENCH_FILES (20000; e.g. 100000 for the long run).
# Buffered I/O (--direct=0), --fallocate=none, one job, psync, fresh file per system.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${OXBLOB_BENCH_DIR:-/var/tmp}
SECS=${OXBLOB_BENCH_SECONDS:-10}
SIZE=${OXBLOB_BENCH_SIZE:-256m}
NFILES=${OXBLOB_BENCH_FILES:-20000}
OUT="$ROOT/bench/out"
mkdir -p "$OUT"

cargo build --release -q -p oxblob-cli --manifest-path "$ROOT/Cargo.toml"
OXBLOB="$ROOT/target/release/oxblob"

WORK=$(mktemp -d "$BASE/oxblob-fuse-bench.XXXXXX")
IMG="$WORK/img"
MNT="$WORK/mnt"
EXT="$WORK/ext4"
mkdir -p "$MNT" "$EXT"
cleanup() {
  if grep -q " $MNT " /proc/self/mountinfo; then
    "$OXBLOB" umount "$MNT" || umount -l "$MNT" || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$OXBLOB" mkfs "$IMG" --size 2GiB >/dev/null
"$OXBLOB" mount "$IMG" "$MNT"

# fio_bw DIR RW BS -> "MiB/s IOPS"
fio_run() {
  local dir=$1 rw=$2 bs=$3
  fio --name=b --directory="$dir" --filename=bench.dat --rw="$rw" --bs="$bs" \
    --size="$SIZE" --runtime="$SECS" --time_based --direct=0 --fallocate=none \
    --ioengine=psync --numjobs=1 --invalidate=1 --output-format=json >"$WORK/fio.json"
  python3 - "$WORK/fio.json" "$rw" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
side = "read" if "read" in sys.argv[2] else "write"
print(f'{j[side]["bw_bytes"] / 2**20:.1f} {j[side]["iops"]:.0f}')
EOF
}

# Lay the file out once per system (not timed), so reads read data.
for d in "$MNT" "$EXT"; do
  fio --name=lay --directory="$d" --filename=bench.dat --rw=write --bs=1m --size="$SIZE" \
    --direct=0 --fallocate=none --ioengine=psync --end_fsync=1 >/dev/null
done

# meta DIR -> "creates/s stats/s unlinks/s"
meta_run() {
  python3 - "$1" "$NFILES" <<'EOF'
import os, sys, time
d, n = os.path.join(sys.argv[1], "meta"), int(sys.argv[2])
os.makedirs(d, exist_ok=True)
names = [os.path.join(d, f"f{i:07d}") for i in range(n)]
t = time.perf_counter()
for p in names:
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
c = n / (time.perf_counter() - t)
t = time.perf_counter()
for p in names:
    os.stat(p)
s = n / (time.perf_counter() - t)
t = time.perf_counter()
for p in names:
    os.unlink(p)
u = n / (time.perf_counter() - t)
os.rmdir(d)
print(f"{c:.0f} {s:.0f} {u:.0f}")
EOF
}

declare -a ROWS=()
for spec in "read 128k" "write 128k" "randread 4k" "randwrite 4k" "randread 128k" "randwrite 128k"; do
  set -- $spec
  o=$(fio_run "$MNT" "$1" "$2")
  e=$(fio_run "$EXT" "$1" "$2")
  ROWS+=("$1-$2 MiB/s ${o%% *} ${e%% *}")
  echo "$1 $2: oxblob $o  ext4 $e (MiB/s IOPS)" >&2
done
sync
o=$(meta_run "$MNT")
e=$(meta_run "$EXT")
read -r oc os ou <<<"$o"
read -r ec es eu <<<"$e"
ROWS+=("create-${NFILES} ops/s $oc $ec" "stat-${NFILES} ops/s $os $es" "unlink-${NFILES} ops/s $ou $eu")

python3 - "$OUT/fuse-vs-ext4.json" "$SECS" "$SIZE" "$NFILES" "${ROWS[@]}" <<'EOF'
import json, sys
out, secs, size, nfiles, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
res = []
print(f"{'test':<22} {'unit':<7} {'oxblob':>10} {'ext4':>10} {'ratio':>7}")
for r in rows:
    name, unit, o, e = r.split()
    o, e = float(o), float(e)
    ratio = o / e if e else float("nan")
    res.append({"test": name, "unit": unit, "oxblob": o, "ext4": e, "ratio": round(ratio, 3)})
    print(f"{name:<22} {unit:<7} {o:>10.1f} {e:>10.1f} {ratio:>7.2f}")
json.dump({"seconds": int(secs), "file_size": size, "meta_files": int(nfiles),
           "direct": False, "results": res}, open(out, "w"), indent=2)
print(f"wrote {out}")
EOF
