"""make demo's declared dataset: trip files (datasets/trips.json) generated, landed in S3, and
the result checked from both ends.

  demo_datasets.py land LANDING_BUCKET PREFIX N_FILES ROWS [SEED]
      writes N_FILES generated trips CSVs at PREFIX + part-N.csv (a few trips reported twice,
      within a file and across files, and two bad rows in the first file) and prints their
      keys;
  demo_datasets.py raw-files INGEST_BUCKET DATASET
      how many raw files the dataset has;
  demo_datasets.py export LANDING_BUCKET KEY EXPECTED_JSON
      writes an encrypted orders export (datasets/exported_orders.json) at KEY: gzipped JSON
      Lines in two members, each record's payload encrypted (AES-256-GCM, an older batch in
      CTR) with a data key from KMS under alias/totesys-exports (made if missing), and a few
      corrupt records; the decrypted orders the warehouse must hold go to EXPECTED_JSON;
  demo_datasets.py check-export EXPECTED_JSON WAREHOUSE_URL
      exits non-zero unless the warehouse's exported_orders are the decrypted orders;
  demo_datasets.py notification LANDING_BUCKET KEY
      prints the S3 ObjectCreated notification of KEY;
  demo_datasets.py summary < INGEST_OUTPUT
      summarises an ingest invocation's output; exits 3 when it left files for another;
  demo_datasets.py quarantine INGEST_BUCKET DATASET
      prints a dataset's quarantined rows;
  demo_datasets.py check PROCESSED_BUCKET WAREHOUSE_URL
      reads the trips from the lake (the processed zone's Parquet, with DuckDB as Athena would)
      and from the warehouse's trips table, and exits non-zero unless they hold the same trips;
  demo_datasets.py opendata LANDING_BUCKET
      writes the open-data examples: a month's air-quality workbook (datasets/air_quality.json:
      a title above the header, date cells and day/month/year text, an "n/a" and a #DIV/0!)
      and a day of bike counts (datasets/bike_counts.json: semicolon-separated, a column the
      declaration ignores, a count of "-"), and prints their keys;
  demo_datasets.py check-opendata LANDING_BUCKET PROCESSED_BUCKET
      reads each open-data file back from the landing bucket (openpyxl, csv) and its rows from
      the lake (DuckDB over the processed Parquet, by the file each came from), and exits
      non-zero unless the lake holds every good row of each file and nothing else.
"""
import csv
import datetime
import io
import json
import os
import random
import subprocess
import sys
import tempfile

import boto3
import duckdb
import openpyxl
from decimal import Decimal, InvalidOperation

REGIONS = [("Prague", 14.42, 50.08), ("Turin", 7.68, 45.07), ("Hamburg", 9.99, 53.55)]
SOURCES = ["funny_car", "baba_car", "cheap_mobile", "pt_search_app", "bad_diesel_vehicles"]


def s3():
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))


def trip(rng: random.Random) -> str:
    region, lon, lat = rng.choice(REGIONS)
    source = rng.choice(SOURCES)
    if region == "Turin" and source == "cheap_mobile":
        source = "funny_car"
    o = (round(lon + rng.uniform(-0.5, 0.5), 6), round(lat + rng.uniform(-0.5, 0.5), 6))
    d = (round(lon + rng.uniform(-0.5, 0.5), 6), round(lat + rng.uniform(-0.5, 0.5), 6))
    when = f"2018-05-{rng.randint(1, 28):02} {rng.randint(0, 23):02}:{rng.randint(0, 59):02}:{rng.randint(0, 59):02}"
    return f"{region},POINT ({o[0]} {o[1]}),POINT ({d[0]} {d[1]}),{when},{source}"


