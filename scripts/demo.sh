#!/usr/bin/env bash
# make demo: the pipeline end to end on local defaults. Run inside scripts/env.sh, which
# provides PostgreSQL and a local S3 API (moto).
#
# 1. builds a ToteSys-shaped source database with generated data (DEMO_SCALE, default 1 =
#    the real volumes, about 48,000 rows);
# 2. runs the pipeline's state machine (terraform/state_machine.asl.json) in moto's Step
#    Functions, which invokes the real ingest, transform and load Lambdas through the Lambda
#    runtime interface (cargo lambda watch): lock, ingest once per table, skip rules, payload
#    passing, all as deployed; shows what landed in S3 and summarises the warehouse (rows per table,
#    sales by month and currency);
# 3. changes some source rows (new orders, payments paid, a staff member and a department
#    renamed) and runs again: only those rows are picked up, the department's staff are
#    re-emitted in dim_staff, and the load updates and appends exactly that;
# 4. runs once more with nothing new: the state machine skips transform and load;
# 5. declared datasets: trip CSVs (datasets/trips.json) already in a landing bucket are
#    ingested by the first-load state machine (terraform/dataset_backfill.asl.json, its
#    Distributed Map run by moto, twice: the second ingests nothing); new ones land; ingest runs
#    on one file's notification (twice: nothing doubles), the sweep finds the files whose
#    notifications were lost; an encrypted orders export (datasets/exported_orders.json) lands
#    too, its payloads decrypted with KMS (moto's); the next execution publishes them to the
#    lake and loads their tables, the trips' weekly-average view and the analysts' question;
#    the lake and the warehouse are checked to hold the same trips, and the warehouse the
#    export's orders as decrypted, its corrupt records in quarantine; open data lands too (an
#    air-quality workbook, a bike-counts CSV), and the lake is checked against the files;
# 6. operates it with etl: status after each run, snapshots checked, a replay planned.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scale=${DEMO_SCALE:-1}
lag=${INGEST_SAFETY_LAG_SECONDS:-5}
"$root/scripts/venv.sh" requirements-dev.txt requirements-lambda.txt requirements-demo.txt
export PATH="$root/.venv/bin:$PATH"
build="$root/.build/demo"
mkdir -p "$build"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

watch_pid=""
sfn_pid=""
soda_pid=""
trap 'for p in $watch_pid $sfn_pid $soda_pid; do kill "$p" 2>/dev/null; done; true' EXIT

step "Source: a ToteSys database with generated data (scale $scale)"
db=totesys_demo
psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
source_url="${TEST_DATABASE_URL%/*}/$db"
psql "$source_url" -q -f tests/fixtures/oltp_schema.sql
psql "$source_url" -q -v scale="$scale" -f sql/generate_source.sql
psql "$source_url" -c "SELECT relname AS table, n_live_tup AS rows FROM pg_stat_user_tables ORDER BY relname"
warehouse=totesys_demo_warehouse
psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $warehouse WITH (FORCE)" -c "CREATE DATABASE $warehouse"
warehouse_url="${TEST_DATABASE_URL%/*}/$warehouse"
psql "$warehouse_url" -q -f sql/warehouse_schema.sql -f sql/warehouse_views.sql
echo "warehouse: the empty star schema (sql/warehouse_schema.sql) and the brief's materialized"
echo "views (sql/warehouse_views.sql) in database $warehouse"

stamp=$(date +%s)
bucket="totesys-demo-ingest-$stamp"
processed="totesys-demo-processed-$stamp"
landing="totesys-demo-landing-$stamp"
python - "$bucket" "$processed" "$landing" <<'EOF'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for name in sys.argv[1:]:
    s3.create_bucket(Bucket=name,
                     CreateBucketConfiguration={"LocationConstraint": os.environ["AWS_REGION"]})
EOF
echo "ingest bucket: s3://$bucket, processed bucket: s3://$processed, landing bucket:"
echo "s3://$landing (on $AWS_ENDPOINT_URL)"

