"""A local open-data API that speaks enough of Socrata's SODA 2.1 for the HTTP source's tests and
the demo: New York City's motor vehicle collisions (crashes, vehicles, persons), generated and
shaped like the real datasets, with the faults a real portal has.

Standard library only. Run it and read the port it prints:

  python3 tests/soda/server.py [--port 0] [--seed 1] [--crashes 500] [--token T]
                               [--throttle-every N] [--fail-every M] [--token-in-links]

The first `--crashes` crashes are its history: stamped (`:created_at`, `:updated_at`) evenly
over the 30 days before it started. Crashes added or amended later are stamped with the
clock, each change at least a millisecond after the one before.

Resources (`/resource/<id>.json` or `.csv`), as on data.cityofnewyork.us:

  h9gi-nx95  crashes   key collision_id
  bm4k-52h4  vehicles  key unique_id (collision_id: its crash)
  f55k-p6yu  persons   key unique_id (collision_id, vehicle_id: its crash and vehicle)

Query parameters: `$limit` (default 1000, at most 50000), `$offset`, `$order` (fields, `ASC` or
`DESC`, system fields `:id` and `:updated_at` included), `$where` (comparisons `= != < <= > >=` of
a field with a string or number literal, `AND`, `OR`, `NOT`, parentheses, `IS NULL`,
`IS NOT NULL`), `$select` (fields, `:id`, `:updated_at`, `:created_at`, `*`, or `count(*)`
alone: `[{"count": "N"}]` of the rows `$where` keeps). Every value is a
string in JSON, as SODA returns them; a null is left out of its record. Without `$order` the
rows come in no stable order (shuffled per request, as a portal under load may serve them).

A portal of another kind pages by links: `/paged/<id>.json` or `.csv` takes the same query
(`$order` required, ascending) and answers a page of `$limit` rows with the link to the next,
an opaque cursor after the page's last row, both in a `Link: <URL>; rel="next"` header and, in
JSON, in the body: `{"results": [...], "next": URL}` (`next` null on the last page, which is
the first one not full). A `count(*)` or a query with `$offset` is answered as SODA's, in the
same envelope, with no link.

With `--token`, a request without the token, in the `X-App-Token` header or the `$$app_token`
parameter, is refused (403). With `--token-in-links` too, the links a paged resource hands out
carry the token as `$$app_token`, as some portals' do.
Faults: every Nth request is throttled (429 with `Retry-After: 1`), every Mth fails (500).

Admin (not SODA), for tests and the demo:

  POST /_admin/add?crashes=N       N new crashes, with their vehicles and persons
  POST /_admin/amend?crashes=N     N existing crashes (and each's persons) amended: values
                                   changed, `:updated_at` now
  POST /_admin/faults?throttle_every=N&fail_every=M   change the faults (0: none)
  GET  /_admin/rows?resource=ID    every row of a resource, with its system fields, by key
  GET  /_admin/stats               requests served, by status
"""

import argparse
import base64
import csv
import functools
import io
import json
import random
import re
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

BOROUGHS = ["BROOKLYN", "QUEENS", "MANHATTAN", "BRONX", "STATEN ISLAND"]
STREETS = ["ATLANTIC AVENUE", "BROADWAY", "QUEENS BOULEVARD", "GRAND CONCOURSE", "FLATBUSH AVENUE",
           "NOSTRAND AVENUE", "3 AVENUE", "HYLAN BOULEVARD", "NORTHERN BOULEVARD", "CANAL STREET"]
FACTORS = ["Driver Inattention/Distraction", "Failure to Yield Right-of-Way", "Following Too Closely",
           "Unsafe Speed", "Passing or Lane Usage Improper", "Unspecified"]
VEHICLE_TYPES = ["Sedan", "Station Wagon/Sport Utility Vehicle", "Taxi", "Pick-up Truck", "Box Truck",
                 "Bike", "Bus", "Motorcycle"]
MAKES = ["TOYOTA", "HONDA", "FORD", "NISSAN", "CHEVROLET", "BMW"]
MAX_LIMIT = 50000

RESOURCES = {
    "h9gi-nx95": ("crashes", "collision_id"),
    "bm4k-52h4": ("vehicles", "unique_id"),
    "f55k-p6yu": ("persons", "unique_id"),
}


