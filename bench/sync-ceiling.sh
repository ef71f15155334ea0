#!/usr/bin/env bash
# What the disk allows a synced write, without RocksDB and without oxblob: the ceiling of the
# `overwrite --sync=1` ratio in bench/rocksdb.sh.
#
# Two loops of N synced 1,060-byte appends (a 16-byte key, a 1,000-byte value and RocksDB's
# record framing), each timed with nothing but the system calls around it, on the same disk,
# in alternating rounds:
#
#   ext4    what RocksDB's WAL does on ext4: a file preallocated with
#           fallocate(KEEP_SIZE), `write` of the record into the page cache, `fdatasync`.
#           ext4 writes the data block, then the inode block (the size grew), then flushes.
#   oxblob  what a synced append on oxblob does: the record is written as one 4 KiB
#           `O_DIRECT` `pwrite` into a region written before (the blobstore's metadata log,
#           which is reused), then `fdatasync` of a file whose blocks and size do not change:
#           one write and one flush.
#
# The ratio of the two is what a plugin that spent no CPU of its own could reach; RocksDB's
# own work per write (the same on both sides) brings db_bench's ratio below it.
#
# Environment:
#   OXBLOB_SYNC_DIR     directory on the disk to measure (default /var/tmp/oxblob-sync)
#   OXBLOB_SYNC_N       synced appends per round (default 3000)
#   OXBLOB_SYNC_ROUNDS  rounds of each loop (default 7)
#   OXBLOB_SYNC_JSON    also write the results as JSON to this file
#   --help              this text
set -euo pipefail

if [[ ${1:-} == --help || ${1:-} == -h ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi

DIR=${OXBLOB_SYNC_DIR:-/var/tmp/oxblob-sync}
N=${OXBLOB_SYNC_N:-3000}
ROUNDS=${OXBLOB_SYNC_ROUNDS:-7}
JSON=${OXBLOB_SYNC_JSON:-}

mkdir -p "$DIR"
trap 'rm -f "$DIR"/sync-ceiling.*' EXIT
echo "sync-ceiling: $N synced 1060-byte appends per round, $ROUNDS rounds each, in $DIR ($(df --output=source "$DIR" | tail -1))"

python3 - "$DIR" "$N" "$ROUNDS" "$JSON" <<'EOF'
import ctypes, json, mmap, os, statistics, sys, time

d, n, rounds, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE = 1
REC = 1060
record = os.urandom(REC)

def ext4_round(i):
    path = os.path.join(d, "sync-ceiling.wal.%d" % i)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (n + 1) * REC) != 0:
            raise OSError(ctypes.get_errno(), "fallocate")
        os.fsync(fd)
        t = time.perf_counter()
        for _ in range(n):
            os.write(fd, record)
            os.fdatasync(fd)
        return n / (time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)

# The image: written once in full, so its blocks are allocated and initialized; every round
# overwrites the same region, as the blobstore's metadata log does.
image = os.path.join(d, "sync-ceiling.image")
BLOCK = 4096
size = 4 << 20
fd = os.open(image, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"\0" * size)
os.fsync(fd)
os.close(fd)
buf = mmap.mmap(-1, BLOCK)
buf[:REC] = record

def oxblob_round(_i):
    fd = os.open(image, os.O_RDWR | os.O_DIRECT)
    try:
        t = time.perf_counter()
        off = 0
        for _ in range(n):
            os.pwrite(fd, buf, off)
            os.fdatasync(fd)
            off = (off + BLOCK) % size
        return n / (time.perf_counter() - t)
    finally:
        os.close(fd)

res = {"ext4": [], "oxblob": []}
for r in range(rounds):
    res["ext4"].append(ext4_round(r))
    res["oxblob"].append(oxblob_round(r))
    print("round %d: ext4 %8.0f  oxblob %8.0f synced appends/s  ratio %.2f"
          % (r + 1, res["ext4"][-1], res["oxblob"][-1], res["oxblob"][-1] / res["ext4"][-1]),
          flush=True)
e, o = statistics.median(res["ext4"]), statistics.median(res["oxblob"])
paired = statistics.median(b / a for a, b in zip(res["ext4"], res["oxblob"]))
print("median: ext4 %.0f  oxblob %.0f  ratio %.2f  (paired %.2f)" % (e, o, o / e, paired))
if out:
    with open(out, "w") as f:
        json.dump({"appends_per_round": n, "record_bytes": REC, "rounds": rounds,
                   "ext4_per_s": res["ext4"], "oxblob_per_s": res["oxblob"],
                   "ratio": o / e, "paired_ratio": paired}, f, indent=1)
EOF