step "Building the Lambdas and starting the runtime emulator (cargo lambda watch)"
cargo build -q -p ingest -p transform -p load -p etl
# The local open-data API the NYC datasets (datasets/nyc_*.json) are paged from, with a portal's
# faults: every 9th request throttled (429), every 13th failing (500). Its app token is in the
# local Secrets Manager under the declared secret; ingest reads it there.
soda_token=demo-app-token
python3 tests/soda/server.py --crashes 300 --token "$soda_token" --throttle-every 9 \
  --fail-every 13 >"$build/soda.port" 2>"$build/soda.log" &
soda_pid=$!
for _ in $(seq 1 50); do [[ -s "$build/soda.port" ]] && break; sleep 0.1; done
soda_url="http://127.0.0.1:$(head -n 1 "$build/soda.port")"
python scripts/demo_api.py secret nyc-open-data-app-token "$soda_token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env_vars="SOURCE_DB_URL=$source_url,INGEST_BUCKET=$bucket,INGEST_SAFETY_LAG_SECONDS=$lag"
env_vars+=",PROCESSED_BUCKET=$processed,WAREHOUSE_DB_URL=$warehouse_url,LANDING_BUCKET=$landing"
env_vars+=",AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL,AWS_REGION=$AWS_REGION"
env_vars+=",AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
env_vars+=",AWS_EC2_METADATA_DISABLED=true,AWS_LAMBDA_LOG_FORMAT=JSON,API_BASE_URL=$soda_url"
# Small bounds, so that the demo's first run shows tables' windows cut into several files and
# large files taking the load's bulk path. The emulator hands each invocation a deadline
# already past (the Lambdas log remaining_ms 0), so each does its one unit of work and
# returns the rest: the runs walk the state machine's loops file by file.
env_vars+=",INGEST_MAX_ROWS_PER_FILE=${DEMO_MAX_ROWS_PER_FILE:-4000}"
env_vars+=",LOAD_BULK_MIN_ROWS=${DEMO_BULK_MIN_ROWS:-2000},DEADLINE_MARGIN_SECONDS=5"
cargo lambda watch --ignore-changes --invoke-address 127.0.0.1 --invoke-port "$port" \
  --env-var "$env_vars" >"$build/watch.log" 2>&1 &
watch_pid=$!

# What the state machine does, done by the state machine itself: its definition
# (terraform/state_machine.asl.json) runs in a second moto, whose Lambda invocations go to the
# real functions behind cargo lambda watch (scripts/moto_server.py, LAMBDA_FORWARD_URL).
sfn_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Its Distributed Map's ItemReader lists the landing bucket in the first moto, where the data is.
LAMBDA_FORWARD_URL="http://127.0.0.1:$port" MOTO_PORT="$sfn_port" ITEM_READER_S3_ENDPOINT_URL="$AWS_ENDPOINT_URL" \
  python scripts/moto_server.py -H 127.0.0.1 -p "$sfn_port" >"$build/moto-sfn.log" 2>&1 &
sfn_pid=$!
sfn() { AWS_ENDPOINT_URL="http://127.0.0.1:$sfn_port" python scripts/demo_state_machine.py "$@"; }

# The operator's command (crates/etl), with the Lambdas' settings.
etl() {
  INGEST_BUCKET="$bucket" PROCESSED_BUCKET="$processed" SOURCE_DB_URL="$source_url" \
    WAREHOUSE_DB_URL="$warehouse_url" LANDING_BUCKET="$landing" target/debug/etl "$@"
}

# etl status; its exit code 2 (a table behind) is reported, anything else but 0 stops the demo.
status() {
  echo "-- etl status"
  local rc=0
  etl status "$@" || rc=$?
  case $rc in
    0) ;;
    2) echo "   (exit 2: a table is behind)" ;;
    *) exit "$rc" ;;
  esac
}

