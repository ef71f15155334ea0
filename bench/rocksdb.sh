#!/usr/bin/env bash
# bench/rocksdb.sh — stock db_bench on oxblob (the RocksDB FileSystem plugin, via LD_PRELOAD
# and --fs_uri) against db_bench on ext4 directly, with SPDK's RocksDB workloads.
#
# Workloads, in order, on each file system (each DB is reused by the next workload):
#   fillseq          fresh DB, N keys in order
#   fillrandom       fresh DB, N keys in random order
#   overwrite        N random overwrites of the existing DB
#   overwrite-sync   N/100 random overwrites with --sync=1 (a WAL fsync per write); after
#                    each pair of runs, bench/sync-ceiling.sh measures the disk's own
#                    ceiling for this ratio (the same synced appends without RocksDB, as ext4
#                    and as oxblob issue them), reported beside it
#   readrandom       N/4 random reads
#   readwhilewriting 1 reader + 1 writer for a fixed --duration, the writer held to
#                    OXBLOB_RDB_RWW_RATE bytes/s (--benchmark_write_rate_limit)
# A workload whose database the next one reuses (fillrandom, overwrite, overwrite-sync) ends
# with db_bench's `waitforcompaction`, outside its timed part: RocksDB cancels a running
# compaction when the database closes, so without it whichever side happened to close with
# compaction debt would redo that compaction (hundreds of MB) inside the next workload's
# timing, and the other side not. Each workload starts from a settled LSM tree on both sides.
# Keys are 16 bytes (--key_size=16), values 1000 bytes (--value_size=1000), Snappy off (no
# CPU spent compressing), --histogram=1 for P99. Both sides get identical db_bench flags.
#
# Two modes:
#   buffered  ext4: the host page cache.  oxblob: the image opened with O_DIRECT (direct=1)
#             and blobfs's own data cache (cache=OXBLOB_RDB_FSCACHE): "ext4's page cache vs
#             the oxblob cache", with no host page cache under oxblob.
#   direct    ext4: --use_direct_reads --use_direct_io_for_flush_and_compaction.
#             oxblob: the same flags, the image opened with O_DIRECT and cache=0: every
#             blobfs read and write goes to the disk. On such a mount the plugin's readable
#             files report direct I/O to RocksDB (aligned reads into RocksDB's own aligned
#             buffers, as on ext4); writes gather in an aligned buffer of the plugin's.
# Memory budget ("same memory budget"): --cache_size (RocksDB's block cache) is the same for
# both sides in both modes (OXBLOB_RDB_CACHE, default 64 MiB). Below it, in buffered mode,
# ext4 may use the whole host page cache (all free RAM) and oxblob may use its blobfs cache,
# bounded by OXBLOB_RDB_FSCACHE (default: the plugin's default, a quarter of the RAM); both
# hold the whole database at the default sizes. In direct mode neither has a file cache.
#
# ext4 and oxblob runs alternate workload by workload (the order flips every workload). The
# oxblob image is a file on the same disk, under the same directory as the ext4 DB, written
# in full once by `oxblob mkfs --preallocate` (as a disk or partition would be: a sparse image
# makes every first write to a block a host block allocation, and its flush a host metadata
# write). Every db_bench run starts cold on both sides: the host page cache is dropped before
# each run (an oxblob cache starts empty in each new process; without the drop, ext4 would
# read what the previous process left in the page cache). OXBLOB_RDB_WARM=1 keeps it.
#
# Environment (all optional):
#   OXBLOB_RDB_NUM       keys (default 500000; about 0.5 GB of values)
#   OXBLOB_RDB_DURATION  seconds of readwhilewriting (default 20)
#   OXBLOB_RDB_CACHE     block cache bytes (default 67108864)
#   OXBLOB_RDB_FSCACHE   oxblob's blobfs cache in buffered mode, a size such as 256MiB
#                        (default empty: the plugin's default, a quarter of the RAM)
#   OXBLOB_RDB_MODES     "buffered direct" (default both)
#   OXBLOB_RDB_ROUNDS    runs of every workload, reported as the median (default 3: one run of
#                        a workload on a virtual disk moves by 20-30% from one run to the next).
#                        Each round runs on both file systems before the next.
#   OXBLOB_RDB_RWW_RATE  bytes/s the readwhilewriting writer may write (default 8388608, 8 MiB/s;
#                        0: unbounded). RocksDB's own tools/benchmark.sh bounds it the same way
#                        (--benchmark_write_rate_limit). Unbounded, the writer runs flat out
#                        (over 100k puts/s, GBs of WAL and compaction in a 20 s run), and the
#                        side whose writer is faster loads the disk more and slows its own
#                        reader: the readers' figure then measures the writers inversely.
#                        Bounded, both sides do the same writes and the reads compare.
#   OXBLOB_RDB_SYNC_ROUNDS runs of overwrite-sync (default 7, at least OXBLOB_RDB_ROUNDS): a
#                        synced run is short (N/100 writes) and the disk's flush latency
#                        swings two- to threefold from one run to the next, on both sides
#   OXBLOB_RDB_WARM      1: do not drop the host page cache between runs
#   OXBLOB_RDB_BS        oxblob's device block size, e.g. 512 (default: the device's, 4096
#                        for an image file): the unit of its direct reads and writes. 512 is
#                        the unit RocksDB's direct reads use on ext4 on a 512-byte-sector disk
#   OXBLOB_RDB_DIR       scratch directory on the disk under test (default /var/tmp/oxblob-rdb)
#   OXBLOB_RDB_OUT       output prefix (default bench/out/rocksdb -> .json, .svg)
# Exits non-zero only when something fails to run, never because of a ratio.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NUM=${OXBLOB_RDB_NUM:-500000}
DURATION=${OXBLOB_RDB_DURATION:-20}
RWW_RATE=${OXBLOB_RDB_RWW_RATE:-8388608}
CACHE=${OXBLOB_RDB_CACHE:-67108864}
FSCACHE=${OXBLOB_RDB_FSCACHE:-}
MODES=${OXBLOB_RDB_MODES:-buffered direct}
ROUNDS=${OXBLOB_RDB_ROUNDS:-3}
SYNC_ROUNDS=${OXBLOB_RDB_SYNC_ROUNDS:-7}
WARM=${OXBLOB_RDB_WARM:-0}
BS=${OXBLOB_RDB_BS:-}
BSOPT=${BS:+&bs=$BS}
DIR=${OXBLOB_RDB_DIR:-/var/tmp/oxblob-rdb}
OUT=${OXBLOB_RDB_OUT:-$ROOT/bench/out/rocksdb}

