"""Answers one question of the brief, sales by month and currency, from the processed zone's
Parquet with a local engine (DuckDB), and checks the answer equals the warehouse's
(the sales_by_month_currency materialized view). Exits non-zero when they differ.

The lake keeps every file transform wrote: a fact row per version of a source row, and a
dimension row each time it changed. So the current order is the newest last_updated per
sales_order_id, and the current currency row the one in the newest file (file keys sort in
time order). Athena runs the same query over the Glue tables, with "$path" for the file name
(docs/src/asking.md).

Usage: lake_query.py PROCESSED_BUCKET WAREHOUSE_URL"""
import os
import subprocess
import sys
import tempfile
from decimal import Decimal

import boto3
import duckdb

TABLES = ["fact_sales_order", "dim_currency"]

LAKE_QUERY = """
WITH sales AS (
    SELECT * FROM read_parquet('{root}/fact_sales_order/*/*/*/*.parquet')
    QUALIFY row_number() OVER (PARTITION BY sales_order_id
                               ORDER BY last_updated_date DESC, last_updated_time DESC) = 1
), currency AS (
    SELECT * FROM read_parquet('{root}/dim_currency/*/*/*/*.parquet', filename = true)
    QUALIFY row_number() OVER (PARTITION BY currency_id ORDER BY filename DESC) = 1
)
SELECT year(s.created_date) AS year, month(s.created_date) AS month, c.currency_code,
       count(*) AS sales_orders, sum(s.units_sold) AS units_sold,
       sum(s.units_sold * s.unit_price) AS revenue
FROM sales s JOIN currency c USING (currency_id)
GROUP BY ALL
ORDER BY year, month, currency_code
"""

WAREHOUSE_QUERY = """
SELECT year, month, currency_code, sales_orders, units_sold, revenue
FROM sales_by_month_currency ORDER BY year, month, currency_code
"""


def download(bucket: str, root: str) -> int:
    """Copies the tables' data files from S3 under root, keeping their keys: the files read."""
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    count = 0
    for table in TABLES:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{table}/"):
            for obj in page.get("Contents", []):
                path = os.path.join(root, obj["Key"])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                s3.download_file(bucket, obj["Key"], path)
                count += 1
    return count


def warehouse_rows(url: str) -> list:
    out = subprocess.run(["psql", url, "-AtF", "\t", "-c", WAREHOUSE_QUERY],
                         check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        year, month, code, orders, units, revenue = line.split("\t")
        rows.append((int(year), int(month), code, int(orders), int(units), Decimal(revenue)))
    return rows


def main() -> int:
    bucket, url = sys.argv[1:3]
    with tempfile.TemporaryDirectory() as root:
        files = download(bucket, root)
        lake = [tuple(r) for r in duckdb.sql(LAKE_QUERY.format(root=root)).fetchall()]
    warehouse = warehouse_rows(url)
    print(f"  lake: {files} Parquet files of {', '.join(TABLES)} read by DuckDB {duckdb.__version__}")
    print(f"  {'year':>4} {'month':>5} {'currency':<8} {'orders':>7} {'units':>12} {'revenue':>16}")
    for row in lake[-6:]:
        print("  {:>4} {:>5} {:<8} {:>7} {:>12} {:>16}".format(*row))
    if lake != warehouse:
        print(f"  DIFFERENT: the lake's {len(lake)} rows are not the warehouse's {len(warehouse)}:",
              file=sys.stderr)
        for row in sorted(set(lake) ^ set(warehouse))[:10]:
            side = "lake" if row in lake else "warehouse"
            print(f"    only in the {side}: {row}", file=sys.stderr)
        return 1
    print(f"  the same {len(lake)} rows as the warehouse's sales_by_month_currency view")
    return 0


if __name__ == "__main__":
    sys.exit(main())
