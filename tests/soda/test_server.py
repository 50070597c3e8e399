"""The local open-data API (tests/soda/server.py) speaks the SODA a client pages with: what the
HTTP source's tests rely on, checked against the server's own rows."""

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

SERVER = Path(__file__).with_name("server.py")
CRASHES = "h9gi-nx95"
PERSONS = "f55k-p6yu"


@pytest.fixture
def api():
    process = subprocess.Popen([sys.executable, str(SERVER), "--crashes", "120", "--token", "secret"],
                               stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline())
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait()


def get(base, path, token="secret", **query):
    url = f"{base}{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"X-App-Token": token} if token else {})
    with urllib.request.urlopen(request) as response:
        body = response.read()
        return json.loads(body) if path.endswith(".json") or "_admin" in path else body.decode()


def post(base, path, **query):
    request = urllib.request.Request(f"{base}{path}?{urllib.parse.urlencode(query)}", method="POST")
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def all_rows(base, resource):
    return get(base, "/_admin/rows", token=None, resource=resource)


def test_a_request_without_the_token_is_refused(api):
    with pytest.raises(urllib.error.HTTPError) as e:
        get(api, f"/resource/{CRASHES}.json", token=None)
    assert e.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as e:
        get(api, f"/resource/{CRASHES}.json", token="wrong")
    assert e.value.code == 403


def test_keyset_pages_read_every_row_once_in_order(api):
    rows = all_rows(api, CRASHES)
    seen, cursor = [], None
    while True:
        query = {"$limit": 17, "$order": ":updated_at, :id", "$select": ":id, :updated_at, collision_id"}
        if cursor:
            query["$where"] = (f":updated_at > '{cursor[0]}' OR "
                               f"(:updated_at = '{cursor[0]}' AND :id > '{cursor[1]}')")
        page = get(api, f"/resource/{CRASHES}.json", **query)
        if not page:
            break
        seen += page
        cursor = (page[-1][":updated_at"], page[-1][":id"])
    assert [r["collision_id"] for r in seen] == [
        r["collision_id"] for r in sorted(rows, key=lambda r: (r[":updated_at"], r[":id"]))]


def test_offset_pages_are_stable_only_with_an_order(api):
    ordered = []
    for offset in range(0, 120, 50):
        ordered += get(api, f"/resource/{CRASHES}.json", **{"$limit": 50, "$offset": offset, "$order": "collision_id"})
    assert [r["collision_id"] for r in ordered] == [r["collision_id"] for r in all_rows(api, CRASHES)]
    # Without an order, two reads of the first page differ (the server shuffles, as a busy
    # portal may): offset paging without $order skips and doubles rows.
    first = [get(api, f"/resource/{CRASHES}.json", **{"$limit": 50})[0]["collision_id"] for _ in range(5)]
    assert len(set(first)) > 1


def test_amended_rows_move_past_a_cursor_with_their_new_values(api):
    before = {r["collision_id"]: r for r in all_rows(api, CRASHES)}
    newest = max(r[":updated_at"] for r in before.values())
    amended = post(api, "/_admin/amend", crashes=5)
    after = get(api, f"/resource/{CRASHES}.json",
                **{"$where": f":updated_at > '{newest}'", "$order": ":updated_at, :id", "$limit": 1000})
    assert sorted(r["collision_id"] for r in after) == sorted(amended)
    persons = get(api, f"/resource/{PERSONS}.json", **{"$where": f":updated_at > '{newest}'", "$limit": 1000})
    assert {p["collision_id"] for p in persons} <= set(amended) and persons
    post(api, "/_admin/add", crashes=3)
    assert len(all_rows(api, CRASHES)) == 123


def test_faults_throttle_and_fail_and_csv_and_bad_queries(api):
    post(api, "/_admin/faults", throttle_every=2, fail_every=3)
    codes = []
    for _ in range(6):
        try:
            get(api, f"/resource/{CRASHES}.json", **{"$limit": 1})
            codes.append(200)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
            if e.code == 429:
                assert e.headers["Retry-After"] == "1"
    assert codes == [200, 429, 500, 429, 200, 429]
    post(api, "/_admin/faults")
    text = get(api, f"/resource/{PERSONS}.csv", **{"$select": "unique_id, person_injury", "$order": "unique_id", "$limit": 2})
    assert text.splitlines()[0] == "unique_id,person_injury"
    with pytest.raises(urllib.error.HTTPError) as e:
        get(api, f"/resource/{CRASHES}.json", **{"$where": "borough = "})
    assert e.value.code == 400


def test_count_counts_what_where_keeps(api):
    rows = all_rows(api, CRASHES)
    middle = sorted(r[":updated_at"] for r in rows)[len(rows) // 2]
    where = f":updated_at < '{middle}'"
    [count] = get(api, f"/resource/{CRASHES}.json", **{"$select": "count(*)", "$where": where})
    assert count == {"count": str(sum(r[":updated_at"] < middle for r in rows))}
    [everything] = get(api, f"/resource/{CRASHES}.json", **{"$select": "count(*)"})
    assert everything == {"count": str(len(rows))}


def test_paged_resources_link_each_page_to_the_next_in_the_body_and_the_header(api):
    rows = sorted(all_rows(api, PERSONS), key=lambda r: (r[":updated_at"], r[":id"]))
    query = {"$limit": 50, "$order": ":updated_at,:id", "$select": ":id,:updated_at,unique_id"}
    url = f"{api}/paged/{PERSONS}.json?{urllib.parse.urlencode(query)}"
    seen, pages = [], 0
    while url:
        request = urllib.request.Request(url, headers={"X-App-Token": "secret"})
        with urllib.request.urlopen(request) as response:
            page = json.loads(response.read())
            header = response.headers.get("Link")
        assert header == (f'<{page["next"]}>; rel="next"' if page["next"] else None)
        seen += [r["unique_id"] for r in page["results"]]
        url, pages = page["next"], pages + 1
    assert seen == [r["unique_id"] for r in rows] and pages == len(rows) // 50 + 1
    first = get(api, f"/paged/{PERSONS}.csv", **query).splitlines()
    assert first[0] == ":id,:updated_at,unique_id" and len(first) == 51
    with pytest.raises(urllib.error.HTTPError) as e:
        get(api, f"/paged/{CRASHES}.json", **{"$order": ":id DESC"})
    assert e.value.code == 400