pipeline() {
  local run=$1 rows=${2:-0}
  rm -rf "${build:?}/$run"
  mkdir -p "$build/$run"
  echo "-- one execution of the state machine"
  sfn run "$build/state-machine.json" "$build/$run"
  if [[ -f "$build/$run/ingest.json" ]]; then
    echo "-- what ingest wrote (one invocation per table: the Map state)"
    python scripts/show_s3.py "$build/$run/ingest.json" --rows "$rows"
  fi
  if [[ -f "$build/$run/transform.json" ]]; then
    echo "-- what transform wrote (its event: the list of the tables' outputs)"
    python scripts/show_s3.py "$build/$run/transform.json" --rows "$rows"
  fi
  if [[ -f "$build/$run/load.json" ]]; then
    echo "-- what load did (its event: transform's output)"
    python -c 'import json,sys; out = json.load(open(sys.argv[1]))
print("  rows inserted or updated:", ", ".join(f"{t} {n}" for t, n in out["loaded"].items()) or "none")
print("  files already loaded, skipped:", len(out["skipped_files"]))
views = out.get("refreshed_views", [])
print("  materialized views refreshed:", ", ".join("%s (%.0f ms%s)" % (
    v["view"], v["seconds"] * 1000, "" if v["concurrently"] else ", plainly") for v in views) or "none")' \
      "$build/$run/load.json"
  fi
  status
}

for p in "$port" "$sfn_port"; do
  for _ in $(seq 1 120); do
    if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then break; fi
    sleep 1
  done
done

step "The state machine, deployed into moto's Step Functions (the definition Terraform deploys)"
sfn deploy "$build/state-machine.json"

step "Run 1: every table, from the beginning"
pipeline run1

step "The warehouse after run 1"
psql "$warehouse_url" -f sql/warehouse_summary.sql

step "Changing the source: 20 new sales orders, 30 payments paid, a staff member and a department renamed"
psql "$source_url" -q -f sql/demo_changes.sql
echo "waiting out the ${lag}s safety lag, so the new stamps fall inside the next window"
sleep "$((${lag%.*} + 1))"
echo "the source is now ahead of the watermarks of the tables it changed:"
status --max-lag 1s

step "Run 2: an incremental run picks up exactly those rows"
pipeline run2 2

step "What changed in the warehouse, through its views (refreshed by the load)"
psql "$warehouse_url" -c "SELECT * FROM orders_by_staff
                           WHERE department_name LIKE '% & Returns' OR staff_id = 1
                           ORDER BY staff_id LIMIT 6" \
  -c "SELECT * FROM payments_by_day_currency
      WHERE payment_type_name = 'SALES_RECEIPT' AND payments_settled > 0
      ORDER BY payment_date DESC, currency_code LIMIT 6" \
  -c "SELECT table_name, count(*) AS files, sum(rows) AS rows, sum(changed) AS changed
      FROM totesys_load_ledger GROUP BY table_name ORDER BY table_name"

step "Asking the lake: the same question from the processed Parquet (DuckDB here, Athena on AWS)"
python scripts/lake_query.py "$processed" "$warehouse_url"

step "Run 3: nothing changed"
pipeline run3

