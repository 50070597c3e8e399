#!/usr/bin/env bash
# make bench: throughput and peak memory of ingest, transform and load, each run on the previous
# one's output, beside raw binary COPY baselines measured in the same run: ingest and transform
# beside a `COPY (the new-entries queries) TO STDOUT` of the source, load beside a `COPY ... FROM
# STDIN` of the same warehouse rows into an empty warehouse. At BENCH_SCALE (default 21: about 1M
# rows over the 11 tables) and at 5x that, to show memory stays flat as tables grow;
# BENCH_REPEATS (default 5) runs of each, medians reported. Run inside scripts/env.sh. Never
# part of make test.
#
# Both sides run in the same client library and process model; the Lambdas' times include the
# local S3 API (moto, on the same two cores), which the baselines do not touch.
#
# After the first run's load at each scale, the warehouse's materialized views
# (sql/warehouse_views.sql): the time to create them over the loaded warehouse, and each one's
# REFRESH ... CONCURRENTLY, what a load adds after its files when the view's tables changed.
#
# Then a declared dataset (datasets/trips.json): a generated trips CSV of BENCH_CSV_MB (default
# 1024; empty skips it) through the dataset reader alone (local file to local Parquet, beside
# DuckDB's COPY (FROM read_csv(...)) TO '...parquet' on the same file), through ingest (landing
# bucket to raw zone, S3 to S3), and through the load into the trips table, beside psql's \copy
# of the same rows (exported from the loaded table) into an identical empty table;
# BENCH_CSV_REPEATS (default 3) runs, medians reported, with the CPU time of DuckDB, the reader,
# ingest, and moto while ingest runs (it serves the GET and stores the parts on the same cores).
#
# Then an API dataset's first load beside a plain client (below).
#
# Then the backfill (scripts/bench_backfill.py): sources of about 1M and 25M rows
# (BENCH_BACKFILL_SCALES, default "21 525"), each ingested, transformed and loaded into an
# empty warehouse as the state machine runs it, with each invocation's deadline 15 minutes and
# 60 s away (BENCH_BACKFILL_DEADLINES, default "900 60"; the margin 60 s, or a third of a
# shorter deadline), at the Lambdas' default file bound and bulk threshold;
# BENCH_BACKFILL_SCALES= (empty) skips it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scales=${BENCH_SCALES-"${BENCH_SCALE:-21} $(( ${BENCH_SCALE:-21} * 5 ))"}
repeats=${BENCH_REPEATS:-5}
cargo build --release -q -p totesys-tests --bin bench
bench="$root/target/release/bench"
out="$root/.build/bench"
dump="$out/dump"
mkdir -p "$out" "$dump"

# Creates the buckets named, in the local S3 API.
buckets() {
  "$root/.venv/bin/python" -c "import os,sys,boto3; [boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']).create_bucket(Bucket=b, CreateBucketConfiguration={'LocationConstraint': os.environ['AWS_REGION']}) for b in sys.argv[1:]]" "$@"
}

# Seconds since START (date +%s%N).
since() { python3 -c "import sys,time; print(f'{(time.time_ns() - int(sys.argv[1])) / 1e9:.3f}')" "$1"; }
# moto's CPU time so far, user and system, in seconds (USER_HZ: 100 ticks a second); nothing
# when env.sh did not start it (MOTO_PID).
moto_cpu_seconds() {
  [[ -n "${MOTO_PID:-}" ]] || return 0
  python3 -c "import sys; f = open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split(); print((int(f[11]) + int(f[12])) / 100)" "$MOTO_PID"
}

# The views over the warehouse at URL: one JSON line, the seconds to create them and to refresh
# each concurrently.
views_bench() {
  local url=$1 start refresh="" view
  start=$(date +%s%N)
  psql "$url" -q -f sql/warehouse_views.sql
  local created
  created=$(since "$start")
  for view in $(psql "$url" -XAtc "SELECT matviewname FROM pg_matviews ORDER BY 1"); do
    start=$(date +%s%N)
    psql "$url" -qc "REFRESH MATERIALIZED VIEW CONCURRENTLY $view"
    refresh+="${refresh:+,}\"$view\":$(since "$start")"
  done
  echo "{\"mode\":\"views\",\"create_seconds\":$created,\"refresh_seconds\":{$refresh}}"
}