die() { echo "rocksdb.sh: $*" >&2; exit 1; }
for tool in db_bench python3 cargo; do
    command -v "$tool" >/dev/null || die "'$tool' not found (run scripts/setup.sh)"
done
[[ $NUM =~ ^[0-9]+$ && $NUM -ge 1000 ]] || die "OXBLOB_RDB_NUM must be a whole number >= 1000"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "OXBLOB_RDB_DURATION must be seconds > 0"
[[ $RWW_RATE =~ ^[0-9]+$ ]] || die "OXBLOB_RDB_RWW_RATE must be bytes per second (0: unbounded)"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "OXBLOB_RDB_ROUNDS must be a whole number > 0"
[[ $SYNC_ROUNDS =~ ^[0-9]+$ && $SYNC_ROUNDS -gt 0 ]] \
    || die "OXBLOB_RDB_SYNC_ROUNDS must be a whole number > 0"
(( SYNC_ROUNDS >= ROUNDS )) || SYNC_ROUNDS=$ROUNDS
[[ ! -e $DIR || -d $DIR ]] || die "$DIR exists and is not a directory"

echo "== building liboxblob_rocksdb.so and oxblob (release)"
(cd "$ROOT" && cargo build --release -p oxblob-rocksdb -p oxblob-cli --quiet)
SO=$ROOT/target/release/liboxblob_rocksdb.so
OXBLOB=$ROOT/target/release/oxblob
[[ -f $SO && -x $OXBLOB ]] || die "build produced no $SO or $OXBLOB"

mkdir -p "$DIR" "$(dirname "$OUT")"
RAW=$(mktemp -d "${TMPDIR:-/tmp}/oxblob-rdb.XXXXXX")
cleanup() { rm -rf "$RAW" "$DIR/ext4-db" "$DIR/oxblob.img"; }
trap cleanup EXIT

# Image: room for the data, compaction's temporary copies and the md region.
IMG_GIB=$(( (NUM * 1100 * 3) / (1 << 30) + 2 ))
SYNC_N=$(( NUM / 100 > 1000 ? NUM / 100 : 1000 ))
READS=$(( NUM / 4 ))
COMMON=(--key_size=16 --value_size=1000 --compression_type=none --cache_size="$CACHE"
        --histogram=1 --threads=1 --statistics=0 --seed=42)