step "A declared dataset: trip files landing in S3 (datasets/trips.json)"
# One invocation of ingest, as S3 or EventBridge makes it, and a summary of what it did.
ingest_dataset() {
  cargo lambda invoke ingest --invoke-address 127.0.0.1 --invoke-port "$port" --data-ascii "$1" |
    python scripts/demo_datasets.py summary
}
python scripts/demo_datasets.py land "$landing" landing/trips/archive/2018-04- 12 500 11 >"$build/archive.txt"
echo "-- a first load: $(wc -l <"$build/archive.txt") trip files already in s3://$landing/landing/trips/archive/"
echo "   when the dataset is declared, ingested by the first-load state machine"
echo "   (terraform/dataset_backfill.asl.json): a Distributed Map over the prefix, each child"
echo "   execution invoking ingest with a batch of keys until the batch is in (the emulator's"
echo "   deadline is past at once, so each invocation takes one file)"
sfn backfill "$landing" landing/trips/archive/ 4 3
python scripts/demo_datasets.py raw-files "$bucket" trips
echo "-- the same first load started again: every file is in, so each batch's invocation skips"
echo "   its files and nothing more is written"
sfn backfill "$landing" landing/trips/archive/ 4 3
python scripts/demo_datasets.py raw-files "$bucket" trips
python scripts/demo_datasets.py land "$landing" landing/trips/2018-05- 3 2000 >"$build/landed.txt"
echo "-- then new files land under s3://$landing/landing/trips/:"
sed 's/^/   /' "$build/landed.txt"
first=$(head -n 1 "$build/landed.txt")
echo "-- ingest on the first file's ObjectCreated notification"
ingest_dataset "$(python scripts/demo_datasets.py notification "$landing" "$first")"
echo "-- the same notification delivered again"
ingest_dataset "$(python scripts/demo_datasets.py notification "$landing" "$first")"
echo "-- the other files' notifications were lost: the scheduled sweep finds them (the"
echo "   emulator's deadline is past at once, so each invocation takes one file)"
while :; do
  rc=0
  ingest_dataset '{"datasets": ["trips"]}' || rc=$?
  [[ $rc == 3 ]] || break
done
[[ $rc == 0 ]] || exit "$rc"

echo "-- an encrypted export lands (datasets/exported_orders.json): each record's payload"
echo "   encrypted with a data key KMS holds under alias/totesys-exports"
export_key=landing/exports/orders/2024-11-14.jsonl.gz
python scripts/demo_datasets.py export "$landing" "$export_key" "$build/export-expected.json"
ingest_dataset "$(python scripts/demo_datasets.py notification "$landing" "$export_key")"

echo "-- open data lands (datasets/air_quality.json, datasets/bike_counts.json): a month's"
echo "   air-quality workbook and a day of bike counts, each notified"
python scripts/demo_datasets.py opendata "$landing" >"$build/opendata.txt"
while read -r key; do
  echo "   $key"
  ingest_dataset "$(python scripts/demo_datasets.py notification "$landing" "$key")"
done <"$build/opendata.txt"

step "A paged HTTP API: New York City's collisions (datasets/nyc_*.json) from a local SODA server"
# One invocation at a time until ingest reports the work asked for done (the emulator's
# deadline is past at once, so each reads a page and commits it).
# A sweep-style event goes on with the datasets ingest says are left, as the state machine
# goes on with `remaining`; a range's event is run again as it is.
until_read() {
  local rc event=$1 out
  while :; do
    rc=0
    out=$(cargo lambda invoke ingest --invoke-address 127.0.0.1 --invoke-port "$port" \
      --data-ascii "$event")
    python scripts/demo_datasets.py summary <<<"$out" || rc=$?
    [[ $rc == 3 ]] || return "$rc"
    if [[ $event == '{"datasets"'* ]]; then
      event=$(python -c 'import json,sys; print(json.dumps({"datasets": json.load(sys.stdin)["remaining"]["datasets"]}))' <<<"$out")
    fi
  done
}
echo "-- the crashes' first load, run by the API datasets' state machine"
echo "   (terraform/dataset_api.asl.json): ingest plans the window in ranges of about as many"
echo "   records each, at least four pages a range (one range for the demo's 300 crashes;"
echo "   datasets/nyc_crashes.json asks for 8 when a window holds 160,000 crashes or more), and"
echo "   a Map reads the ranges, each invocation committing its page in the dataset's state"
sfn api nyc_crashes 2
echo "-- the vehicles and persons by a run of their schedule (every range in one invocation)"
until_read '{"datasets": ["nyc_vehicles", "nyc_persons"]}'
echo "-- the next day: 20 new crashes, 10 old ones amended (an injury found later, a borough"
echo "   filled in); the daily run reads the window since the last one's end"
python scripts/demo_api.py admin "$soda_url" "add?crashes=20" >/dev/null
python scripts/demo_api.py admin "$soda_url" "amend?crashes=10" >/dev/null
sleep 11 # the declared lag: changes of the last 10 s are for the next run
until_read '{"datasets": ["nyc_crashes", "nyc_vehicles", "nyc_persons"]}'
echo "-- the same run again: its window holds only the lookback's records (the last hour's),"
echo "   read again and changing nothing"
until_read '{"datasets": ["nyc_crashes", "nyc_vehicles", "nyc_persons"]}'
echo "-- what the server answered, by status: $(python scripts/demo_api.py stats "$soda_url")"

