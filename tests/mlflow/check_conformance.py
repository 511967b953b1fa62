#!/usr/bin/env python3
"""Checks mlflow_test_server.py against the real MLflow 2.10.2 exchanges in transcripts/.

Starts the server, replays every transcript's request in the order they were captured
(00-30, 32, 40-53, 31, 54-62, then the Python client's session in 90), with the ids
the transcripts used rewritten to the ids this server generated, and compares each
answer with the recorded one: status, the headers that matter and the body, byte for
byte after the id substitution (only server-generated times are masked). Then checks
what MLflow does not have: fault injection, statistics, keep-alive, chunked and
Expect: 100-continue uploads, authentication, TLS and a clean exit on SIGTERM.

Prints a diff for each mismatch and exits non-zero if anything differs.
"""

import base64
import difflib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "mlflow_test_server.py")
TRANSCRIPTS = os.path.join(HERE, "transcripts")
PYTHON = sys.executable or "/usr/bin/python3"
COMPARED_HEADERS = (
    "Content-Type",
    "Allow",
    "Content-Disposition",
    "X-Content-Type-Options",
    "Transfer-Encoding",
)

failures = []


def fail(what, detail=""):
    failures.append(what)
    print(f"FAIL {what}")
    if detail:
        print(detail.rstrip("\n"))


def check(condition, what, detail=""):
    if not condition:
        fail(what, detail)
    return bool(condition)


def diff(expected, actual):
    lines = difflib.unified_diff(
        expected.splitlines(keepends=True),
        actual.splitlines(keepends=True),
        "expected (transcript)",
        "actual (server)",
    )
    return "".join(lines)


# ---------------------------------------------------------------------------
# transcripts


def capture_order():
    names = sorted(n for n in os.listdir(TRANSCRIPTS) if re.match(r"\d\d", n))

    def number(n):
        return int(n[:2])

    order = [n for n in names if number(n) <= 30]
    order += [n for n in names if number(n) == 32]
    order += [n for n in names if 40 <= number(n) <= 53]
    order += [n for n in names if number(n) == 31]
    order += [n for n in names if 54 <= number(n) <= 62]
    order += [n for n in names if number(n) == 90]
    return order


def parse_head(data, pos):
    """Parses a start line and headers from pos; returns (start line, [(k, v)], body start)."""
    end = data.index(b"\n\n", pos)
    lines = data[pos:end].decode().split("\n")
    headers = []
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.append((key.strip(), value.strip()))
    return lines[0], headers, end + 2


