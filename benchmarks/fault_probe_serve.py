"""Fault probe, serving part: hostile HTTP clients against real ``metarec serve`` processes on
127.0.0.1, on both serving paths (the batched kernel of a two-tower run, and the library path of
the same run with ``--no-kernel``), over raw sockets (issue 22).

Outcomes as in ``benchmarks/fault_probe.py``: CLEAR ERROR (a 4xx whose one-line JSON error names
the field or the limit), CORRECT (the answer checked), TRACEBACK (a 500 "internal error" or a
traceback in the server's log), SILENT WRONG (accepted what should be refused, a wrong answer,
a neighbour harmed, a connection left open past its time-out), HANG (no answer in time),
UNEXPECTED ERROR, SKIPPED.

Writes ``benchmarks/results/fault_probe_serve.md`` and ``.jsonl``. Usage::

    python benchmarks/fault_probe_serve.py [--only SUBSTRING] [--out DIR] [--repo DIR]

``--repo DIR`` probes another source tree (flags it does not know are left out, so the cases
then meet its defaults). The exit status is 1 when any case is not CLEAR ERROR / CORRECT / SKIPPED.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fault_probe as fp  # noqa: E402
from fault_probe import PY, Row, call, env, write_csv, write_scenario  # noqa: E402

LIMITS = {
    "--header-timeout": "1",
    "--body-timeout": "1",
    "--keep-alive": "1",
    "--max-header-bytes": "16384",
    "--max-connections": "200",
}
TIMEOUT = 1.0  # the header / body / keep-alive time-outs given above
GIVE = 15.0  # how long a probe waits before it calls a connection "left open"


# ------------------------------------------------------------------ servers
@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path
    since: int = 0  # the log's length when the current case began

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def mark(self) -> None:
        self.since = len(self.log.read_text(errors="replace"))

    def traceback(self) -> str | None:
        """A traceback the server logged since :meth:`mark` (during the current case)."""
        text = self.log.read_text(errors="replace")[self.since :]
        return text[text.index("Traceback") :][:300] if "Traceback" in text else None


_FLAGS: dict[str, bool] = {}


def _supported(flag: str) -> bool:
    if not _FLAGS:
        with tempfile.TemporaryDirectory() as d:  # not the repository: `-m metarec` would import it
            out = call(["serve", "--help"], Path(d)).out
        _FLAGS.update({f: f in out for f in [*LIMITS, "--no-kernel", "--token-file"]})
    return _FLAGS.get(flag, False)


def start(run: Path, folder: Path, *extra: str, nofile: int | None = None) -> Server:
    args = ["serve", "--run", str(run), "--port", "0", "--max-wait-ms", "300"]
    for k, v in LIMITS.items():
        if _supported(k):
            args += [k, v]
    args += list(extra)
    log = folder / f"server-{len(list(folder.glob('server-*.log')))}.log"
    pre = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
    f = log.open("w")
    proc = subprocess.Popen(
        [PY, "-m", "metarec", *args],
        cwd=folder,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=f,
        text=True,
        preexec_fn=pre,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    m = re.search(r"listening on (http://\S+)", line)
    if not m:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the server did not start: {line!r} {log.read_text()[-500:]}")
    return Server(proc, m.group(1), log)


# ------------------------------------------------------------------ raw HTTP
def read_response(s: socket.socket, timeout: float = 30.0) -> tuple[int, bytes]:
    s.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return 0, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"content-length:\s*(\d+)", head, re.I)
        n = int(m.group(1)) if m else 0
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(head.split(b" ", 2)[1]), body
    except TimeoutError:
        return -1, data
    except ConnectionResetError:
        return 0, data


def request(
    srv: Server, method: str, path: str, body: bytes = b"", headers: str = ""
) -> tuple[int, Any]:
    with socket.create_connection(srv.addr, timeout=60) as s:
        s.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n".encode()
            + body
        )
        code, raw = read_response(s, 60)
    try:
        return code, json.loads(raw or b"{}")
    except ValueError:
        return code, raw[:300].decode(errors="replace")


def closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    s.settimeout(seconds)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def rss_kib(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1])
    return 0


# ------------------------------------------------------------------ classification
def http_error(srv: Server, code: int, out: Any, want: int, *words: str) -> tuple[str, str]:
    if code == 500 or srv.traceback():
        return "TRACEBACK", f"HTTP {code}: {str(out)[:200]}" + (
            f"; log: {srv.traceback()}" if srv.traceback() else ""
        )
    if code in (-1, 0):
        return "HANG", f"no answer (status {code})"
    if code == 200:
        return "SILENT WRONG", "HTTP 200; a clear error was expected"
    msg = out.get("error", "") if isinstance(out, dict) else str(out)
    if code != want:
        return "VAGUE ERROR", f"HTTP {code} (wanted {want}): {msg[:200]}"
    missing = [w for w in words if w.lower() not in msg.lower()]
    if missing or "\n" in msg:
        return "VAGUE ERROR", f"the message does not name {missing}: {msg[:200]}"
    return "CLEAR ERROR", ""


@dataclass
class SCase:
    cls: str
    name: str
    fn: Callable[..., tuple[str, str, str]]  # (servers, folder) -> (shown request, outcome, detail)
    paths: tuple[str, ...] = ("kernel", "library")


CASES: list[SCase] = []


def case(cls: str, name: str, paths: tuple[str, ...] = ("kernel", "library")):
    def deco(fn):
        CASES.append(SCase(cls, name, fn, paths))
        return fn

    return deco


def _ordinary(items: list[str], n: int) -> list[dict]:
    return [
        {
            "user": f"probe-{b}",
            "k": 5,
            "support": [
                {"item": items[(b * 3 + j) % len(items)], "rating": 1 + (b + j) % 5}
                for j in range(4)
            ],
        }
        for b in range(n)
    ]


def _hostile(srv: Server, body: bytes, want: int, *words: str) -> tuple[str, str, str]:
    code, out = request(srv, "POST", "/recommend", body)
    return (f"POST /recommend {body[:60]!r}...", *http_error(srv, code, out, want, *words))


# --- isolation -------------------------------------------------------------------------------
@case("isolation", "a lone-surrogate user id batched with ordinary requests")
def _surrogate_batch(srv: Server, ctx: dict) -> tuple[str, str, str]:
    bodies = _ordinary(ctx["items"], 6)
    solo = [request(srv, "POST", "/recommend", json.dumps(b).encode()) for b in bodies]
    hostile = b'{"user": "\\ud800", "k": 5, "support": []}'
    mixed = [json.dumps(b).encode() for b in bodies] + [hostile]
    with ThreadPoolExecutor(len(mixed)) as pool:
        got = list(pool.map(lambda b: request(srv, "POST", "/recommend", b), mixed))
    shown = "6 ordinary + 1 hostile POST /recommend at once"
    for (c, o), (c0, o0) in zip(got[:6], solo, strict=True):
        if c != 200 or c0 != 200:
            return (
                shown,
                ("TRACEBACK" if 500 in (c, c0) else "SILENT WRONG"),
                f"an ordinary request got {c} ({str(o)[:150]})",
            )
        if [x["item"] for x in o["items"]] != [x["item"] for x in o0["items"]]:
            return shown, "SILENT WRONG", "an ordinary answer differs from its solo answer"
    return (shown, *http_error(srv, *got[6], 400, "user", "unicode"))


@case("isolation", "100,000-deep nesting in support")
def _deep(srv: Server, ctx: dict) -> tuple[str, str, str]:
    return _hostile(
        srv,
        b'{"user": "u", "support": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        "support",
        "nested",
    )


@case("isolation", "a 5000-digit k")
def _huge_k(srv: Server, ctx: dict) -> tuple[str, str, str]:
    return _hostile(srv, b'{"user": "u", "k": ' + b"9" * 5000 + b"}", 400, "k=")


@case("isolation", "a rating of 1e999 (infinity)")
def _inf(srv: Server, ctx: dict) -> tuple[str, str, str]:
    item = ctx["items"][0]
    return _hostile(
        srv,
        b'{"user": "u", "support": [{"item": "%s", "rating": 1e999}]}' % item.encode(),
        400,
        "rating",
        "finite",
    )


@case("isolation", "a 400-digit integer rating")
def _bigint_rating(srv: Server, ctx: dict) -> tuple[str, str, str]:
    item = ctx["items"][0]
    return _hostile(
        srv,
        b'{"user": "u", "support": [{"item": "%s", "rating": %s}]}' % (item.encode(), b"9" * 400),
        400,
        "rating",
    )


@case("isolation", "a lone-surrogate support item")
def _surrogate_item(srv: Server, ctx: dict) -> tuple[str, str, str]:
    return _hostile(
        srv,
        b'{"user": "u", "support": [{"item": "\\udfff", "rating": 3}]}',
        400,
        "support[0].item",
        "unicode",
    )


@case("isolation", "repeated support rows warn in the JSON answer")
def _repeats(srv: Server, ctx: dict) -> tuple[str, str, str]:
    item = ctx["items"][0]
    body = {"user": "rep", "k": 3, "support": [{"item": item, "rating": 5}] * 3}
    code, out = request(srv, "POST", "/recommend", json.dumps(body).encode())
    shown = "POST /recommend with one item rated 3 times"
    if code != 200:
        return shown, "UNEXPECTED ERROR", f"HTTP {code}: {str(out)[:200]}"
    ok = any("3 times" in w for w in out.get("warnings", []))
    return shown, ("CORRECT" if ok else "SILENT WRONG"), "" if ok else "no warning in the answer"


@case("isolation", "ids are strings in answers (a run trained on numeric ids)")
def _strings(srv: Server, ctx: dict) -> tuple[str, str, str]:
    num: Server = ctx["numeric"][ctx["path"]]
    code, out = request(num, "POST", "/recommend", json.dumps({"user": 100, "k": 3}).encode())
    shown = "POST /recommend {user: 100} to a run with numeric ids"
    if code != 200:
        return shown, "UNEXPECTED ERROR", f"HTTP {code}: {str(out)[:200]}"
    ok = isinstance(out["user"], str) and all(isinstance(x["item"], str) for x in out["items"])
    return (
        shown,
        ("CORRECT" if ok else "SILENT WRONG"),
        ""
        if ok
        else f"ids of types {type(out['user']).__name__}, {type(out['items'][0]['item']).__name__}",
    )


# --- limits and time-outs ----------------------------------------------------------------------
@case("limits", "200 MiB of headers")
def _headers(srv: Server, ctx: dict) -> tuple[str, str, str]:
    before = rss_kib(srv.proc.pid)
    line = b"X-Big: " + b"a" * (1 << 20) + b"\r\n"
    sent = 0
    with socket.create_connection(srv.addr, timeout=30) as s:
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            for _ in range(200):
                s.sendall(line)
                sent += len(line)
            s.sendall(b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        code, raw = read_response(s, 30)
    grew = (rss_kib(srv.proc.pid) - before) // 1024
    shown = f"GET /health with 200 MiB of headers ({sent >> 20} MiB sent before the server closed)"
    if code == 431 and b"--max-header-bytes" in raw:
        return shown, "CLEAR ERROR", f"server RSS +{grew} MiB"
    if code in (200, 400) or grew > 100:
        return shown, "SILENT WRONG", f"HTTP {code}; server RSS +{grew} MiB"
    return shown, "VAGUE ERROR", f"HTTP {code}: {raw[:150]!r}"


@case("limits", "an idle connection, /health meanwhile")
def _idle(srv: Server, ctx: dict) -> tuple[str, str, str]:
    with socket.create_connection(srv.addr) as s:
        h = request(srv, "GET", "/health")[0]
        t0 = time.monotonic()
        done, _ = closed_within(s, GIVE)
        took = time.monotonic() - t0
    shown = "connect, send nothing"
    if h != 200:
        return shown, "SILENT WRONG", f"/health answered {h} meanwhile"
    if not done:
        return shown, "SILENT WRONG", f"still open after {GIVE:.0f} s"
    return (
        shown,
        ("CORRECT" if took <= TIMEOUT + 2 else "SILENT WRONG"),
        f"closed after {took:.1f} s",
    )


@case("limits", "a client sending 1 byte/s")
def _slow(srv: Server, ctx: dict) -> tuple[str, str, str]:
    stop = threading.Event()
    with socket.create_connection(srv.addr) as s:

        def trickle() -> None:
            for b in b"GET /health HTTP/1.1\r\nHost: x\r\n" * 10:
                try:
                    s.send(bytes([b]))
                except OSError:
                    return
                if stop.wait(1.0):
                    return

        threading.Thread(target=trickle, daemon=True).start()
        t0 = time.monotonic()
        done, got = closed_within(s, GIVE)
        took = time.monotonic() - t0
        stop.set()
    shown = "a request head at 1 byte/s"
    if not done:
        return shown, "SILENT WRONG", f"still open after {GIVE:.0f} s"
    if got.startswith(b"HTTP/1.1 408") and took <= TIMEOUT + 3:
        return shown, "CLEAR ERROR", f"408 after {took:.1f} s"
    return shown, "SILENT WRONG", f"closed after {took:.1f} s with {got[:60]!r}"


@case("limits", "a body sent in part, then nothing")
def _slow_body(srv: Server, ctx: dict) -> tuple[str, str, str]:
    with socket.create_connection(srv.addr) as s:
        s.sendall(b'POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"user":')
        t0 = time.monotonic()
        done, got = closed_within(s, GIVE)
        took = time.monotonic() - t0
    shown = "POST with 8 of 100 body bytes"
    if not done:
        return shown, "SILENT WRONG", f"still open after {GIVE:.0f} s"
    if got.startswith(b"HTTP/1.1 408"):
        return shown, "CLEAR ERROR", f"408 after {took:.1f} s"
    return shown, "SILENT WRONG", f"closed after {took:.1f} s with {got[:60]!r}"


@case("limits", "300 idle connections against a 256-file limit", paths=("kernel",))
def _many(srv: Server, ctx: dict) -> tuple[str, str, str]:
    own = start(ctx["run"], ctx["folder"], nofile=256)
    held: list[socket.socket] = []
    try:
        for _ in range(300):
            try:
                held.append(socket.create_connection(own.addr, timeout=5))
            except OSError:
                break
        time.sleep(0.5)
        t0 = time.monotonic()
        code = -1
        while time.monotonic() - t0 < GIVE:
            try:
                code = request(own, "GET", "/health")[0]
            except OSError:
                code = 0
            if code == 200:
                break
            time.sleep(0.2)
        took = time.monotonic() - t0
        shown = f"{len(held)} idle connections, then GET /health (server ulimit -n 256)"
        if own.traceback():
            return shown, "TRACEBACK", own.traceback() or ""
        if code != 200:
            return shown, "SILENT WRONG", f"/health still failing after {GIVE:.0f} s (last {code})"
        return (
            shown,
            ("CORRECT" if took <= TIMEOUT + 3 else "SILENT WRONG"),
            f"/health 200 after {took:.1f} s",
        )
    finally:
        for s in held:
            s.close()
        own.stop()


# --- production surface ------------------------------------------------------------------------
@case("surface", "/openapi.json, /docs, /metrics, /ready", paths=("kernel",))
def _surface(srv: Server, ctx: dict) -> tuple[str, str, str]:
    bad = []
    code, doc = request(srv, "GET", "/openapi.json")
    if code != 200 or not isinstance(doc, dict) or "/recommend" not in doc.get("paths", {}):
        bad.append(f"/openapi.json {code}")
    for path in ("/docs", "/docs/swagger-ui-bundle.js", "/metrics", "/ready"):
        c, _ = request(srv, "GET", path)
        if c != 200:
            bad.append(f"{path} {c}")
    return (
        "GET /openapi.json, /docs, /metrics, /ready",
        ("SILENT WRONG" if bad else "CORRECT"),
        "; ".join(bad),
    )


@case("surface", "bearer token: 401 without it, 200 with it", paths=("kernel",))
def _token(srv: Server, ctx: dict) -> tuple[str, str, str]:
    shown = "serve --token-file; POST /recommend without and with the token"
    if not _supported("--token-file"):
        return shown, "SILENT WRONG", "metarec serve has no --token-file: every request is served"
    tok = ctx["folder"] / "token"
    tok.write_text("probe-token\n")
    own = start(ctx["run"], ctx["folder"], "--token-file", str(tok))
    try:
        body = json.dumps({"user": "u", "k": 2}).encode()
        c1, out = request(own, "POST", "/recommend", body)
        c2, _ = request(own, "POST", "/recommend", body, "Authorization: Bearer probe-token\r\n")
    finally:
        own.stop()
    if c1 == 401 and c2 == 200 and "bearer token" in str(out):
        return shown, "CLEAR ERROR", ""
    return shown, "SILENT WRONG", f"without: {c1}, with: {c2}"


@case("surface", "SIGTERM drains queued requests", paths=("kernel",))
def _drain(srv: Server, ctx: dict) -> tuple[str, str, str]:
    own = start(ctx["run"], ctx["folder"])
    bodies = [json.dumps(b).encode() for b in _ordinary(ctx["items"], 8)]
    with ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(request, own, "POST", "/recommend", b) for b in bodies]
        time.sleep(0.1)
        own.proc.send_signal(signal.SIGTERM)
        codes = [f.result()[0] for f in futs]
    rc = own.proc.wait(60)
    ok = codes == [200] * 8 and rc == 0
    return (
        "8 queued requests, then SIGTERM",
        ("CORRECT" if ok else "SILENT WRONG"),
        f"answers {codes}, exit {rc}",
    )


# ------------------------------------------------------------------ driver
SERVE_SETS = ["model.name='two_tower'", "model.hidden=[16, 8]", "algorithm.inner_lr=0.1"]


def build(root: Path, name: str, *sets: str, numeric: bool = False) -> Path:
    folder = root / name
    folder.mkdir()
    write_csv(folder / "data.csv", numeric=numeric)
    if numeric:  # item ids "i7" -> 7 as well
        text = (folder / "data.csv").read_text()
        (folder / "data.csv").write_text(re.sub(r",i(\d+),", r",\1,", text))
    write_scenario(folder, data_extra='ids = "numeric"\n' if numeric else "")
    p = call(fp.train_args(*SERVE_SETS, *sets), folder)
    if p.rc != 0:
        raise SystemExit(f"fault_probe_serve: the {name} run failed:\n{p.err[-2000:]}")
    return folder / "run"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only", help="comma-separated: run only the cases whose name contains one of these"
    )
    ap.add_argument(
        "--out", default=str(fp.ROOT / "benchmarks" / "results"), help="folder of the report"
    )
    ap.add_argument("--repo", help="probe this source tree instead (PYTHONPATH)")
    args = ap.parse_args(argv)
    if args.repo:
        fp.ROOT = Path(args.repo).resolve()
    want = [w.strip().lower() for w in (args.only or "").split(",") if w.strip()]
    cases = [c for c in CASES if not want or any(w in c.name.lower() for w in want)]
    t0 = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="metarec-probe-serve-") as tmp:
        root = Path(tmp)
        run = build(root, "base")
        numeric = build(root, "numeric", numeric=True)
        items = [
            str(x)
            for x in json.loads((run / "encoders.json").read_text())["item_ids"]["values"][:20]
        ]
        lib = ("--no-kernel",) if _supported("--no-kernel") else ()
        servers = {"kernel": start(run, root), "library": start(run, root, *lib)}
        nums = {"kernel": start(numeric, root), "library": start(numeric, root, *lib)}
        try:
            for c in cases:
                for path in c.paths:
                    folder = root / f"case{len(rows):02d}"
                    folder.mkdir()
                    ctx = {
                        "items": items,
                        "run": run,
                        "folder": folder,
                        "path": path,
                        "numeric": nums,
                    }
                    for srv in (*servers.values(), *nums.values()):
                        srv.mark()
                    t1 = time.perf_counter()
                    try:
                        shown, outcome, detail = c.fn(servers[path], ctx)
                    except Exception as e:  # noqa: BLE001 - a probe that itself failed is reported
                        shown, outcome, detail = (
                            "",
                            "PROBE FAILED",
                            f"{type(e).__name__}: {e}"[:300],
                        )
                    rows.append(
                        Row(
                            c.cls,
                            f"{c.name} [{path}]",
                            shown,
                            outcome,
                            "",
                            round(time.perf_counter() - t1, 1),
                            detail,
                        )
                    )
                    print(
                        f"{outcome:<17} {c.cls:<11} {c.name} [{path}]"
                        + (f"  -- {detail}" if detail else ""),
                        flush=True,
                    )
        finally:
            for s in (*servers.values(), *nums.values()):
                s.stop()
    seconds = time.perf_counter() - t0
    jl, md = fp.write(
        rows, Path(args.out), seconds, "fault_probe_serve", "Fault probe: hostile HTTP clients"
    )
    bad = [r for r in rows if r.outcome not in fp.GOOD]
    print(
        f"{len(rows)} cases in {seconds:.0f} s; {len(bad)} not CLEAR ERROR / CORRECT; wrote {md} and {jl}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
