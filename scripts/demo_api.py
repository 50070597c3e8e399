"""make demo's paged HTTP API: New York City's collisions (datasets/nyc_*.json) served by the
local open-data API (tests/soda/server.py), and the result checked against the server.

  demo_api.py secret NAME VALUE
      puts VALUE in the Secrets Manager secret NAME (made if missing): the app token;
  demo_api.py admin API_URL PATH
      calls the local API's admin endpoint (add?crashes=N, amend?crashes=N, ...) and prints
      what it answers;
  demo_api.py stats API_URL
      prints how many requests the local API answered, by status;
  demo_api.py check API_URL WAREHOUSE_URL PROCESSED_BUCKET
      reads every row of the three resources from the server, each dataset's table from the
      warehouse and its rows from the lake (DuckDB over the processed Parquet, each key's
      version in the last file that holds it), and exits non-zero unless all three agree;
      then prints the warehouse view over the three tables.
"""
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import boto3
import duckdb

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = {"nyc_crashes": "h9gi-nx95", "nyc_vehicles": "bm4k-52h4", "nyc_persons": "f55k-p6yu"}


def secret(name: str, value: str) -> None:
    client = boto3.client("secretsmanager", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                          region_name=os.environ["AWS_REGION"])
    try:
        client.create_secret(Name=name, SecretString=value)
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=name, SecretString=value)


def admin(url: str, path: str) -> None:
    request = urllib.request.Request(f"{url}/_admin/{path}", method="POST")
    with urllib.request.urlopen(request) as response:
        print(response.read().decode())


def server_rows(url: str, resource: str) -> list:
    with urllib.request.urlopen(f"{url}/_admin/rows?resource={resource}") as response:
        return json.loads(response.read())


def text(column: dict, value) -> str:
    """A server value as PostgreSQL and DuckDB show it as text."""
    if value is None:
        return "∅"
    if column["type"] == "date":
        return value[:10]
    if column["type"] == "time":
        hours, minutes = value.split(":")
        return f"{int(hours):02d}:{int(minutes):02d}:00"
    return value


def check(url: str, warehouse_url: str, processed: str) -> int:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    failed = False
    with tempfile.TemporaryDirectory() as root:
        for name, resource in RESOURCES.items():
            declared = json.loads((ROOT / "datasets" / f"{name}.json").read_text())
            columns = declared["columns"]
            key = declared["key"][0]
            expected = {r[key]: "|".join(text(c, r.get(c["name"])) for c in columns)
                        for r in server_rows(url, resource)}
            values = ", ".join(f"coalesce({c['name']}::text, '∅')" for c in columns)
            out = subprocess.run(
                ["psql", warehouse_url, "-AtX", "-c",
                 f"SELECT {key}::text || chr(9) || concat_ws('|', {values}) FROM {name}"],
                check=True, capture_output=True, text=True).stdout
            warehouse = dict(line.split("\t", 1) for line in out.splitlines())
            paths = []
            for o in s3.list_objects_v2(Bucket=processed, Prefix=f"{name}/").get("Contents", []):
                path = os.path.join(root, o["Key"].replace("/", "_"))
                s3.download_file(processed, o["Key"], path)
                paths.append(path)
            lake = {}
            for path in sorted(paths):
                select = ", ".join(f"coalesce(CAST({c['name']} AS VARCHAR), '∅')" for c in columns)
                for row in duckdb.sql(f"SELECT {select} FROM read_parquet('{path}')").fetchall():
                    lake[row[[c["name"] for c in columns].index(key)]] = "|".join(row)
            same_warehouse, same_lake = warehouse == expected, lake == expected
            failed |= not (same_warehouse and same_lake)
            print(f"   {name}: the server has {len(expected)} rows; the warehouse "
                  f"{'the same' if same_warehouse else 'DIFFERENT'}, the lake ({len(paths)} files) "
                  f"{'the same' if same_lake else 'DIFFERENT'}")
    return 1 if failed else 0


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["secret", name, value]:
            secret(name, value)
        case ["admin", url, path]:
            admin(url, path)
        case ["stats", url]:
            with urllib.request.urlopen(f"{url}/_admin/stats") as response:
                print(json.loads(response.read())["statuses"])
        case ["check", url, warehouse_url, processed]:
            sys.exit(check(url, warehouse_url, processed))
        case _:
            sys.exit(__doc__)