# run FS MODE WORKLOAD ROUND: one db_bench process; output to $RAW/FS-MODE-WORKLOAD.ROUND.txt
run() {
    local fs=$1 mode=$2 w=$3 round=$4 args=()
    case $w in
        fillseq) args=(--benchmarks=fillseq --num="$NUM" --use_existing_db=0) ;;
        fillrandom) args=(--benchmarks=fillrandom,waitforcompaction --num="$NUM" --use_existing_db=0) ;;
        overwrite) args=(--benchmarks=overwrite,waitforcompaction --num="$NUM" --use_existing_db=1) ;;
        overwrite-sync) args=(--benchmarks=overwrite,waitforcompaction --num="$NUM" --writes="$SYNC_N" --sync=1 --use_existing_db=1) ;;
        readrandom) args=(--benchmarks=readrandom --num="$NUM" --reads="$READS" --use_existing_db=1) ;;
        readwhilewriting) args=(--benchmarks=readwhilewriting --num="$NUM" --duration="$DURATION"
                                --benchmark_write_rate_limit="$RWW_RATE" --use_existing_db=1) ;;
    esac
    if [[ $mode == direct ]]; then
        args+=(--use_direct_reads=1 --use_direct_io_for_flush_and_compaction=1)
    fi
    local fsopt="" out=$RAW/$fs-$mode-$w.$round.txt
    if [[ $mode == direct ]]; then fsopt="&cache=0"; elif [[ -n $FSCACHE ]]; then fsopt="&cache=$FSCACHE"; fi
    echo "   $fs $mode $w (run $round)"
    if [[ $fs == ext4 ]]; then
        db_bench "${COMMON[@]}" "${args[@]}" --db="$DIR/ext4-db" >"$out" 2>&1 \
            || { cat "$out" >&2; die "db_bench on ext4 failed ($w, $mode)"; }
    else
        LD_PRELOAD=$SO db_bench "${COMMON[@]}" "${args[@]}" \
            --fs_uri="oxblob://$DIR/oxblob.img?direct=1$fsopt$BSOPT" \
            --db=/db >"$out" 2>&1 \
            || { cat "$out" >&2; die "db_bench on oxblob failed ($w, $mode)"; }
    fi
}

WORKLOADS=(fillseq fillrandom overwrite overwrite-sync readrandom readwhilewriting)
START=$(date +%s)
for mode in $MODES; do
    [[ $mode == buffered || $mode == direct ]] || die "unknown mode '$mode'"
    echo "== $mode mode: $NUM keys x 1000 B, cache $CACHE B, image ${IMG_GIB} GiB (preallocated)"
    rm -rf "$DIR/ext4-db"; rm -f "$DIR/oxblob.img"
    "$OXBLOB" mkfs "$DIR/oxblob.img" --size "${IMG_GIB}GiB" --preallocate --json >/dev/null \
        || die "oxblob mkfs of $DIR/oxblob.img failed"
    i=0
    for w in "${WORKLOADS[@]}"; do
        n=$ROUNDS
        # An unbounded writer grows the database by over a GB per run: one run keeps the
        # image and the disk use bounded.
        [[ $w == readwhilewriting && $RWW_RATE == 0 ]] && n=1
        [[ $w == overwrite-sync ]] && n=$SYNC_ROUNDS
        for ((r = 1; r <= n; r++)); do
            if (( i % 2 == 0 )); then order=(ext4 oxblob); else order=(oxblob ext4); fi
            for fs in "${order[@]}"; do
                sync
                if [[ $WARM != 1 ]]; then
                    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null \
                        || die "cannot drop the page cache (run as root, or OXBLOB_RDB_WARM=1)"
                fi
                run "$fs" "$mode" "$w" "$r"
            done
            # The disk's own ceiling for synced writes, measured right after the pair.
            if [[ $w == overwrite-sync ]]; then
                OXBLOB_SYNC_DIR=$DIR OXBLOB_SYNC_N=$SYNC_N OXBLOB_SYNC_ROUNDS=1 \
                    OXBLOB_SYNC_JSON=$RAW/ceiling-$mode.$r.json \
                    bash "$ROOT/bench/sync-ceiling.sh" >"$RAW/ceiling-$mode.$r.txt" 2>&1 \
                    || { cat "$RAW/ceiling-$mode.$r.txt" >&2; die "bench/sync-ceiling.sh failed"; }
                echo "   disk ceiling (run $r): $(tail -1 "$RAW/ceiling-$mode.$r.txt")"
            fi
            i=$((i + 1))
        done
    done