def land(bucket: str, prefix: str, files: int, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    client = s3()
    previous: list[str] = []
    for n in range(files):
        lines = [trip(rng) for _ in range(rows)]
        lines += lines[:: max(rows // 20, 1)]  # reported twice within the file
        lines += previous[:10]  # and across files
        if n == 0:
            lines.append("Prague,POINT (14.4 50.0),POINT (14.4 50.1),28/05/2018 09:03,cheap_mobile")
            lines.append("Hamburg,POINT (9.9 53.5)")
        previous = lines
        body = "region,origin_coord,destination_coord,datetime,datasource\n" + "\n".join(lines) + "\n"
        key = f"{prefix}part-{n + 1}.csv"
        client.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="text/csv")
        print(key)


LAKE = """
SELECT DISTINCT region, origin_coord.lon, origin_coord.lat, destination_coord.lon,
       destination_coord.lat, datetime, datasource
FROM read_parquet('{root}/trips/*/*/*/*.parquet')
ORDER BY ALL
"""

WAREHOUSE = """
COPY (SELECT region, origin_coord[0], origin_coord[1], destination_coord[0], destination_coord[1],
             to_char(datetime, 'YYYY-MM-DD HH24:MI:SS'), datasource
      FROM trips ORDER BY 1, 2, 3, 4, 5, 6, 7) TO STDOUT (FORMAT csv)
"""


def download(client, bucket: str, prefix: str, root: str) -> list[str]:
    """Every object under `prefix` copied to the same key under the directory `root`: their keys."""
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    for key in keys:
        path = os.path.join(root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        client.download_file(bucket, key, path)
    return keys


def check(bucket: str, warehouse_url: str) -> int:
    client = s3()
    with tempfile.TemporaryDirectory() as root:
        keys = download(client, bucket, "trips/", root)
        lake = [
            (r[0], r[1], r[2], r[3], r[4], r[5].strftime("%Y-%m-%d %H:%M:%S"), r[6])
            for r in duckdb.sql(LAKE.format(root=root)).fetchall()
        ]
    out = subprocess.run(["psql", warehouse_url, "-qAtc", WAREHOUSE], check=True, capture_output=True, text=True)
    warehouse = []
    for line in out.stdout.splitlines():
        f = line.split(",")
        warehouse.append((f[0], float(f[1]), float(f[2]), float(f[3]), float(f[4]), f[5], f[6]))
    lake.sort()
    warehouse.sort()
    print(f"  lake: {len(keys)} Parquet files, {len(lake)} distinct trips; warehouse: {len(warehouse)} trips")
    if lake != warehouse:
        print("  the lake and the warehouse differ", file=sys.stderr)
        return 1
    print("  the same trips in both")
    return 0


def kms():
    return boto3.client("kms", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
                        region_name=os.environ.get("AWS_REGION"))


def export(bucket: str, key: str, expected_path: str) -> None:
    import base64
    import gzip

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    alias = "alias/totesys-exports"
    client = kms()
    if not any(a["AliasName"] == alias for a in client.list_aliases()["Aliases"]):
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        client.create_alias(AliasName=alias, TargetKeyId=key_id)
    b64 = lambda b: base64.b64encode(b).decode()
    rng = random.Random(11)
    batches = {mode: client.generate_data_key(KeyId=alias, KeySpec="AES_256") for mode in ("GCM", "CTR")}

    def record(payload: dict, mode: str, key: dict, key_id: str = alias) -> dict:
        plain = json.dumps(payload).encode()
        if mode == "GCM":
            iv = rng.randbytes(12)
            sealed = AESGCM(key["Plaintext"]).encrypt(iv, plain, None)
        else:
            iv = rng.randbytes(16)
            enc = Cipher(algorithms.AES(key["Plaintext"]), modes.CTR(iv)).encryptor()
            sealed = enc.update(plain) + enc.finalize()
        return {"payload": b64(sealed),
                "encryption": {"encrypted_key": b64(key["CiphertextBlob"]), "iv": b64(iv),
                               "key_id": key_id, "algorithm": f"AES-256-{mode}"},
                "exported_at": "2024-11-14T09:30:05Z"}

    lines, expected = [], {}
    for i in range(1000):
        mode = "CTR" if i < 300 else "GCM"
        created = (f"2024-11-{1 + i % 28:02}T10:{i % 60:02}:00+01:00" if i % 2 == 0
                   else f"{1 + i % 28:02}/11/2024 09:{i % 60:02}:00 +0000")
        order = {"order_id": i, "customer": f"customer-{i % 37}", "amount": f"{10 + i}.{i % 100:02}",
                 "currency": rng.choice(["GBP", "EUR", "USD"]), "status": rng.choice(["placed", "paid", "shipped"]),
                 "created_at": created}
        lines.append(record(order, mode, batches[mode]))
        expected[i] = [i, order["customer"], order["amount"], order["currency"], order["status"],
                       f"2024-11-{1 + i % 28:02} 09:{i % 60:02}:00+00"]
    bad = {"order_id": 5000, "customer": "c", "amount": "1.00", "currency": "GBP", "status": "paid",
           "created_at": "2024-11-01T10:00:00+00:00"}
    missing = record(bad, "GCM", batches["GCM"])
    del missing["payload"]
    tampered = record(bad, "GCM", batches["GCM"])
    tampered["payload"] = b64(b"tampered with on the way")
    late = dict(bad, created_at="yesterday")
    lines += [missing, tampered, record(bad, "GCM", batches["GCM"], "alias/someone-else"),
              record(late, "GCM", batches["GCM"])]
    body = b"".join(gzip.compress(("\n".join(json.dumps(r) for r in chunk) + "\n").encode())
                    for chunk in (lines[:500], lines[500:]))
    s3().put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/gzip")
    with open(expected_path, "w") as f:
        json.dump(list(expected.values()), f)
    print(f"   {key}: {len(lines)} records ({len(lines) - 1000} corrupt), {len(body)} bytes gzipped")


def check_export(expected_path: str, warehouse_url: str) -> int:
    expected = sorted(tuple(map(str, r)) for r in json.load(open(expected_path)))
    query = ("COPY (SELECT order_id, customer, amount, currency, status, "
             "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS+00') "
             "FROM exported_orders ORDER BY order_id) TO STDOUT (FORMAT csv)")
    out = subprocess.run(["psql", warehouse_url, "-qAtc", query], check=True, capture_output=True, text=True)
    found = sorted(tuple(line.split(",")) for line in out.stdout.splitlines())
    print(f"  warehouse: {len(found)} orders; the export: {len(expected)} decrypted orders")
    if found != expected:
        print("  they differ", file=sys.stderr)
        return 1
    print("  the same orders, decrypted, their dates in one format (UTC)")
    return 0


AIR_QUALITY = "opendata/environment/air_quality/2024-11.xlsx"
BIKE_COUNTS = "opendata/mobility/bike_counts/2024-11-05.csv"
STATIONS = [("ST01", "Town Hall"), ("ST02", "Harbour"), ("ST03", "Ring Road")]


def opendata(bucket: str) -> None:
    rng = random.Random(11)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Measurements"
    sheet["A1"] = "Daily air quality by station (generated for the demo)"
    sheet.append([])
    sheet.append(["station_id", "station_name", "measured_on", "pm25", "no2", "samples", "validated"])
    for day in range(1, 31):
        for n, (sid, name) in enumerate(STATIONS):
            on = datetime.date(2024, 11, day)
            measured = on.strftime("%d/%m/%Y") if day % 5 == 0 else on
            pm25 = "n/a" if (day, n) == (3, 1) else rng.randint(30, 900) / 10
            no2 = "#DIV/0!" if (day, n) == (4, 2) else (rng.randint(50, 900) / 10 if rng.random() > 0.15 else None)
            sheet.append([sid, name, measured, pm25, no2, rng.randint(18, 24), day < 15])
            if isinstance(measured, datetime.date):
                sheet.cell(sheet.max_row, 3).number_format = "dd/mm/yyyy"
    body = io.BytesIO()
    book.save(body)
    rows = ["counter_id;weather;counted_at;direction;bikes;temperature"]
    for counter in ("K01", "K02"):
        for hour in range(24):
            for direction in ("in", "out"):
                bikes = "-" if (counter, hour, direction) == ("K02", 7, "in") else str(rng.randint(0, 400))
                temperature = "" if hour == 3 else f"{rng.randint(-50, 250) / 10:.1f}"
                rows.append(f"{counter};cloudy;05.11.2024 {hour:02}:00;{direction};{bikes};{temperature}")
    client = s3()
    client.put_object(Bucket=bucket, Key=AIR_QUALITY, Body=body.getvalue())
    client.put_object(Bucket=bucket, Key=BIKE_COUNTS, Body=("\n".join(rows) + "\n").encode())
    print(AIR_QUALITY)
    print(BIKE_COUNTS)


def number(value, places: str):
    """A cell or field as the declared decimal, None when empty; raises when it is not one."""
    if value is None or value == "":
        return None
    return Decimal(str(value)).quantize(Decimal(places))


def source_rows(client, bucket: str, key: str) -> list[tuple]:
    """The good rows of a landed open-data file, as the declaration reads them."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    rows = []
    if key.endswith(".xlsx"):
        sheet = openpyxl.load_workbook(io.BytesIO(body), data_only=True)["Measurements"]
        for sid, name, on, pm25, no2, samples, validated in sheet.iter_rows(min_row=4, values_only=True):
            if isinstance(on, str):
                on = datetime.datetime.strptime(on, "%d/%m/%Y")
            try:
                rows.append((sid, name, on.date(), number(pm25, "0.1"), number(no2, "0.1"), samples, validated))
            except (InvalidOperation, ValueError):
                continue  # "n/a", "#DIV/0!": quarantined
    else:
        for r in csv.DictReader(io.StringIO(body.decode()), delimiter=";"):
            if not r["bikes"].isdigit():
                continue
            at = datetime.datetime.strptime(r["counted_at"], "%d.%m.%Y %H:%M")
            rows.append((r["counter_id"], at, r["direction"], int(r["bikes"]), number(r["temperature"], "0.1")))
    return sorted(rows, key=repr)


def check_opendata(landing: str, processed: str) -> int:
    client = s3()
    failed = 0
    with tempfile.TemporaryDirectory() as root:
        for dataset, key in (("air_quality", AIR_QUALITY), ("bike_counts", BIKE_COUNTS)):
            paths = [os.path.join(root, k) for k in download(client, processed, f"{dataset}/", root)]
            lake = []
            for path in paths:
                meta = dict(duckdb.sql(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{path}')").fetchall())
                if meta.get("source_file") == key:
                    lake += duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()
            lake = sorted((tuple(r) for r in lake), key=repr)
            source = source_rows(client, landing, key)
            same = lake == source
            failed += not same
            print(f"   {key}: {len(source)} good rows in the file, {len(lake)} in the lake: "
                  f"{'the same' if same else 'DIFFERENT'}")
            if dataset == "air_quality" and paths:
                meta = dict(duckdb.sql(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{paths[0]}')").fetchall())
                print(f"   its Parquet footer: source {meta.get('source')!r}, licence {meta.get('licence')!r}, "
                      f"publisher {meta.get('publisher')!r}")
    return 1 if failed else 0


def summary() -> None:
    out = json.load(sys.stdin)
    for name, run in out.get("datasets", {}).items():
        print(f"   {name}: {len(run['files'])} raw files, {run['rows']} rows, {run['quarantined']} quarantined")
    for key in out.get("skipped_files", []):
        print(f"   {key}: ingested already, skipped")
    if not out["complete"]:
        print(f"   (deadline margin reached: {out['remaining']} for the next invocation)")
        sys.exit(3)


def raw_files(bucket: str, dataset: str) -> None:
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{dataset}/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    print(f"   {len(keys)} raw files of {dataset} in s3://{bucket}/{dataset}/")


def quarantine(bucket: str, dataset: str) -> None:
    client = s3()
    for o in client.list_objects_v2(Bucket=bucket, Prefix=f"quarantine/{dataset}/").get("Contents", []):
        for line in client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().splitlines():
            q = json.loads(line)
            where = f"column {q['column']}" if q["column"] else "the record"
            value = q["value"] if len(q["value"]) <= 60 else q["value"][:57] + "..."
            print(f"   {q['file'].rsplit('/', 1)[-1]} line {q['line']}, {where}: {q['reason']}: {value!r}")


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["notification", bucket, key]:
            print(json.dumps({"Records": [{"s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}))
        case ["summary"]:
            summary()
        case ["quarantine", bucket, dataset]:
            quarantine(bucket, dataset)
        case ["raw-files", bucket, dataset]:
            raw_files(bucket, dataset)
        case ["export", bucket, key, expected]:
            export(bucket, key, expected)
        case ["check-export", expected, url]:
            sys.exit(check_export(expected, url))
        case ["land", bucket, prefix, files, rows, *seed]:
            land(bucket, prefix, int(files), int(rows), *map(int, seed))
        case ["check", bucket, url]:
            sys.exit(check(bucket, url))
        case ["opendata", bucket]:
            opendata(bucket)
        case ["check-opendata", landing, processed]:
            sys.exit(check_opendata(landing, processed))
        case _:
            sys.exit(__doc__)
