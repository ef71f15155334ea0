#!/usr/bin/env bash
# bench/bdev-vs-fio.sh — oxblob's block-device layer against fio on the same file.
#
# For each case (4K randread QD1/QD32, 4K randwrite QD1/QD32, 128K read/write QD8) it runs
#   fio --ioengine=io_uring --direct=1 --numjobs=1 ...   and   oxblob bench bdev --json ...
# on the same prefilled file, alternately (the order flips every round), ROUNDS times each, and
# prints the median IOPS per tool and the ratio oxblob/fio. It also measures the malloc (RAM)
# device's 4K randread QD32 on one thread against the 800k IOPS target.
#
# Environment (all optional):
#   OXBLOB_BENCH_FILE     test file           (default /var/tmp/oxblob-bdev-vs-fio.img: the real
#                                              disk, not tmpfs)
#   OXBLOB_BENCH_SIZE     its size            (default 1G; K/M/G/T suffixes are powers of 1024)
#   OXBLOB_BENCH_RUNTIME  seconds per run     (default 5; both tools also warm up 0.5 s first)
#   OXBLOB_BENCH_ROUNDS   runs per tool/case  (default 3)
#   OXBLOB_BENCH_OUT      JSON output         (default bench/out/bdev-vs-fio.json)
#   OXBLOB_BENCH_KEEP=1   keep the test file afterwards (default: delete it)
#
# Exits non-zero only when something fails to run, never because of a ratio.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILE=${OXBLOB_BENCH_FILE:-/var/tmp/oxblob-bdev-vs-fio.img}
SIZE=${OXBLOB_BENCH_SIZE:-1G}
RUNTIME=${OXBLOB_BENCH_RUNTIME:-5}
ROUNDS=${OXBLOB_BENCH_ROUNDS:-3}
OUT=${OXBLOB_BENCH_OUT:-$ROOT/bench/out/bdev-vs-fio.json}
MALLOC_TARGET=800000

die() { echo "bdev-vs-fio: $*" >&2; exit 1; }

for tool in fio python3 cargo numfmt; do
    command -v "$tool" >/dev/null || die "'$tool' not found (run scripts/setup.sh)"
done
[[ $RUNTIME =~ ^[0-9]+$ && $RUNTIME -gt 0 ]] || die "OXBLOB_BENCH_RUNTIME must be a whole number of seconds > 0"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "OXBLOB_BENCH_ROUNDS must be a whole number > 0"
SIZE_BYTES=$(numfmt --from=iec "${SIZE%B}" 2>/dev/null) || die "OXBLOB_BENCH_SIZE '$SIZE' is not a size"
(( SIZE_BYTES >= 1048576 )) || die "OXBLOB_BENCH_SIZE must be at least 1M"
# The test file is overwritten and (unless kept) deleted: never point this at a device node.
[[ ! -e $FILE || -f $FILE ]] || die "$FILE exists and is not a regular file; refusing to overwrite it"

echo "== building oxblob (release)"
(cd "$ROOT" && cargo build --release -p oxblob-cli --quiet)
OXBLOB=$ROOT/target/release/oxblob
[[ -x $OXBLOB ]] || die "build produced no $OXBLOB"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/oxblob-bdev-vs-fio.XXXXXX")
cleanup() {
    rm -rf "$WORK"
    if [[ ${OXBLOB_BENCH_KEEP:-0} != 1 ]]; then rm -f "$FILE"; fi
}
trap cleanup EXIT

mkdir -p "$(dirname "$FILE")" "$(dirname "$OUT")"
echo "== prefilling $FILE ($SIZE_BYTES bytes) with fio"
rm -f "$FILE"
fio --name=prefill --ioengine=io_uring --direct=1 --rw=write --bs=1M --iodepth=8 \
    --size="$SIZE_BYTES" --filename="$FILE" --refill_buffers=1 --output-format=json \
    >"$WORK/prefill.json" || die "fio prefill of $FILE failed"
sync

# name rw bs qd
CASES=(
    "4k-randread-qd1 randread 4k 1"
    "4k-randread-qd32 randread 4k 32"
    "4k-randwrite-qd1 randwrite 4k 1"
    "4k-randwrite-qd32 randwrite 4k 32"
    "128k-read-qd8 read 128k 8"
    "128k-write-qd8 write 128k 8"
)

run_fio() { # name bs rw qd out
    fio --name="$1" --ioengine=io_uring --direct=1 --numjobs=1 --iodepth="$4" --bs="$2" \
        --rw="$3" --time_based --ramp_time=500ms --runtime="$RUNTIME" --filename="$FILE" \
        --norandommap --randrepeat=0 --output-format=json >"$5" 2>"$5.err" \
        || die "fio $1 failed: $(cat "$5.err")"
}

run_oxblob() { # name bs rw qd out
    "$OXBLOB" bench bdev --dev "uring:$FILE" --rw "$3" --bs "$2" --qd "$4" \
        --seconds "$RUNTIME" --warmup 0.5 --json >"$5" 2>"$5.err" \
        || die "oxblob $1 failed: $(cat "$5.err")"
}