done
echo "== done in $(( $(date +%s) - START )) s"

python3 - "$RAW" "$OUT" "$NUM" "$CACHE" "$DURATION" "$MODES" "$WARM" "$ROUNDS" "$SYNC_ROUNDS" \
    "$RWW_RATE" <<'PY'
import glob, json, re, statistics, sys, os, html
raw, out, num, cache, duration, modes, warm, rounds, sync_rounds, rww_rate = sys.argv[1:11]
modes = modes.split()
workloads = ["fillseq", "fillrandom", "overwrite", "overwrite-sync", "readrandom",
             "readwhilewriting"]
bench_name = {"overwrite-sync": "overwrite"}

def parse(path, w):
    text = open(path).read()
    name = bench_name.get(w, w)
    m = re.search(r"^%s\s*:\s*([\d.]+) micros/op (\d+) ops/sec" % re.escape(name), text, re.M)
    if not m:
        raise SystemExit("no result for %s in %s" % (w, path))
    rest = text[m.end():]
    p = re.search(r"P99: ([\d.]+)", rest)
    return {"micros_per_op": float(m.group(1)), "ops_per_sec": int(m.group(2)),
            "p99_us": float(p.group(1)) if p else None}

def round_of(path):
    return int(path.rsplit(".", 2)[-2])

def runs_of(fs, mode, w):
    """Every run of a workload, in round order."""
    paths = sorted(glob.glob(os.path.join(raw, "%s-%s-%s.*.txt" % (fs, mode, w))), key=round_of)
    if not paths:
        raise SystemExit("no runs of %s %s %s" % (fs, mode, w))
    return [parse(p, w) for p in paths]