def stamp(at: datetime) -> str:
    """A system field's time as SODA writes it: UTC, milliseconds."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class Data:
    """The three datasets, consistent with each other, and what changes them."""

    def __init__(self, seed: int, crashes: int):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.rows = {"crashes": {}, "vehicles": {}, "persons": {}}
        self.next_collision = 4_000_000
        self.next_vehicle = 10_000_000
        self.next_person = 20_000_000
        # The portal's history: the first crashes were stamped evenly over the 30 days before
        # it started, as a real portal's rows were over the years.
        start = datetime.now(timezone.utc)
        with self.lock:
            for i in range(crashes):
                self.add_crash(start - timedelta(days=30) * (crashes - i) / crashes)
        self.clock = start

    def now(self) -> datetime:
        """A clock that never stands still or goes back: each change is later than the last."""
        self.clock = max(self.clock + timedelta(milliseconds=1), datetime.now(timezone.utc))
        return self.clock

    def system(self, row_id: str, created: datetime) -> dict:
        return {":id": row_id, ":created_at": stamp(created), ":updated_at": stamp(created)}

    def add(self, crashes: int) -> None:
        with self.lock:
            for _ in range(crashes):
                self.add_crash()

    def add_crash(self, at=None) -> None:
        rng = self.rng
        self.next_collision += rng.randint(1, 3)
        cid = str(self.next_collision)
        at = at or self.now()
        day = datetime(2024, 1, 1) + timedelta(days=rng.randint(0, 330))
        crash = {
            **self.system(f"row-{rng.getrandbits(48):012x}", at),
            "collision_id": cid,
            "crash_date": day.strftime("%Y-%m-%dT00:00:00.000"),
            "crash_time": f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}",
            "on_street_name": rng.choice(STREETS),
            "number_of_persons_injured": "0",
            "number_of_persons_killed": "0",
            "number_of_pedestrians_injured": "0",
            "number_of_pedestrians_killed": "0",
            "number_of_cyclist_injured": "0",
            "number_of_cyclist_killed": "0",
            "number_of_motorist_injured": "0",
            "number_of_motorist_killed": "0",
        }
        if rng.random() < 0.7:
            crash["borough"] = rng.choice(BOROUGHS)
            crash["zip_code"] = str(rng.randint(10001, 11697))
        if rng.random() < 0.9:
            crash["latitude"] = f"{40.5 + rng.random() * 0.4:.6f}"
            crash["longitude"] = f"{-74.2 + rng.random() * 0.5:.6f}"
        if rng.random() < 0.5:
            crash["off_street_name"] = rng.choice(STREETS)
        vehicles = rng.randint(1, 3)
        for n in range(vehicles):
            suffix = "" if n < 2 else "_"
            crash[f"contributing_factor_vehicle_{n + 1}"] = rng.choice(FACTORS)
            crash[f"vehicle_type_code{suffix}{n + 1}"] = rng.choice(VEHICLE_TYPES)
        self.rows["crashes"][cid] = crash
        injured = killed = 0
        for _ in range(vehicles):
            self.next_vehicle += 1
            vid = str(self.next_vehicle)
            self.rows["vehicles"][vid] = {
                **self.system(f"row-{rng.getrandbits(48):012x}", at),
                "unique_id": vid, "collision_id": cid,
                "crash_date": crash["crash_date"], "crash_time": crash["crash_time"],
                "vehicle_id": f"{rng.getrandbits(32):08X}",
                "vehicle_type": rng.choice(VEHICLE_TYPES), "vehicle_make": rng.choice(MAKES),
                "vehicle_year": str(rng.randint(2000, 2024)),
                "vehicle_occupants": str(rng.randint(1, 4)),
                "driver_sex": rng.choice(["M", "F", "U"]),
                "contributing_factor_1": rng.choice(FACTORS),
            }
            for _ in range(rng.randint(1, 2)):
                self.next_person += 1
                pid = str(self.next_person)
                injury = rng.choices(["Unspecified", "Injured", "Killed"], [80, 19, 1])[0]
                injured += injury == "Injured"
                killed += injury == "Killed"
                self.rows["persons"][pid] = {
                    **self.system(f"row-{rng.getrandbits(48):012x}", at),
                    "unique_id": pid, "collision_id": cid, "vehicle_id": vid,
                    "crash_date": crash["crash_date"], "crash_time": crash["crash_time"],
                    "person_id": f"{rng.getrandbits(64):016x}",
                    "person_type": rng.choice(["Occupant", "Pedestrian", "Bicyclist"]),
                    "person_injury": injury,
                    "person_age": str(rng.randint(1, 90)),
                    "person_sex": rng.choice(["M", "F", "U"]),
                }
        crash["number_of_persons_injured"] = str(injured)
        crash["number_of_persons_killed"] = str(killed)
        crash["number_of_motorist_injured"] = str(injured)
        crash["number_of_motorist_killed"] = str(killed)

    def amend(self, crashes: int) -> list:
        """Amends `crashes` existing crashes (the oldest stamps first, so a run that has read
        them sees them again): a person's injury found later, the counts corrected, a borough
        filled in. Returns their collision ids."""
        with self.lock:
            ids = sorted(self.rows["crashes"], key=lambda c: self.rows["crashes"][c][":updated_at"])
            chosen = self.rng.sample(ids[: max(len(ids) // 2, crashes)], min(crashes, len(ids)))
            for cid in chosen:
                at = stamp(self.now())
                crash = self.rows["crashes"][cid]
                people = [p for p in self.rows["persons"].values() if p["collision_id"] == cid]
                for p in people[:1]:
                    p["person_injury"] = "Injured"
                    p[":updated_at"] = at
                injured = sum(p["person_injury"] == "Injured" for p in people)
                crash["number_of_persons_injured"] = str(injured)
                crash["number_of_motorist_injured"] = str(injured)
                crash.setdefault("borough", self.rng.choice(BOROUGHS))
                crash.setdefault("zip_code", str(self.rng.randint(10001, 11697)))
                crash[":updated_at"] = at
            return chosen


# --- SoQL, the part a client pages with ----------------------------------------------------

TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|<>|=|<|>)"
                   r"|(?P<paren>[()])|(?P<word>:?[A-Za-z_][A-Za-z0-9_]*|:\*|\*))")


def tokens(text: str) -> list:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse $where at {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "str":
            out.append(("str", value[1:-1].replace("''", "'")))
        elif kind == "num":
            out.append(("num", float(value)))
        elif kind == "word" and value.upper() in ("AND", "OR", "NOT", "IS", "NULL"):
            out.append(("kw", value.upper()))
        else:
            out.append((kind, value))
    return out


class Where:
    """A recursive-descent reader of the $where subset: the predicate as a function of a row."""

    def __init__(self, text: str):
        self.toks, self.i = tokens(text), 0
        self.predicate = self.disjunction()
        if self.i != len(self.toks):
            raise ValueError(f"unexpected {self.toks[self.i][1]!r} in $where")

    def peek(self, kind=None, value=None):
        if self.i < len(self.toks):
            k, v = self.toks[self.i]
            if (kind is None or k == kind) and (value is None or v == value):
                return self.toks[self.i]
        return None

    def take(self, kind, value=None):
        tok = self.peek(kind, value)
        if tok is None:
            found = self.toks[self.i][1] if self.i < len(self.toks) else "the end"
            raise ValueError(f"expected {value or kind} in $where, found {found!r}")
        self.i += 1
        return tok[1]

    def disjunction(self):
        parts = [self.conjunction()]
        while self.peek("kw", "OR"):
            self.i += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def conjunction(self):
        parts = [self.negation()]
        while self.peek("kw", "AND"):
            self.i += 1
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def negation(self):
        if self.peek("kw", "NOT"):
            self.i += 1
            inner = self.negation()
            return lambda row: not inner(row)
        if self.peek("paren", "("):
            self.i += 1
            inner = self.disjunction()
            self.take("paren", ")")
            return inner
        field = self.take("word")
        if self.peek("kw", "IS"):
            self.i += 1
            negate = bool(self.peek("kw", "NOT")) and bool(self.take("kw", "NOT"))
            self.take("kw", "NULL")
            return lambda row: (row.get(field) is None) != negate
        op = self.take("op")
        kind, literal = self.toks[self.i] if self.i < len(self.toks) else (None, None)
        if kind not in ("str", "num"):
            raise ValueError(f"expected a literal after {field} {op}")
        self.i += 1
        compare = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<>": lambda a, b: a != b,
                   "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
                   ">=": lambda a, b: a >= b}[op]

        def test(row):
            value = row.get(field)
            if value is None:
                return False
            if kind == "num":
                try:
                    return compare(float(value), literal)
                except ValueError:
                    return False
            return compare(comparable(field, value), comparable(field, literal))
        return test


def comparable(field: str, value: str):
    """System times compare as times whatever their precision is written to ('...:00' and
    '...:00.000Z' are the same instant); everything else as text."""
    if field in (":updated_at", ":created_at"):
        return system_time(value)
    return value


@functools.lru_cache(maxsize=1 << 20)
def system_time(value: str) -> datetime:
    """A system field's time, parsed once: every query compares every row's."""
    text = value.rstrip("Z")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    raise ValueError(f"not a time: {value!r}")


def order_key(spec: str):
    fields = []
    for part in spec.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].upper() not in ("ASC", "DESC")):
            raise ValueError(f"cannot parse $order {spec!r}")
        fields.append((words[0], len(words) == 2 and words[1].upper() == "DESC"))
    return fields


def sort_rows(rows: list, spec: str) -> list:
    for field, desc in reversed(order_key(spec)):
        numeric = all((r.get(field) or "").lstrip("-").replace(".", "", 1).isdigit() for r in rows) \
            and not field.startswith(":")
        rows.sort(key=lambda r: (r.get(field) is None,
                                 float(r[field]) if numeric and r.get(field) is not None
                                 else comparable(field, r.get(field) or "")), reverse=desc)
    return rows


# --- HTTP ----------------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, data: Data, token, throttle_every: int, fail_every: int,
                 token_in_links: bool = False):
        super().__init__(address, Handler)
        self.data, self.token, self.token_in_links = data, token, token_in_links
        self.throttle_every, self.fail_every = throttle_every, fail_every
        self.requests = 0
        self.statuses = {}
        self.counter = threading.Lock()

    def handle_error(self, request, client_address):
        # A client that hangs up mid-answer (a killed invocation) is not the server's error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args):  # quiet: the tests read the stats
        pass

    def send(self, status: int, body: bytes, content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        with self.server.counter:
            self.server.statuses[status] = self.server.statuses.get(status, 0) + 1

    def error(self, status: int, message: str, headers=()):
        body = json.dumps({"error": True, "message": message}).encode()
        self.send(status, body, headers=headers)

    def do_POST(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        data = self.server.data
        if url.path == "/_admin/add":
            data.add(int(q.get("crashes", "1")))
            return self.send(200, b"{}")
        if url.path == "/_admin/amend":
            return self.send(200, json.dumps(data.amend(int(q.get("crashes", "1")))).encode())
        if url.path == "/_admin/faults":
            self.server.throttle_every = int(q.get("throttle_every", "0"))
            self.server.fail_every = int(q.get("fail_every", "0"))
            return self.send(200, b"{}")
        self.error(404, f"no such admin path {url.path}")

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        data = self.server.data
        if url.path == "/_admin/rows":
            name, key = RESOURCES[q["resource"]]
            with data.lock:
                rows = sorted(data.rows[name].values(), key=lambda r: int(r[key]))
            return self.send(200, json.dumps(rows).encode())
        if url.path == "/_admin/stats":
            with self.server.counter:
                stats = {"requests": self.server.requests, "statuses": self.server.statuses}
            return self.send(200, json.dumps(stats).encode())
        m = re.fullmatch(r"/(resource|paged)/([a-z0-9]{4}-[a-z0-9]{4})\.(json|csv)", url.path)
        if not m or m.group(2) not in RESOURCES:
            return self.error(404, f"no such resource {url.path}")
        if self.server.token and self.server.token not in (self.headers.get("X-App-Token"), q.get("$$app_token")):
            return self.error(403, "Invalid app_token specified")
        with self.server.counter:
            self.server.requests += 1
            n = self.server.requests
        if self.server.throttle_every and n % self.server.throttle_every == 0:
            return self.error(429, "Too many requests", headers=[("Retry-After", "1")])
        if self.server.fail_every and n % self.server.fail_every == 0:
            return self.error(500, "Internal server error")
        kind, resource, fmt = m.groups()
        try:
            if kind == "paged":
                return self.paged(data, url.path, resource, fmt, q)
            body, content_type = self.query(data, resource, fmt, q)
        except (ValueError, KeyError) as e:
            return self.error(400, f"query.soql.no-such-column or malformed: {e}")
        self.send(200, body, content_type)

    def paged(self, data: Data, path: str, resource: str, fmt: str, q: dict):
        """A page after `cursor` (the order fields' values of the last row of the page before),
        with the link to the next."""
        if "$offset" in q or q.get("$select", "").replace(" ", "").lower() == "count(*)":
            # A count, or a record by its place (where a first load cuts its ranges): as SODA
            # answers them, in the envelope, with no link.
            body, content_type = self.query(data, resource, fmt, q)
            if fmt == "json":
                body = json.dumps({"results": json.loads(body), "next": None}).encode()
            return self.send(200, body, content_type)
        if "$order" not in q or any(desc for _, desc in order_key(q["$order"])):
            raise ValueError("paged resources need an ascending $order")
        fields = [f for f, _ in order_key(q["$order"])]
        limit = int(q.get("$limit", "1000"))
        query = {k: v for k, v in q.items() if k not in ("cursor", "$offset")}
        if self.server.token_in_links:
            query["$$app_token"] = self.server.token
        # Every row after the cursor, in order; then the page of them.
        with data.lock:
            rows = [dict(r) for r in data.rows[RESOURCES[resource][0]].values()]
        if "$where" in q:
            where = Where(q["$where"]).predicate
            rows = [r for r in rows if where(r)]
        rows = sort_rows(rows, q["$order"])
        if "cursor" in q:
            after = json.loads(base64.urlsafe_b64decode(q["cursor"]))
            bound = [comparable(f, v or "") for f, v in zip(fields, after)]
            rows = [r for r in rows if [comparable(f, r.get(f) or "") for f in fields] > bound]
        page = rows[:limit]
        link = None
        if len(page) == limit and page:
            cursor = base64.urlsafe_b64encode(json.dumps([page[-1].get(f) for f in fields]).encode())
            link = f"http://{self.headers.get('Host')}{path}?" + urlencode({**query, "cursor": cursor.decode()})
        subset = {k: v for k, v in q.items() if k in ("$select",)}
        body, content_type = self.render(data, resource, fmt, page, subset)
        if fmt == "json":
            body = json.dumps({"results": json.loads(body), "next": link}).encode()
        headers = [("Link", f'<{link}>; rel="next"')] if link else []
        self.send(200, body, content_type, headers=headers)

    def query(self, data: Data, resource: str, fmt: str, q: dict):
        name, _ = RESOURCES[resource]
        limit = int(q.get("$limit", "1000"))
        offset = int(q.get("$offset", "0"))
        if not 0 <= limit <= MAX_LIMIT or offset < 0:
            raise ValueError(f"$limit must be 0 to {MAX_LIMIT}, $offset at least 0")
        with data.lock:
            rows = [dict(r) for r in data.rows[name].values()]
        if "$where" in q:
            where = Where(q["$where"]).predicate
            rows = [r for r in rows if where(r)]
        if q.get("$select", "").replace(" ", "").lower() == "count(*)":
            body = [{"count": str(len(rows))}]
            if fmt == "json":
                return json.dumps(body).encode(), "application/json; charset=utf-8"
            return f"count\n{len(rows)}\n".encode(), "text/csv; charset=utf-8"
        if "$order" in q:
            rows = sort_rows(rows, q["$order"])
        else:
            random.shuffle(rows)
        return self.render(data, resource, fmt, rows[offset:offset + limit], q)

    def render(self, data: Data, resource: str, fmt: str, rows: list, q: dict):
        """Rows as `$select` asks, in JSON or CSV."""
        name, _ = RESOURCES[resource]
        fields = None
        if "$select" in q:
            fields = [f.strip() for f in q["$select"].split(",")]
            expanded = []
            for f in fields:
                if f == "*":
                    expanded += sorted({k for r in data.rows[name].values() for k in r if not k.startswith(":")})
                elif f == ":*":
                    expanded += [":id", ":created_at", ":updated_at"]
                else:
                    expanded.append(f)
            fields = expanded
            rows = [{f: r[f] for f in fields if f in r} for r in rows]
        else:
            rows = [{k: v for k, v in r.items() if not k.startswith(":")} for r in rows]
        if fmt == "json":
            return json.dumps(rows).encode(), "application/json; charset=utf-8"
        columns = fields or sorted({k for r in rows for k in r})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([r.get(c, "") for c in columns])
        return out.getvalue().encode(), "text/csv; charset=utf-8"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--crashes", type=int, default=500)
    p.add_argument("--token")
    p.add_argument("--throttle-every", type=int, default=0)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--token-in-links", action="store_true")
    a = p.parse_args()
    server = Server(("127.0.0.1", a.port), Data(a.seed, a.crashes), a.token, a.throttle_every, a.fail_every,
                    a.token_in_links)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
