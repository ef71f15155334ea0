#!/usr/bin/env bash
# scripts/demo.sh — the oxblob demo, in labelled steps:
#   1. install prerequisites (scripts/setup.sh)
#   2. build the release binary
#   3. create the image file (oxblob.img in the repository root, or $OXBLOB_IMAGE; 1 GiB)
#   4. benchmark the block-device layer on the image (4K randread and randwrite, QD32)
#   5. benchmark the malloc (RAM) device for comparison
#   6. a file system on the image: mkfs --force, mkdir -p, cp the repository's docs in, tree,
#      cat, df, fsck (re-formats the image every run, so it is repeatable)
#   7. RocksDB on the image: stock db_bench through the oxblob plugin (--fs_uri), and the same
#      db_bench on ext4 next to the image, side by side
#
# Environment: OXBLOB_IMAGE (image path), OXBLOB_DEMO_SECONDS (seconds per benchmark, default 3),
# OXBLOB_DEMO_KEYS (db_bench keys, default 100000).
# The benchmark in step 4 overwrites the image's contents with random data.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

IMAGE=${OXBLOB_IMAGE:-$ROOT/oxblob.img}
IMAGE_SIZE=$((1024 * 1024 * 1024))
SECONDS_EACH=${OXBLOB_DEMO_SECONDS:-3}
OXBLOB=$ROOT/target/release/oxblob
STEPS=$(grep -c '^step "' "${BASH_SOURCE[0]}") # to add a step, just write another `step "..."`
n=0
step() { n=$((n + 1)); printf '\n==[%d/%d]== %s\n' "$n" "$STEPS" "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Install prerequisites"
./scripts/setup.sh

step "Build the release binary"
run cargo build --release -p oxblob-cli
run "$OXBLOB" --version

step "Create the image file $IMAGE (1 GiB)"
if [[ -e $IMAGE && ! -f $IMAGE ]]; then
    echo "demo: $IMAGE exists and is not a regular file; refusing to use it" >&2
    exit 1
elif [[ -f $IMAGE && $(stat -c %s "$IMAGE") -eq $IMAGE_SIZE ]]; then
    echo "exists, $IMAGE_SIZE bytes: kept"
else
    mkdir -p "$(dirname "$IMAGE")"
    rm -f "$IMAGE"
    # Written, not sparse: reads of holes never reach the disk and would flatter the numbers.
    run dd if=/dev/zero of="$IMAGE" bs=1M count=1024 oflag=direct status=none
    echo "created, $(stat -c %s "$IMAGE") bytes"
fi

step "Benchmark the block device on the image (io_uring, O_DIRECT where the file system allows)"
run "$OXBLOB" bench bdev --dev "file:$IMAGE" --rw randread --bs 4k --qd 32 --seconds "$SECONDS_EACH"
echo
run "$OXBLOB" bench bdev --dev "file:$IMAGE" --rw randwrite --bs 4k --qd 32 --seconds "$SECONDS_EACH"

step "Benchmark the malloc (RAM) device, one thread"
run "$OXBLOB" bench bdev --dev malloc:1GiB --rw randread --bs 4k --qd 32 --seconds "$SECONDS_EACH"

step "A file system on the image: mkfs, mkdir, cp, tree, cat, df, fsck"
# --force: the image holds the previous run's file system (or the benchmark's random data).
run "$OXBLOB" mkfs "$IMAGE" --force
run "$OXBLOB" mkdir "$IMAGE" -p /notes/today
run "$OXBLOB" cp "$IMAGE" -r docs :/
run "$OXBLOB" cp "$IMAGE" README.md :/docs/
printf 'written by scripts/demo.sh on %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$ROOT/target/demo-note.txt"
run "$OXBLOB" cp "$IMAGE" "$ROOT/target/demo-note.txt" :/notes/today/hello.txt
run "$OXBLOB" tree "$IMAGE"
run "$OXBLOB" ls "$IMAGE" -l /docs
run "$OXBLOB" cat "$IMAGE" /notes/today/hello.txt
run "$OXBLOB" cp "$IMAGE" :/docs/README.md "$ROOT/target/demo-README.md"
run cmp README.md "$ROOT/target/demo-README.md"
run "$OXBLOB" df "$IMAGE"
run "$OXBLOB" fsck "$IMAGE"

step "RocksDB on the image: stock db_bench through the oxblob plugin, and on ext4"
KEYS=${OXBLOB_DEMO_KEYS:-100000}
run cargo build --release -p oxblob-rocksdb
SO=$ROOT/target/release/liboxblob_rocksdb.so
EXT4_DB=$(dirname "$IMAGE")/oxblob-demo-ext4-db
rm -rf "$EXT4_DB"
# Identical flags on both sides: 16-byte keys, 1000-byte values, no compression, 64 MiB cache.
DB_FLAGS=(--benchmarks=fillrandom,overwrite,readrandom --num="$KEYS" --reads=$((KEYS / 4))
    --key_size=16 --value_size=1000 --compression_type=none --cache_size=67108864 --threads=1 --progress_reports=false)
run env LD_PRELOAD="$SO" db_bench --fs_uri="oxblob://file:$IMAGE" --db=/rocksdb "${DB_FLAGS[@]}" \
    | tee "$ROOT/target/demo-db-oxblob.txt"
run db_bench --db="$EXT4_DB" "${DB_FLAGS[@]}" | tee "$ROOT/target/demo-db-ext4.txt"
rm -rf "$EXT4_DB"
run "$OXBLOB" ls "$IMAGE" -l /rocksdb
run "$OXBLOB" fsck "$IMAGE"
python3 - "$ROOT/target/demo-db-oxblob.txt" "$ROOT/target/demo-db-ext4.txt" <<'PY'
import re, sys
def ops(path):
    out = {}
    for line in open(path):
        m = re.match(r"^(\w+)\s*:\s*([\d.]+) micros/op (\d+) ops/sec", line)
        if m:
            out[m.group(1)] = int(m.group(3))
    return out
ox, ext4 = ops(sys.argv[1]), ops(sys.argv[2])
print("\n%-12s %14s %14s %8s" % ("workload", "ext4 ops/s", "oxblob ops/s", "ratio"))
for name in ext4:
    if name in ox:
        print("%-12s %14d %14d %8.2f" % (name, ext4[name], ox[name], ox[name] / max(ext4[name], 1)))
print("ratio = oxblob / ext4 (one short run; bench/rocksdb.sh runs the full comparison)")
PY

printf '\nDemo finished. Full side-by-side benchmarks: bench/bdev-vs-fio.sh, bench/rocksdb.sh,\n'
printf 'bench/fuse-vs-ext4.sh\n'