def median_run(runs):
    by_ops = sorted(runs, key=lambda r: r["ops_per_sec"])
    m = dict(by_ops[len(by_ops) // 2])
    m["runs_ops_per_sec"] = [r["ops_per_sec"] for r in runs]
    return m

def paired_ratio(e_runs, o_runs):
    """Median over rounds of oxblob/ext4 within the round: the two runs of a round are back
    to back, so a drift of the disk between rounds (its flush latency moves two- to threefold
    here) cancels out of each pair."""
    rs = sorted(o["ops_per_sec"] / e["ops_per_sec"] for e, o in zip(e_runs, o_runs)
                if e["ops_per_sec"])
    return statistics.median(rs) if rs else None

def ceiling(mode):
    """The disk's ceiling for the overwrite-sync ratio in this run (bench/sync-ceiling.sh,
    one round after every overwrite-sync pair): the median ratio of the two bare loops."""
    docs = [json.load(open(p)) for p in
            sorted(glob.glob(os.path.join(raw, "ceiling-%s.*.json" % mode)), key=round_of)]
    if not docs:
        return None
    return {"ratio": statistics.median(d["ratio"] for d in docs),
            "ext4_per_s": statistics.median(v for d in docs for v in d["ext4_per_s"]),
            "oxblob_per_s": statistics.median(v for d in docs for v in d["oxblob_per_s"]),
            "runs_ratio": [d["ratio"] for d in docs]}

rows = []
ROUNDS_SHOWN, SYNC_SHOWN = rounds, sync_rounds
for mode in modes:
    for w in workloads:
        e_runs, o_runs = runs_of("ext4", mode, w), runs_of("oxblob", mode, w)
        e, o = median_run(e_runs), median_run(o_runs)
        rows.append({"mode": mode, "workload": w, "ext4": e, "oxblob": o,
                     "ratio_ops": o["ops_per_sec"] / e["ops_per_sec"] if e["ops_per_sec"] else None,
                     "ratio_paired": paired_ratio(e_runs, o_runs),
                     "ratio_p99": (o["p99_us"] / e["p99_us"]) if e["p99_us"] and o["p99_us"] else None})
        if w == "overwrite-sync":
            rows[-1]["disk_ceiling"] = ceiling(mode)

hdr = "%-9s %-17s %12s %12s %7s %7s %11s %11s %7s" % ("mode", "workload", "ext4 ops/s",
      "oxblob ops/s", "ratio", "paired", "ext4 P99us", "oxb P99us", "P99 x")
print(hdr); print("-" * len(hdr))
for r in rows:
    f = lambda v, fmt: (fmt % v) if v is not None else "-"
    print("%-9s %-17s %12d %12d %7s %7s %11s %11s %7s" % (r["mode"], r["workload"],
          r["ext4"]["ops_per_sec"], r["oxblob"]["ops_per_sec"], f(r["ratio_ops"], "%.2f"),
          f(r["ratio_paired"], "%.2f"),
          f(r["ext4"]["p99_us"], "%.1f"), f(r["oxblob"]["p99_us"], "%.1f"),
          f(r["ratio_p99"], "%.2f")))
print("(ratio = oxblob/ext4 of the median ops/s, higher is better for oxblob; paired = median of"
      " the per-round ratios\n (each round runs both back to back); P99 x = oxblob/ext4 P99 latency,"
      " lower is better;\n medians of %s runs (overwrite-sync: %s; readwhilewriting: %s), all runs"
      " in the JSON;\n readwhilewriting's writer %s;\n every run started %s)"
      % (ROUNDS_SHOWN, SYNC_SHOWN, "one" if rww_rate == "0" else ROUNDS_SHOWN,
         "unbounded" if rww_rate == "0" else "held to %d bytes/s" % int(rww_rate),
         "with the host page cache as the previous run left it" if warm == "1"
         else "cold: host page cache dropped, new oxblob process"))

for r in rows:
    c = r.get("disk_ceiling")
    if c:
        print("%s overwrite-sync: the disk's own ceiling this run was %.2f (bare synced 1060-byte"
              " appends, %.0f/s as ext4 does them against %.0f/s as oxblob does them;"
              " bench/sync-ceiling.sh)" % (r["mode"], c["ratio"], c["ext4_per_s"], c["oxblob_per_s"]))

doc = {"num": int(num), "key_size": 16, "value_size": 1000, "cache_size": int(cache),
       "readwhilewriting_seconds": int(duration),
       "readwhilewriting_write_rate_limit": int(rww_rate), "cold_start": warm != "1",
       "image": "preallocated", "rounds": int(rounds), "sync_rounds": int(sync_rounds),
       "results": rows}
with open(out + ".json", "w") as fh:
    json.dump(doc, fh, indent=2)

# SVG, two panels over the same columns (one per mode and workload): on top the ratio
# oxblob/ext4 against the target (bar: ratio of medians, dot: paired ratio), below the
# medians' ops/s of both on a log scale.
import math
TARGET = {"overwrite-sync": 1.5}
W, left, right, top = 1100, 80, 20, 56
rh, gap, oh, lab = 230, 50, 230, 60
H = top + rh + gap + oh + lab
n = len(rows)
gw = (W - left - right) / max(n, 1)
def esc(t):
    return html.escape(str(t))
s = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
     '<rect width="100%" height="100%" fill="white"/>',
     '<text x="%d" y="20" font-size="15">db_bench on oxblob against ext4: %s keys x 1000 B, cache %d MiB, median of %s run%s (overwrite-sync: %s)</text>'
     % (left, num, int(cache) >> 20, rounds, "" if rounds == "1" else "s", sync_rounds)]
# Legend, inside the canvas.
lx = left
for col, txt, shape in (("#2a7", "ratio, target met", "rect"), ("#c33", "ratio, below target", "rect"),
                        ("#000", "paired ratio", "dot"), ("#333", "target", "dash"),
                        ("#36c", "disk ceiling (synced)", "line"),
                        ("#888", "ext4 ops/s", "rect"),
                        ("#c60", "oxblob ops/s", "rect")):
    if shape == "rect":
        s.append('<rect x="%d" y="30" width="10" height="10" fill="%s"/>' % (lx, col))
    elif shape == "line":
        s.append('<line x1="%d" x2="%d" y1="35" y2="35" stroke="%s" stroke-width="2"/>' % (lx - 4, lx + 12, col))
    elif shape == "dash":
        s.append('<line x1="%d" x2="%d" y1="35" y2="35" stroke="%s" stroke-dasharray="4,3"/>' % (lx - 4, lx + 12, col))
    else:
        s.append('<circle cx="%d" cy="35" r="4" fill="%s"/>' % (lx + 5, col))
    s.append('<text x="%d" y="39">%s</text>' % (lx + 14, esc(txt)))
    lx += 24 + 7 * len(txt)
# Panel 1: ratios (linear).
ratios = [v for r in rows for v in (r["ratio_ops"], r["ratio_paired"]) if v is not None]
ratios += [r["disk_ceiling"]["ratio"] for r in rows if r.get("disk_ceiling")]
rmax = max([1.6] + ratios) * 1.1
rmax = math.ceil(rmax * 2) / 2
y0 = top + rh
def yr(v):
    return y0 - rh * min(v, rmax) / rmax
t = 0.0
while t <= rmax + 1e-9:
    s.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>' % (left, W - right, yr(t), yr(t)))
    s.append('<text x="%d" y="%.1f" text-anchor="end">%.1f</text>' % (left - 5, yr(t) + 4, t))
    t += 0.5
s.append('<text transform="translate(20,%.1f) rotate(-90)" text-anchor="middle">oxblob / ext4 ops/s</text>' % (top + rh / 2))
for i, r in enumerate(rows):
    tgt = TARGET.get(r["workload"], 1.0)
    x0 = left + i * gw
    s.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333" stroke-dasharray="4,3"><title>target %.1f</title></line>'
             % (x0 + 4, x0 + gw - 4, yr(tgt), yr(tgt), tgt))
    v = r["ratio_ops"]
    if v is not None:
        col = "#2a7" if v >= tgt else "#c33"
        s.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.2f (target %.1f)</title></rect>'
                 % (x0 + gw * 0.25, yr(v), gw * 0.5, y0 - yr(v), col, esc(r["mode"]), esc(r["workload"]), v, tgt))
        pr = r["ratio_paired"] if r["ratio_paired"] is not None else v
        c = r.get("disk_ceiling")
        top_v = max(v, tgt, pr, c["ratio"] if c else 0.0)
        s.append('<text x="%.1f" y="%.1f" text-anchor="middle">%.2f</text>' % (x0 + gw / 2, yr(top_v) - 7, v))
    c = r.get("disk_ceiling")
    if c:
        s.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#36c" stroke-width="2"><title>disk ceiling %.2f</title></line>'
                 % (x0 + gw * 0.15, x0 + gw * 0.85, yr(c["ratio"]), yr(c["ratio"]), c["ratio"]))
    pr = r["ratio_paired"]
    if pr is not None:
        s.append('<circle cx="%.1f" cy="%.1f" r="4" fill="#000"><title>paired %.2f</title></circle>' % (x0 + gw / 2, yr(pr), pr))