step "Run 4: transform publishes the datasets' files to the lake, load writes their tables"
pipeline run4
echo "-- the weekly average per region (a materialized view the load refreshes), and which"
echo "   regions have the cheap_mobile datasource"
psql "$warehouse_url" -c "SELECT * FROM trips_weekly_average ORDER BY region" \
  -c "SELECT DISTINCT region FROM trips WHERE datasource = 'cheap_mobile' ORDER BY region"
echo "-- the bad rows, quarantined with their place and reason"
python scripts/demo_datasets.py quarantine "$bucket" trips
echo "-- the lake (DuckDB over the processed zone's Parquet) against the warehouse"
python scripts/demo_datasets.py check "$processed" "$warehouse_url"
echo "-- the encrypted export: the orders as decrypted, and the corrupt records in quarantine"
python scripts/demo_datasets.py check-export "$build/export-expected.json" "$warehouse_url"
psql "$warehouse_url" -c "SELECT currency, status, count(*) AS orders, sum(amount) AS amount
                          FROM exported_orders GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 6"
python scripts/demo_datasets.py quarantine "$bucket" exported_orders
echo "-- open data: the lake (DuckDB over the processed Parquet) against the landed files"
python scripts/demo_datasets.py check-opendata "$landing" "$processed"
psql "$warehouse_url" -c "SELECT * FROM air_quality_monthly ORDER BY station_id, month"
python scripts/demo_datasets.py quarantine "$bucket" air_quality
python scripts/demo_datasets.py quarantine "$bucket" bike_counts
echo "-- NYC collisions: the server's rows against the warehouse and the lake (amended crashes"
echo "   in their latest version, each key once), and persons injured per borough per month"
echo "   (a view joining persons to vehicles to crashes)"
python scripts/demo_api.py check "$soda_url" "$warehouse_url" "$processed"
psql "$warehouse_url" -c "SELECT * FROM nyc_injured_by_borough_month ORDER BY month, borough LIMIT 8"

step "Operating it: etl (crates/etl) checks transform's snapshots, plans a replay, reads quarantine"
echo "-- etl rebuild-snapshots --dry-run: each snapshot re-derived from the raw zone"
etl rebuild-snapshots --dry-run
echo "-- etl replay --table sales_order --since <yesterday> --dry-run"
etl replay --table sales_order --since "$(date -u -d yesterday +%F)" --dry-run
echo "-- etl quarantine list"
etl quarantine list

step "Structured log lines of run 2 (one per table ingested, per output transformed, per file loaded)"
grep -h '"message":"ingested"' "$build/watch.log" | grep -v '"rows":0,' | tail -n 3 || true
grep -h '"message":"transformed"' "$build/watch.log" | tail -n 3 || true
grep -h '"message":"loaded"' "$build/watch.log" | tail -n 3 || true
echo "-- progress lines of run 1 (a split table's files, a load's files) and metric lines (EMF)"
grep -h '"message":"progress"' "$build/watch.log" | head -n 2 || true
grep -h '"_aws"' "$build/watch.log" | grep '"FreshnessLagSeconds"' | tail -n 1 || true
grep -h '"_aws"' "$build/watch.log" | grep '"ChangedRows"' | tail -n 1 || true