def header(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def body_of(region, length):
    """The body in the text between a head and the next section, given Content-Length."""
    if length is None:  # chunked: the body runs to the next section, plus one newline of layout
        return region[:-1]
    n = int(length)
    if n <= len(region) and not region[n:].strip():
        return region[:n]
    # Paths replaced by <DATA_DIR> or <TMP> left Content-Length stale (and 42 shows a
    # placeholder): the body is then the text up to the layout's blank lines.
    return region.rstrip(b"\n")


def parse_transcript(path):
    """Returns [(request, response)] with request = (method, target, headers, body)
    and response = (status, headers, body)."""
    data = open(path, "rb").read()
    exchanges = []
    pos = 0
    while True:
        req_at = data.find(b"=== REQUEST ===\n", pos)
        if req_at < 0:
            return exchanges
        line, req_headers, body_at = parse_head(data, req_at + len(b"=== REQUEST ===\n"))
        method, target, _ = line.split(" ", 2)
        resp_at = data.index(b"=== RESPONSE ===\n", body_at)
        req_body = body_of(data[body_at:resp_at], header(req_headers, "Content-Length") or "0")
        line, resp_headers, body_at = parse_head(data, resp_at + len(b"=== RESPONSE ===\n"))
        status = int(line.split(" ")[1])
        nxt = data.find(b"=== REQUEST ===\n", body_at)
        region = data[body_at : len(data) if nxt < 0 else nxt]
        resp_body = body_of(region, header(resp_headers, "Content-Length"))
        exchanges.append(((method, target, req_headers, req_body), (status, resp_headers, resp_body)))
        pos = body_at + len(region)


# ---------------------------------------------------------------------------
# id substitution


class Ids:
    """Maps the ids a transcript used to the ids this server generated."""

    RUN_ID = re.compile(r"[0-9a-f]{32}")
    EXPERIMENT_ID_CONTEXTS = [
        re.compile(r'("experiment_id"\s*:\s*")(\d+)(")'),
        re.compile(r'("experiment_ids"\s*:\s*\[\s*")(\d+)(")'),
        re.compile(r"(experiment_id=)(\d+)(\b)"),
        re.compile(r'(mlflow-artifacts:/)(\d+)([/"])'),
        re.compile(r"(artifacts/)(\d+)(/)"),
        re.compile(r"(path=)(\d+)(/)"),
        re.compile(r"(File )(\d+)(/)"),
    ]

    def __init__(self):
        self.runs = {}
        self.experiments = {}

    def apply(self, text):
        text = self.RUN_ID.sub(lambda m: self.runs.get(m.group(0), m.group(0)), text)
        for pattern in self.EXPERIMENT_ID_CONTEXTS:
            text = pattern.sub(lambda m: m.group(1) + self.experiments.get(m.group(2), m.group(2)) + m.group(3), text)
        return text


def mask_times(text):
    """Masks the times the server generates (experiment times, the SQL insert in 03)."""
    text = re.sub(r'"(creation_time|last_update_time)": \d+', r'"\1": <TIME>', text)
    return re.sub(r"'active', \d+, \d+\)", "'active', <TIME>, <TIME>)", text)


# ---------------------------------------------------------------------------
# the server


class ServerProcess:
    def __init__(self, tmp, name, *args):
        self.tmp = tmp
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.stderr_path = os.path.join(tmp, f"{name}.stderr")
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [PYTHON, SERVER, "--port", "0", "--port-file", self.port_file, "--log", self.log_path, *args],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{open(self.stderr_path).read()}")
            time.sleep(0.02)
        self.port = int(open(self.port_file).read())

    def connection(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def control(self, method, name, body=None):
        conn = self.connection()
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, f"/__kiln_test__/{name}", data, {"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        if resp.status != 200:
            raise SystemExit(f"control {name} answered {resp.status}: {payload!r}")
        return json.loads(payload)

    def stop(self):
        """SIGTERM; the server must exit 0 promptly and have printed no traceback."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = "still running 5 s after SIGTERM"
        self.stderr.close()
        check(code == 0, f"server exits 0 on SIGTERM (got {code})")
        err = open(self.stderr_path).read()
        check("Traceback" not in err, "server printed no traceback", err)


def request(conn, method, target, body=b"", headers=()):
    conn.putrequest(method, target, skip_accept_encoding=True)
    for k, v in headers:
        conn.putheader(k, v)
    if body or method in ("POST", "PUT"):
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read()


# ---------------------------------------------------------------------------
# replay


def replay(server):
    ids = Ids()
    conn = server.connection()
    uploaded = {}

    # The transcripts' server already had experiment 1 ("py-client-e2e", see 62).
    status, _, body = request(
        conn, "POST", "/api/2.0/mlflow/experiments/create", b'{"name": "py-client-e2e"}',
        [("Content-Type", "application/json")],
    )  # fmt: skip
    check(status == 200 and json.loads(body) == {"experiment_id": "1"}, "setup: experiment 1", body.decode())

    listed = re.findall(r"^\| (\S+\.txt) \|", open(os.path.join(TRANSCRIPTS, "README.md")).read(), re.M)
    missing = sorted(set(listed) - set(capture_order()))
    check(len(listed) >= 60 and not missing, f"every transcript in transcripts/README.md is replayed (missing: {missing})")
    for name in capture_order():
        exchanges = parse_transcript(os.path.join(TRANSCRIPTS, name))
        check(exchanges, f"{name}: parsed")
        ok = True
        for i, ((method, target, req_headers, req_body), (want_status, want_headers, want_body)) in enumerate(
            exchanges
        ):
            label = name if len(exchanges) == 1 else f"{name} #{i + 1}"
            target = ids.apply(target)
            if name.startswith("42-"):
                req_body = os.urandom(256)  # omitted from the transcript
            elif req_body:
                req_body = ids.apply(req_body.decode()).encode()
            if method == "PUT":
                uploaded[target] = req_body
            headers = [(k, v) for k, v in req_headers if k.lower() not in ("host", "content-length")]
            status, got_headers, body = request(conn, method, target, req_body, headers)

            if status == 200 and target.endswith("/runs/create"):
                got = json.loads(body)["run"]["info"]["run_id"]
                ok &= check(re.fullmatch(r"[0-9a-f]{32}", got), f"{label}: run id {got!r} is 32 hex digits")
                ids.runs[json.loads(want_body)["run"]["info"]["run_id"]] = got
            if status == 200 and target.endswith("/experiments/create"):
                got = json.loads(body)["experiment_id"]
                ok &= check(re.fullmatch(r"\d+", got), f"{label}: experiment id {got!r} is decimal")
                ids.experiments[json.loads(want_body)["experiment_id"]] = got

            ok &= check(
                status == want_status, f"{label}: status {status}, expected {want_status}", body.decode(errors="replace")
            )
            for name_ in COMPARED_HEADERS:
                want = header(want_headers, name_)
                if want is not None:
                    got = got_headers.get(name_)
                    ok &= check(got == want, f"{label}: {name_} is {got!r}, expected {want!r}")
            expected = mask_times(ids.apply(want_body.decode()))
            actual = mask_times(body.decode(errors="replace"))
            ok &= check(actual == expected, f"{label}: body differs", diff(expected, actual))
        if ok:
            print(f"ok   {name}")
    conn.close()
    return ids, uploaded


def check_dump(server, ids, uploaded):
    dump = server.control("GET", "dump")
    sizes = {a["path"]: (a["size"], a["sha256"]) for a in dump["artifacts"]}
    for target, data in uploaded.items():
        path = target.split("/api/2.0/mlflow-artifacts/artifacts/", 1)[1]
        if ".." in path:
            check(path not in sizes and "escape.txt" not in json.dumps(dump), "dump: the traversal upload is absent")
            continue
        check(
            sizes.get(path) == (len(data), hashlib.sha256(data).hexdigest()),
            f"dump: artifact {path} has the uploaded size and sha256",
        )
    run = next(r for r in dump["runs"] if r["info"]["run_id"] == ids.runs["9439c2f85a1149e090195a506209e085"])
    loss = [(m["value"], m["step"]) for m in run["metrics"] if m["key"] == "loss"]
    check(loss == [(1.0, 0), (0.5, 1), (0.3333333333333333, 2), (0.25, 3), (0.2, 4), (0.19, 4)],
          "dump: the loss history in logging order", repr(loss))  # fmt: skip
    check(not any(m["key"] == "should_not_land" for m in run["metrics"]), "dump: a refused batch stored nothing")
    check([a["path"] for a in run["artifacts"]] == ["eval/summary.json", "model/weights.bin", "report.csv"],
          "dump: the run's artifacts", repr(run["artifacts"]))  # fmt: skip
    print("ok   dump")


# ---------------------------------------------------------------------------
# what MLflow does not have


def call(conn, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    status, _, payload = request(conn, method, path, data, [("Content-Type", "application/json")] if data else [])
    return status, json.loads(payload) if payload else None


def check_search(server):
    """runs/search filters and pages, get-history pages: MLflow's rules, not in the transcripts."""
    conn = server.connection()
    _, created = call(conn, "POST", "/api/2.0/mlflow/experiments/create", {"name": "search"})
    eid = created["experiment_id"]
    runs = {}
    for i, name in enumerate(["a", "b", "c"]):
        tags = [{"key": "kiln.run.id", "value": f"r{i}"}]
        _, out = call(conn, "POST", "/api/2.0/mlflow/runs/create",
                      {"experiment_id": eid, "run_name": name, "start_time": 1000 * (i + 1), "tags": tags})  # fmt: skip
        runs[name] = out["run"]["info"]["run_id"]
        params = [{"key": "x", "value": "y" if name != "c" else "z"}]
        call(conn, "POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": runs[name], "params": params})

    def search(**body):
        status, out = call(conn, "POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [eid], **body})
        names = [r["info"]["run_name"] for r in out.get("runs", [])] if status == 200 else None
        return status, names, out

    for filter_string, want in [
        ("tags.kiln.run.id = 'r1'", ["b"]),
        ("tags.`kiln.run.id` = 'r1'", ["b"]),
        ('tags."kiln.run.id" = "r2"', ["c"]),
        ("params.x = 'y' and attributes.run_name = 'a'", ["a"]),
        ("params.x = 'y' AND run_name != 'a'", ["b"]),
        ("tags.kiln.run.id LIKE 'r%'", ["c", "b", "a"]),
        ("attributes.run_id IN ('%s', '%s')" % (runs["a"], runs["c"]), ["c", "a"]),
        ("attributes.start_time > 1500", ["c", "b"]),
        ("tags.missing = 'x'", []),
    ]:
        status, names, out = search(filter=filter_string)
        check(status == 200 and names == want, f"search {filter_string!r} finds {want}", json.dumps(out))
    status, _, out = search(filter="tags.kiln.run.id = r1")
    check(status == 400 and out["error_code"] == "INVALID_PARAMETER_VALUE", "search: an unquoted string is refused")

    # Pages of max_results; as MLflow's SQL store, a token whenever a page is full.
    status, names, first = search(max_results=2)
    check(names == ["c", "b"] and "next_page_token" in first, "search: first page, newest first", json.dumps(first))
    status, names, second = search(max_results=2, page_token=first.get("next_page_token"))
    check(names == ["a"] and "next_page_token" not in second, "search: last page without a token", json.dumps(second))
    status, names, out = search(max_results=1, page_token=search(max_results=1)[2]["next_page_token"])
    status, _, out = search(max_results=1, page_token=out["next_page_token"])
    status, _, out = search(max_results=1, page_token=out["next_page_token"])
    check(status == 200 and out == {}, "search: a full last page has a token; the next page is {}", json.dumps(out))

    call(conn, "POST", "/api/2.0/mlflow/runs/delete", {"run_id": runs["b"]})
    check(search()[1] == ["c", "a"], "search: deleted runs are left out by default")
    check(search(run_view_type="ALL")[1] == ["c", "b", "a"], "search: run_view_type ALL")
    check(search(run_view_type="DELETED_ONLY")[1] == ["b"], "search: run_view_type DELETED_ONLY")

    metrics = [{"key": "m", "value": i, "timestamp": 5, "step": i} for i in range(5)]
    call(conn, "POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": runs["a"], "metrics": metrics})
    history = f"/api/2.0/mlflow/metrics/get-history?run_id={runs['a']}&metric_key=m"
    status, out = call(conn, "GET", history)
    check([m["step"] for m in out["metrics"]] == [0, 1, 2, 3, 4] and "next_page_token" not in out,
          "get-history without max_results: everything")  # fmt: skip
    steps, token, pages = [], "", 0
    while token is not None and pages < 5:
        status, out = call(conn, "GET", f"{history}&max_results=2" + (f"&page_token={token}" if token else ""))
        steps += [m["step"] for m in out.get("metrics", [])]
        token, pages = out.get("next_page_token"), pages + 1
    check(steps == [0, 1, 2, 3, 4] and pages == 3, f"get-history in pages of 2: {steps} in {pages} pages")
    # The latest point per key: highest step, then timestamp, then value; not the last logged.
    batches = [[("late", 9, 1, 2.0), ("late", 1, 9, 3.0), ("late", 9, 1, 1.0)],
               [("tie", 7, 9, 1.0), ("tie", 7, 9, 5.0), ("tie", 7, 9, 2.0)]]  # fmt: skip
    for batch in batches:
        for key, step, ts, value in batch:
            call(conn, "POST", "/api/2.0/mlflow/runs/log-metric",
                 {"run_id": runs["a"], "key": key, "value": value, "timestamp": ts, "step": step})  # fmt: skip
    status, out = call(conn, "GET", f"/api/2.0/mlflow/runs/get?run_id={runs['a']}")
    latest = out["run"]["data"]["metrics"]
    want = [{"key": "m", "value": 4.0, "timestamp": 5, "step": 4},
            {"key": "late", "value": 2.0, "timestamp": 1, "step": 9},
            {"key": "tie", "value": 5.0, "timestamp": 9, "step": 7}]  # fmt: skip
    check(latest == want, "runs/get: the latest point per key", json.dumps(latest))
    conn.close()
    print("ok   runs/search filters and pages, get-history pages")


def create_experiment(server, name, timeout=10):
    conn = server.connection(timeout)
    try:
        return request(conn, "POST", "/api/2.0/mlflow/experiments/create", json.dumps({"name": name}).encode(),
                       [("Content-Type", "application/json")])  # fmt: skip
    finally:
        conn.close()


def experiment_exists(server, name):
    conn = server.connection()
    status, _, _ = request(conn, "GET", f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")
    conn.close()
    return status == 200


def check_faults(server):
    server.control("POST", "reset-stats")
    server.control("POST", "faults", {"rate": 1, "kinds": ["503"], "seed": 7, "retry_after": 2})
    status, headers, body = create_experiment(server, "fault-503")
    retry = headers.get("Retry-After")
    check(status == 503 and retry == "2", f"503 with Retry-After: 2 (got {status}, {retry})")
    server.control("POST", "faults", {"kinds": ["429"]})
    status, headers, body = create_experiment(server, "fault-429")
    check(
        status == 429 and headers.get("Retry-After") == "2" and json.loads(body)["error_code"] == "REQUEST_LIMIT_EXCEEDED",
        f"429 REQUEST_LIMIT_EXCEEDED with Retry-After (got {status} {body!r})",
    )
    server.control("POST", "faults", {"kinds": ["500"]})
    status, headers, body = create_experiment(server, "fault-500")
    check(
        status == 500 and json.loads(body)["error_code"] == "INTERNAL_ERROR", f"500 INTERNAL_ERROR (got {status} {body!r})"
    )

    server.control("POST", "faults", {"kinds": ["drop"]})
    try:
        create_experiment(server, "fault-drop")
        fail("drop: the connection is closed without an answer")
    except (http.client.RemoteDisconnected, ConnectionResetError):
        pass
    server.control("POST", "faults", {"kinds": ["drop-after"]})
    try:
        create_experiment(server, "fault-drop-after")
        fail("drop-after: the connection is closed without an answer")
    except (http.client.RemoteDisconnected, ConnectionResetError):
        pass
    server.control("POST", "faults", {"kinds": ["slow"], "slow_seconds": 2})
    started = time.monotonic()
    try:
        create_experiment(server, "fault-slow", timeout=0.3)
        fail("slow: the answer comes after the client's timeout")
    except (socket.timeout, TimeoutError):
        pass
    check(time.monotonic() - started < 1.5, "slow: the client gave up first")

    server.control("POST", "faults", {"rate": 0})
    for name, stored in [("fault-503", False), ("fault-429", False), ("fault-500", False), ("fault-drop", False),
                         ("fault-drop-after", True), ("fault-slow", True)]:  # fmt: skip
        state = "processed" if stored else "not processed"
        check(experiment_exists(server, name) == stored, f"{name}: request {state}")

    # A queue of faults for matching requests only, ahead of the rate.
    server.control("POST", "faults", {"next": ["500"], "only": "experiments/get-by-name"})
    conn = server.connection()
    check(request(conn, "GET", "/health")[0] == 200, "next/only: a request that does not match is not faulted")
    path = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=fault-slow"
    check(request(conn, "GET", path)[0] == 500, "next/only: the next matching request gets the queued fault")
    check(request(conn, "GET", path)[0] == 200, "next/only: then no more faults")
    conn.close()
    server.control("POST", "faults", {"only": None, "rate": 0, "next": []})

    stats = server.control("GET", "stats")
    want = {"503": 1, "429": 1, "500": 2, "drop": 1, "drop-after": 1, "slow": 1}
    check(stats["faults"] == 7 and stats["by_fault"] == want, "stats count the faults", json.dumps(stats, indent=1))
    print("ok   faults")


def read_raw_response(sock_file):
    """Reads one Content-Length response from a socket file; returns (status, raw bytes)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = sock_file.readline()
        if not line:
            raise ConnectionError("closed")
        head += line
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    return int(head.split(b" ")[1]), head + sock_file.read(length)


def check_connections_and_bytes(server):
    server.control("POST", "reset-stats")
    conn = server.connection()
    first = request(conn, "GET", "/health")
    sock = conn.sock
    second = request(conn, "GET", "/version")
    check(first[0] == 200 and second[0] == 200 and conn.sock is sock, "keep-alive: two answers on one connection")
    conn.close()
    stats = server.control("GET", "stats")
    check(stats["connections"] == 1 and stats["requests"] == 2, "keep-alive: stats show 1 connection, 2 requests",
          json.dumps(stats, indent=1))  # fmt: skip

    # Exact byte counts, Expect: 100-continue and a chunked upload, on one raw connection.
    server.control("POST", "reset-stats")
    sent = received = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        f = s.makefile("rb")
        req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(req)
        status, raw = read_raw_response(f)
        sent, received = sent + len(req), received + len(raw)

        head = (b"PUT /api/2.0/mlflow-artifacts/artifacts/9/expect.bin HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
        s.sendall(head)
        cont = f.readline() + f.readline()
        check(cont == b"HTTP/1.1 100 Continue\r\n\r\n", f"Expect: 100-continue is answered (got {cont!r})")
        s.sendall(b"hello")
        status, raw = read_raw_response(f)
        check(status == 200, f"upload after 100 Continue answered {status}")
        sent, received = sent + len(head) + 5, received + len(cont) + len(raw)

        req = (b"PUT /api/2.0/mlflow-artifacts/artifacts/9/chunked.txt HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"6\r\nchunk \r\n7\r\nupload\n\r\n0\r\n\r\n")  # fmt: skip
        s.sendall(req)
        status, raw = read_raw_response(f)
        check(status == 200, f"chunked upload answered {status}")
        sent, received = sent + len(req), received + len(raw)
    stats = server.control("GET", "stats")
    check(stats["bytes_in"] == sent and stats["bytes_out"] == received and stats["connections"] == 1,
          f"stats: bytes_in {sent}, bytes_out {received}, 1 connection", json.dumps(stats, indent=1))  # fmt: skip
    check(stats["by_endpoint"] == {"GET /health": 1, "PUT /api/2.0/mlflow-artifacts/artifacts/*": 2},
          "stats: by_endpoint", json.dumps(stats["by_endpoint"]))  # fmt: skip
    conn = server.connection()
    status, _, body = request(conn, "GET", "/api/2.0/mlflow-artifacts/artifacts/9/chunked.txt")
    check(status == 200 and body == b"chunk upload\n", f"the chunked upload reads back (got {body!r})")
    status, _, body = request(conn, "GET", "/api/2.0/mlflow-artifacts/artifacts/9/expect.bin")
    check(status == 200 and body == b"hello", f"the 100-continue upload reads back (got {body!r})")
    conn.close()
    print("ok   keep-alive, byte counts, chunked and 100-continue uploads")


def check_auth_and_tls(tmp):
    openssl = shutil.which("openssl")
    if not openssl:
        fail("the openssl command is needed to make a test certificate (apt-get install openssl)")
        return
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    password, token = "pw-5ecret-Qx", "tok-5ecret-Zy"
    server = ServerProcess(tmp, "tls", "--username", "kiln", "--password", password, "--token", token,
                           "--tls-cert", cert, "--tls-key", key)  # fmt: skip
    context = ssl.create_default_context(cafile=cert)

    def get(path, authorization=None):
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10, context=context)
        headers = [("Authorization", authorization)] if authorization else []
        status, headers, body = request(conn, "GET", path, b"", headers)
        conn.close()
        return status, headers, body

    search = "/api/2.0/mlflow/experiments/search?max_results=5"
    basic = "Basic " + base64.b64encode(f"kiln:{password}".encode()).decode()
    wrong = "Basic " + base64.b64encode(b"kiln:nope").decode()
    status, headers, body = get(search)
    check(
        status == 401
        and headers.get("WWW-Authenticate") == 'Basic realm="mlflow"'
        and headers.get("Content-Type") == "text/html; charset=utf-8"
        and body.decode().startswith("You are not authenticated."),
        f"auth: 401 without credentials (got {status} {body!r})",
    )
    check(get(search, basic)[0] == 200, "auth: Basic with the right password")
    check(get(search, wrong)[0] == 401, "auth: Basic with a wrong password is 401")
    check(get(search, f"Bearer {token}")[0] == 200, "auth: Bearer with the right token")
    check(get(search, "Bearer nope")[0] == 401, "auth: a wrong token is 401")
    check(get("/health")[0] == 200, "auth: /health needs no credentials")
    try:
        plain = server.connection(timeout=3)
        request(plain, "GET", "/health")
        fail("tls: a plain HTTP request to the TLS port fails")
    except (http.client.HTTPException, OSError):
        pass
    server.stop()
    log = open(server.log_path).read()
    check(len(log.splitlines()) >= 6, "log: one line per request", log)
    for secret in (password, token, basic.split()[1]):
        check(secret not in log, "log: no credentials in the request log", log)
    print("ok   auth and TLS")


def main():
    tmp = tempfile.mkdtemp(prefix="mlflow-conformance.")
    try:
        started = time.monotonic()
        server = ServerProcess(tmp, "main")
        ids, uploaded = replay(server)
        check_dump(server, ids, uploaded)
        check_search(server)
        check_faults(server)
        check_connections_and_bytes(server)
        server.stop()
        check_auth_and_tls(tmp)
        print(f"{time.monotonic() - started:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