s.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>' % (left, W - right, y0, y0))
# Panel 2: ops/s (log).
o_top = y0 + gap
vals = [r[k]["ops_per_sec"] for r in rows for k in ("ext4", "oxblob") if r[k]["ops_per_sec"] > 0]
lo = math.floor(math.log10(min(vals))) if vals else 0
hi = math.ceil(math.log10(max(vals)) + 0.05) if vals else 1
yb = o_top + oh
def yo(v):
    v = max(v, 10 ** lo)
    return yb - oh * (math.log10(v) - lo) / max(hi - lo, 1e-9)
for e in range(lo, hi + 1):
    s.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>' % (left, W - right, yo(10 ** e), yo(10 ** e)))
    s.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 5, yo(10 ** e) + 4, "{:,}".format(10 ** e)))
s.append('<text transform="translate(20,%.1f) rotate(-90)" text-anchor="middle">ops/s (log)</text>' % (o_top + oh / 2))
for i, r in enumerate(rows):
    x0 = left + i * gw + gw * 0.15
    bw = gw * 0.35
    for j, (k, col) in enumerate((("ext4", "#888"), ("oxblob", "#c60"))):
        v = r[k]["ops_per_sec"]
        s.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s %s: %d ops/s</title></rect>'
                 % (x0 + j * bw, yo(v), bw, yb - yo(v), col, esc(r["mode"]), esc(r["workload"]), k, v))
s.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>' % (left, W - right, yb, yb))
# Column labels: the workload under each column, the mode under its group.
for i, r in enumerate(rows):
    cx = left + i * gw + gw / 2
    s.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>' % (cx, yb + 15, esc(r["workload"])))
start_i = 0
for i in range(1, n + 1):
    if i == n or rows[i]["mode"] != rows[start_i]["mode"]:
        xa, xb = left + start_i * gw, left + i * gw
        s.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="13">%s mode</text>' % ((xa + xb) / 2, yb + 40, esc(rows[start_i]["mode"])))
        if i < n:
            for ya, yb2 in ((top, y0), (o_top, yb + 45)):
                s.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#999"/>' % (xb, xb, ya, yb2))
        start_i = i
s.append("</svg>")
with open(out + ".svg", "w") as fh:
    fh.write("\n".join(s))
print("wrote %s.json and %s.svg" % (out, out))
PY