total=$(( ${#CASES[@]} * ROUNDS * 2 * (RUNTIME + 1) + ROUNDS * (RUNTIME + 1) ))
echo "== ${#CASES[@]} cases x $ROUNDS rounds x 2 tools, ${RUNTIME}s each (about ${total}s)"
for c in "${CASES[@]}"; do
    read -r name rw bs qd <<<"$c"
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order="fio oxblob"; else order="oxblob fio"; fi
        for tool in $order; do
            printf '   %-18s round %d/%d  %s\n' "$name" "$r" "$ROUNDS" "$tool"
            "run_$tool" "$name" "$bs" "$rw" "$qd" "$WORK/$name.$r.$tool.json"
        done
    done
done

echo "== malloc device: 4K randread QD32, one thread"
for ((r = 1; r <= ROUNDS; r++)); do
    "$OXBLOB" bench bdev --dev malloc:1GiB --rw randread --bs 4k --qd 32 --threads 1 \
        --seconds "$RUNTIME" --json >"$WORK/malloc.$r.json" 2>"$WORK/malloc.$r.err" \
        || die "oxblob malloc bench failed: $(cat "$WORK/malloc.$r.err")"
done

python3 - "$WORK" "$OUT" "$ROUNDS" "$RUNTIME" "$FILE" "$SIZE_BYTES" "$MALLOC_TARGET" "${CASES[@]}" <<'PY'
import json, os, statistics, sys, platform, datetime

work, out, rounds, runtime, path, size, target = sys.argv[1:8]
rounds, runtime, size, target = int(rounds), int(runtime), int(size), int(target)
cases = [c.split() for c in sys.argv[8:]]

def fio_result(f, rw):
    job = json.load(open(f))["jobs"][0]
    side = job["write" if "write" in rw else "read"]
    return side["iops"], side["lat_ns"]["mean"] / 1000.0

def ox_result(f):
    j = json.load(open(f))
    return j["iops"], j["lat_mean_us"], j

results = []
backend = None
for name, rw, bs, qd in cases:
    fio = [fio_result(os.path.join(work, f"{name}.{r}.fio.json"), rw) for r in range(1, rounds + 1)]
    ox = [ox_result(os.path.join(work, f"{name}.{r}.oxblob.json")) for r in range(1, rounds + 1)]
    backend = backend or (ox[0][2]["backend"], ox[0][2]["direct_io"])
    fio_med = statistics.median(x[0] for x in fio)
    ox_med = statistics.median(x[0] for x in ox)
    results.append({
        "case": name, "rw": rw, "bs": bs, "qd": int(qd),
        "fio_iops": [x[0] for x in fio], "oxblob_iops": [x[0] for x in ox],
        "fio_lat_mean_us": [x[1] for x in fio], "oxblob_lat_mean_us": [x[1] for x in ox],
        "fio_iops_median": fio_med, "oxblob_iops_median": ox_med,
        "ratio": ox_med / fio_med if fio_med > 0 else None,
    })

malloc = [json.load(open(os.path.join(work, f"malloc.{r}.json"))) for r in range(1, rounds + 1)]
malloc_med = statistics.median(m["iops"] for m in malloc)

def k(v):
    return f"{v/1e6:.2f}M" if v >= 1e6 else f"{v/1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"

print()
print(f"file {path} ({size} bytes), oxblob backend {backend[0]} (direct_io={backend[1]}), "
      f"{rounds} rounds x {runtime}s, medians")
hdr = f"{'case':<18} {'fio IOPS':>10} {'oxblob IOPS':>12} {'oxblob/fio':>11}   {'fio lat us':>10} {'oxblob lat us':>13}"
print(hdr)
print("-" * len(hdr))
for r in results:
    ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "n/a"
    print(f"{r['case']:<18} {k(r['fio_iops_median']):>10} {k(r['oxblob_iops_median']):>12} {ratio:>11}"
          f"   {statistics.median(r['fio_lat_mean_us']):>10.1f} {statistics.median(r['oxblob_lat_mean_us']):>13.1f}")
print()
verdict = "met" if malloc_med >= target else "NOT met"
print(f"malloc 4K randread QD32, 1 thread: {k(malloc_med)} IOPS "
      f"(rounds: {', '.join(k(m['iops']) for m in malloc)}); target {k(target)}: {verdict}")

doc = {
    "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": platform.node(), "cpus": os.cpu_count(),
    "file": path, "size": size, "rounds": rounds, "runtime_s": runtime, "warmup_s": 0.5,
    "oxblob_backend": backend[0], "oxblob_direct_io": backend[1],
    "cases": results,
    "malloc_randread_4k_qd32": {"iops": [m["iops"] for m in malloc], "iops_median": malloc_med,
                                "target_iops": target, "met": malloc_med >= target},
}
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
print(f"\nJSON written to {out}")
PY
