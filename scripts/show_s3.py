"""Prints what an ingest or transform run put in S3: per table, the rows and key of its files,
read back from the Parquet footer, and any quarantined rows. OUTPUT_JSON holds one Lambda
output or a list of them (the ingest Map's result).
Usage: show_s3.py OUTPUT_JSON [--rows N]"""
import argparse
import io
import json
import os

import boto3
import pyarrow.parquet as pq

parser = argparse.ArgumentParser()
parser.add_argument("output")
parser.add_argument("--rows", type=int, default=0, help="also print the first N rows of each file")
args = parser.parse_args()

with open(args.output) as f:
    out = json.load(f)
outs = out if isinstance(out, list) else [out]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
print(f"  has_new_data: {any(o['has_new_data'] for o in outs)}")
print(f"  {'table':<20}{'rows':>8}  {'bytes':>9}  key")
for out in outs:
    for table, rows in sorted(out["row_counts"].items()):
        keys = out["files"].get(table)
        if not keys:
            print(f"  {table:<20}{rows:>8}  {'':>9}  (nothing new)")
            continue
        # A table's files, oldest first (a window of more rows than a file holds is split).
        keys = [keys] if isinstance(keys, str) else keys
        total = 0
        for key in keys:
            body = s3.get_object(Bucket=out["bucket"], Key=key)["Body"].read()
            parquet = pq.ParquetFile(io.BytesIO(body))
            meta = {k.decode(): v.decode() for k, v in parquet.metadata.metadata.items()}
            file_rows = parquet.metadata.num_rows
            if "totesys.row_count" in meta:
                assert int(meta["totesys.row_count"]) == file_rows
            total += file_rows
            print(f"  {table:<20}{file_rows:>8}  {len(body):>9}  s3://{out['bucket']}/{key}")
            if args.rows:
                if "totesys.window_start" in meta:
                    window = f"[{meta['totesys.window_start']}, {meta['totesys.window_end']})"
                    print(f"      window {window}")
                else:
                    print(f"      from {', '.join(json.loads(meta['totesys.source_keys']))}")
                for row in parquet.read().slice(0, args.rows).to_pylist():
                    print("      " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "created_at"))
        assert total == rows, (table, total, rows)
    for table, rows in sorted(out.get("quarantined", {}).items()):
        print(f"  {table:<20}{rows:>8}  quarantined under s3://{out['bucket']}/quarantine/{table}/")
    # Transform's output: the declared datasets' files it published to the lake.
    for dataset, keys in sorted(out.get("datasets", {}).items()):
        if not isinstance(keys, list):
            continue  # ingest's output: its dataset runs, shown by the demo itself
        for key in keys:
            size = s3.head_object(Bucket=out["bucket"], Key=key)["ContentLength"]
            print(f"  {dataset:<20}{'':>8}  {size:>9}  s3://{out['bucket']}/{key} (published)")