# A fresh database DB (its URL in $url) holding a generated source at scale SCALE.
source_db() {
  local db=$1 scale=$2
  psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  url="${TEST_DATABASE_URL%/*}/$db"
  echo "== $db: generating the source at scale $scale" >&2
  psql "$url" -q -f tests/fixtures/oltp_schema.sql
  psql "$url" -q -v scale="$scale" -f sql/generate_source.sql
}

for scale in $scales; do
  db="totesys_bench_$scale"
  source_db "$db" "$scale"
  # An unrecorded pass, so neither side pays for cold caches.
  "$bench" copy "$url" >/dev/null
  for i in $(seq 1 "$repeats"); do
    wh="totesys_bench_wh_${scale}_$i"
    "$bench" copy "$url" | sed "s/^/{\"scale\":$scale,\"run\":$i,\"r\":/; s/$/}/"
    bucket="bench-$scale-$i-$(date +%s%N)"
    processed="$bucket-processed"
    buckets "$bucket" "$processed"
    "$bench" ingest "$url" "$bucket" | sed "s/^/{\"scale\":$scale,\"run\":$i,\"r\":/; s/$/}/"
    "$bench" transform "$bucket" "$processed" | sed "s/^/{\"scale\":$scale,\"run\":$i,\"r\":/; s/$/}/"
    # The load into an empty warehouse, then its baseline: the same rows by raw COPY FROM.
    for w in "$wh" "${wh}_copy" "${wh}_limit"; do
      psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $w WITH (FORCE)" -c "CREATE DATABASE $w"
      psql "${TEST_DATABASE_URL%/*}/$w" -q -f sql/warehouse_schema.sql
    done
    "$bench" load "$processed" "${TEST_DATABASE_URL%/*}/$wh" | sed "s/^/{\"scale\":$scale,\"run\":$i,\"r\":/; s/$/}/"
    "$bench" copyin "${TEST_DATABASE_URL%/*}/$wh" "${TEST_DATABASE_URL%/*}/${wh}_copy" "$dump" | sed "s/^/{\"scale\":$scale,\"run\":$i,\"r\":/; s/$/}/"
    "$bench" copylimit "${TEST_DATABASE_URL%/*}/$wh" "${TEST_DATABASE_URL%/*}/${wh}_limit" "$dump" | sed "s/^/{\"scale\":$scale,\"run\":$i,\"r\":/; s/$/}/"
    if [[ $i == 1 ]]; then
      views_bench "${TEST_DATABASE_URL%/*}/$wh" | sed "s/^/{\"scale\":$scale,\"run\":$i,\"r\":/; s/$/}/"
    fi
    psql "$TEST_DATABASE_URL" -qc "DROP DATABASE $wh WITH (FORCE)" -c "DROP DATABASE ${wh}_copy WITH (FORCE)" \
      -c "DROP DATABASE ${wh}_limit WITH (FORCE)"
    rm -f "$dump"/*.bin
  done
  psql "$TEST_DATABASE_URL" -qc "DROP DATABASE $db WITH (FORCE)"
done | tee "$out/results.jsonl" >/dev/null

[[ -z "$scales" ]] || python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
# The Lambdas' own EMF metric lines go to standard output too: only the bench's lines count.
rows = [r for r in (json.loads(l) for l in open(sys.argv[1])) if "mode" in r["r"]]
print(f"{'scale':>5} {'mode':<9} {'rows':>9} {'MB I/O':>8} {'s (median)':>10} {'rows/s':>10} {'peak RSS MB':>11}")
summary = {}
for scale in sorted({r["scale"] for r in rows}):
    for mode in ("copy", "ingest", "transform", "load", "copyin", "copylimit"):
        runs = [r["r"] for r in rows if r["scale"] == scale and r["r"]["mode"] == mode]
        secs = statistics.median(r["seconds"] for r in runs)
        rss = max(r["peak_rss_mb"] for r in runs)
        summary[(scale, mode)] = (secs, rss)
        print(f"{scale:>5} {mode:<9} {runs[0]['rows']:>9} {runs[0]['bytes']/1e6:>8.1f} {secs:>10.2f} "
              f"{runs[0]['rows']/secs:>10,.0f} {rss:>11.1f}")
    c, i, t, l, ci, cl = (summary[(scale, m)] for m in ("copy", "ingest", "transform", "load", "copyin", "copylimit"))
    print(f"      ingest / raw COPY TO wall time: {i[0]/c[0]:.2f}x; transform / raw COPY TO: {t[0]/c[0]:.2f}x; "
          f"load / raw COPY FROM (copyin): {l[0]/ci[0]:.2f}x; "
          f"load / physical limit (copylimit): {l[0]/cl[0]:.2f}x")
    readers = [r["r"] for r in rows if r["scale"] == scale and r["r"]["mode"] == "reader"]
    print(f"      a reader joining fact_sales_order to dim_date in a loop during the load: "
          f"longest query {max(r['longest_seconds'] for r in readers):.3f} s "
          f"({sum(r['queries'] for r in readers)} queries)")
for r in rows:
    if r["r"]["mode"] == "views":
        refresh = ", ".join(f"{v} {s:.2f}" for v, s in r["r"]["refresh_seconds"].items())
        print(f"{r['scale']:>5} views: created in {r['r']['create_seconds']:.2f} s; "
              f"REFRESH CONCURRENTLY, s: {refresh}")
scales = sorted({r["scale"] for r in rows})
if len(scales) > 1:
    for mode in ("ingest", "transform", "load"):
        a, b = summary[(scales[0], mode)][1], summary[(scales[-1], mode)][1]
        print(f"{mode} peak RSS at scale {scales[-1]} vs {scales[0]}: {b:.1f} MB vs {a:.1f} MB ({b/a:.2f}x)")
PY

csv_mb=${BENCH_CSV_MB-1024}
if [[ -n "$csv_mb" ]]; then
  "$root/scripts/venv.sh" requirements-dev.txt requirements-demo.txt
  csv="$out/trips.csv"
  echo "== trips: generating a ${csv_mb} MB CSV" >&2
  "$bench" gencsv "$csv" "$csv_mb" >/dev/null
  landing="bench-landing-$(date +%s%N)"
  buckets "$landing"
  "$root/.venv/bin/python" -c "import os,sys,boto3; boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']).upload_file(sys.argv[1], sys.argv[2], 'landing/trips/bench.csv')" "$csv" "$landing"
  sync
  for i in $(seq 1 "${BENCH_CSV_REPEATS:-3}"); do
    echo "== trips: run $i" >&2
    "$root/.venv/bin/python" - "$csv" "$out/duckdb.parquet" <<'PY2'
import json, os, resource, sys, time
import duckdb
csv, parquet = sys.argv[1:]
started, cpu = time.time(), time.process_time()
duckdb.sql(f"COPY (FROM read_csv('{csv}')) TO '{parquet}' (FORMAT parquet)")
seconds, cpu = time.time() - started, time.process_time() - cpu
rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{parquet}')").fetchall()[0][0]
print(json.dumps({"mode": "duckdb", "rows": rows, "bytes": os.path.getsize(csv), "seconds": seconds,
                  "rows_per_s": rows / seconds, "cpu_s": cpu,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
PY2
    "$bench" csvlocal "$csv" "$out/trips.parquet"
    raw="bench-trips-$i-$(date +%s%N)"
    buckets "$raw" "$raw-processed"
    # moto's CPU time while ingest runs: it serves the GET and stores the parts on the same
    # two cores.
    moto_cpu=$(moto_cpu_seconds)
    "$bench" csvingest "$landing" "$raw" landing/trips/bench.csv
    if [[ -n "$moto_cpu" ]]; then
      echo "{\"mode\":\"moto\",\"cpu_s\":$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$moto_cpu" "$(moto_cpu_seconds)")}"
    fi
    wh="totesys_bench_trips_$i"
    psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $wh WITH (FORCE)" -c "CREATE DATABASE $wh"
    whurl="${TEST_DATABASE_URL%/*}/$wh"
    psql "$whurl" -q -f sql/warehouse_schema.sql
    "$bench" csvload "$raw" "$raw-processed" "$whurl"
    # The baseline: the same rows, exported as CSV (not timed), by \copy into an identical table.
    psql "$whurl" -qc "CREATE TABLE trips_copy (LIKE trips INCLUDING ALL)" \
      -c "\\copy trips TO '$out/trips-export.csv' (FORMAT csv)"
    start=$(date +%s%N)
    psql "$whurl" -qc "\\copy trips_copy FROM '$out/trips-export.csv' (FORMAT csv)"
    seconds=$(since "$start")
    rows=$(psql "$whurl" -XAtc "SELECT count(*) FROM trips_copy")
    echo "{\"mode\":\"copycsv\",\"rows\":$rows,\"bytes\":$(stat -c %s "$out/trips-export.csv"),\"seconds\":$seconds,\"peak_rss_mb\":0}"
    # The next run starts on a quiet server: the gigabytes just written flushed now, not
    # while it runs.
    psql "$TEST_DATABASE_URL" -qc "DROP DATABASE $wh WITH (FORCE)" -c "CHECKPOINT"
    rm -f "$out/trips-export.csv" "$out/duckdb.parquet" "$out/trips.parquet"
    sync
  done | grep '^{"mode"' | tee "$out/trips.jsonl" >/dev/null
  rm -f "$csv"
  python3 - "$out/trips.jsonl" <<'PY2'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print()
print(f"{'trips CSV':<10} {'rows':>10} {'MB in':>8} {'s (median)':>10} {'rows/s':>10} {'MB/s':>7} {'peak RSS MB':>11}")
med = {}
for mode in ("duckdb", "csvlocal", "csvingest", "csvload", "copycsv"):
    rs = [r for r in runs if r["mode"] == mode]
    secs = statistics.median(r["seconds"] for r in rs)
    med[mode] = secs
    rss = max(r["peak_rss_mb"] for r in rs)
    print(f"{mode:<10} {rs[0]['rows']:>10} {rs[0]['bytes']/1e6:>8.1f} {secs:>10.2f} {rs[0]['rows']/secs:>10,.0f} "
          f"{rs[0]['bytes']/1e6/secs:>7.1f} {rss if rss else float('nan'):>11.1f}")
print(f"           reader / DuckDB (local file to Parquet): {med['csvlocal']/med['duckdb']:.2f}x; "
      f"ingest (S3 to S3) / DuckDB: {med['csvingest']/med['duckdb']:.2f}x; "
      f"load / \\copy csv: {med['csvload']/med['copycsv']:.2f}x")
cpu = {m: statistics.median(r["cpu_s"] for r in runs if r["mode"] == m and "cpu_s" in r)
       for m in ("duckdb", "csvlocal", "csvingest", "moto") if any(r["mode"] == m and "cpu_s" in r for r in runs)}
if cpu:
    print("           CPU s (median): " + ", ".join(f"{m} {s:.2f}" for m, s in cpu.items())
          + " (moto: while ingest runs, on the same cores)")
PY2
fi

# An API dataset's first load (datasets/nyc_persons.json) from the local SODA server
# (tests/soda/server.py, BENCH_API_CRASHES crashes, default 20000: about 60k persons), beside a
# plain client fetching the same keyset pages one after the other as fast as the server serves
# them; then ingest by offset and from CSV pages. BENCH_API_REPEATS (default 3) runs, medians
# reported. BENCH_API_CRASHES= skips it.
api_crashes=${BENCH_API_CRASHES-20000}
if [[ -n "$api_crashes" ]]; then
  token=bench-app-token
  python3 tests/soda/server.py --crashes "$api_crashes" --token "$token" >"$out/soda.port" &
  soda_pid=$!
  trap 'kill $soda_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 600); do [[ -s "$out/soda.port" ]] && break; sleep 0.1; done
  api="http://127.0.0.1:$(head -n 1 "$out/soda.port")"
  "$root/.venv/bin/python" scripts/demo_api.py secret nyc-open-data-app-token "$token"
  for i in $(seq 1 "${BENCH_API_REPEATS:-3}"); do
    raw="bench-api-$i-$(date +%s)"
    buckets "$raw"
    echo "== nyc_persons: the first load, run $i" >&2
    BENCH_API_TOKEN=$token "$bench" apiplain "$api" nyc_persons
    "$bench" apiingest "$api" "$raw" nyc_persons
    for variant in apioffset apicsv; do
      raw="bench-$variant-$i-$(date +%s)"
      buckets "$raw"
      "$bench" "$variant" "$api" "$raw" nyc_persons
    done
  done | grep '^{"mode"' | tee "$out/api.jsonl" >/dev/null
  kill "$soda_pid" 2>/dev/null || true
  python3 - "$out/api.jsonl" <<'PY2'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print()
print(f"{'NYC persons':<11} {'records':>9} {'MB':>7} {'s (median)':>10} {'records/s':>10} {'peak RSS MB':>11}")
med = {}
for mode in ("apiplain", "apiingest", "apioffset", "apicsv"):
    rs = [r for r in runs if r["mode"] == mode]
    secs = statistics.median(r["seconds"] for r in rs)
    med[mode] = rs[0]["rows"] / secs
    print(f"{mode:<11} {rs[0]['rows']:>9} {rs[0]['bytes']/1e6:>7.1f} {secs:>10.2f} {med[mode]:>10,.0f} "
          f"{max(r['peak_rss_mb'] for r in rs):>11.1f}")
print(f"            ingest's first load / the plain client: {med['apiingest']/med['apiplain']:.2f}x the records/s "
      "(goal: at least 0.8x); MB: the pages' JSON (plain), the Parquet written (ingest)")
print(f"            by offset: {med['apioffset']/med['apiplain']:.2f}x; from CSV pages: "
      f"{med['apicsv']/med['apiplain']:.2f}x (the plain client reads keyset JSON)")
PY2
fi

backfill_scales=${BENCH_BACKFILL_SCALES-21 525}
deadlines=${BENCH_BACKFILL_DEADLINES:-900 60}
[[ -n "$backfill_scales" ]] || exit 0
for scale in $backfill_scales; do
  db="totesys_backfill_$scale"
  source_db "$db" "$scale"
  source_url=$url
  psql "$source_url" -qc "VACUUM ANALYZE"
  rows=$(psql "$source_url" -XAtc "SELECT sum(n_live_tup) FROM pg_stat_user_tables")
  for deadline in $deadlines; do
    echo "== backfill of $rows rows, deadline ${deadline}s" >&2
    wh="totesys_backfill_wh_${scale}_${deadline}"
    psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $wh WITH (FORCE)" -c "CREATE DATABASE $wh"
    psql "${TEST_DATABASE_URL%/*}/$wh" -q -f sql/warehouse_schema.sql
    raw="backfill-$scale-$deadline-$(date +%s%N)"
    buckets "$raw" "$raw-processed"
    # The margin a deployment with that timeout would set: 60 s, or a third of a short one.
    margin=$(( deadline / 3 < 60 ? deadline / 3 : 60 ))
    SOURCE_DB_URL="$source_url" WAREHOUSE_DB_URL="${TEST_DATABASE_URL%/*}/$wh" \
      INGEST_BUCKET="$raw" PROCESSED_BUCKET="$raw-processed" INGEST_SAFETY_LAG_SECONDS=0 \
      DEADLINE_MARGIN_SECONDS="$margin" \
      "$root/.venv/bin/python" scripts/bench_backfill.py "$bench" "$deadline" \
      | sed "s/^/{\"scale\":$scale,\"source_rows\":$rows,\"r\":/; s/$/}/"
    psql "$TEST_DATABASE_URL" -qc "DROP DATABASE $wh WITH (FORCE)"
  done
  psql "$TEST_DATABASE_URL" -qc "DROP DATABASE $db WITH (FORCE)"
done | tee "$out/backfill.jsonl" >/dev/null

python3 - "$out/backfill.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print()
print(f"{'source rows':>11} {'deadline':>8} {'stage':<9} {'calls':>5} {'s (sum)':>8} {'rows/s':>9} "
      f"{'slowest s':>9} {'peak RSS MB':>11}")
for run in runs:
    r = run["r"]
    for name, st in r["stages"].items():
        rate = st["rows"] / st["seconds"] if st["seconds"] else 0
        print(f"{run['source_rows']:>11,} {r['deadline_seconds']:>7.0f}s {name:<9} {st['invocations']:>5} "
              f"{st['seconds']:>8.1f} {rate:>9,.0f} {st['slowest']:>9.1f} {st['peak_rss_mb']:>11.1f}")
    print(f"{'':>11} {'':>8} {r['rounds']} round(s), {r['wall_seconds']:.0f} s wall; every invocation "
          f"ended before its deadline: {r['every_invocation_ended_before_its_deadline']}; warehouse "
          f"equals source: {r['warehouse_equals_source']} {'' if r['warehouse_equals_source'] else r['checks']}")
PY
