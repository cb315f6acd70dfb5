"""Hot endpoints against a bare Flask endpoint, same gunicorn settings, same run; one table.

    .venv/bin/python bench/bench_api.py                 # both databases, 3 alternating rounds of 10 s
    .venv/bin/python bench/bench_api.py --quick         # one round of 2 s per row (under 2 minutes)
    .venv/bin/python bench/bench_api.py --rows 10000000 # statuses p99 with 1 k, then N stored connections
    .venv/bin/python bench/bench_api.py --refresh-due [--connections N] [--runners R] [--concurrency C]
                                                        # refresh-due throughput (see bench/refresh_due.py)

For each database (SQLite in a temp dir; PostgreSQL at --pg-url, a database of its own that
this script drops and recreates) it seeds an org, an app with one requirement, one user with a
connection, then starts two gunicorn servers with ``deploy/gunicorn.conf.py`` (``--workers``, default
2): the bare app (bench/bare_app.py) and connect-service. wrk (1 thread, 16 connections) drives
each row in alternating rounds (bare, row, bare, row, ...); a row's ratio is its req/s over the
mean bare req/s of the same rounds. Rate limits are raised so wrk measures work, not 429s.
"ratio range" is the lowest and highest ratio of a row's rounds, each against the bare run just
before it: how far the machine's noise moves a ratio within one run; "median" is the median of
those paired ratios, which a slow spell of the machine during one round moves least.
"CPU µs" is the machine's busy CPU time per request during a row's rounds (median; from
``/proc/stat``, so the servers, wrk and PostgreSQL all count), "CPU ratio" the median over the
rounds of bare's CPU µs per request over the row's, and "idle" the median share of CPU time left
idle. On a machine whose CPUs are the limit, the CPU ratio is what the req/s ratio would be; a
row whose req/s ratio falls well below its CPU ratio, with idle CPU, was waiting, not working
(a lock, a sleep, or the host's slow spells, which move both figures).
The first row, "floor", is bare Flask plus one primary-key lookup through the plain driver
(bare_app.py's /ping-db): what any endpoint that reads the database once per request can reach.
Prints req/s, ratio, p50, p99 and the non-2xx count per row, plus each server's worker RSS
and the load average. Nothing is asserted: benchmarks are not tests.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

import seed  # noqa: E402  (bench/seed.py, beside this file)

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/cs_perf_bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: the second baseline: bare Flask plus one primary-key lookup through the plain driver (bench/bare_app.py)
FLOOR = "floor: bare Flask + 1 indexed query"


def start_gunicorn(target: str, port: int, workers: int, env: dict, cwd: str) -> subprocess.Popen:
    """gunicorn with the project's deploy/gunicorn.conf.py (gthread, 4 threads, keepalive 5)."""
    env = dict(env, CONNECT_BIND=f"127.0.0.1:{port}", CONNECT_WORKERS=str(workers))
    cmd = [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-c",
           os.path.join(ROOT, "deploy", "gunicorn.conf.py"), "--log-level", "warning", target]
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return proc
        except requests.RequestException:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{target} did not start")


def worker_rss_mb(master: subprocess.Popen) -> list[float]:
    """Resident set size of each gunicorn worker (children of the master), in MB."""
    out = []
    try:
        with open(f"/proc/{master.pid}/task/{master.pid}/children") as f:
            pids = f.read().split()
    except OSError:
        return out
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return out


def wrk(url: str, seconds: float, headers: dict[str, str], body: str | None = None,
        connections: int = 16) -> dict:
    """One wrk run: req/s, p50/p99 ms and the non-2xx/3xx count."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    script = None
    if body is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'wrk.method = "POST"\nwrk.body = [[{body}]]\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
        script.close()
        cmd += ["-s", script.name]
    before = cpu_jiffies()
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    busy, total = (b - a for a, b in zip(before, cpu_jiffies()))
    if script:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests_total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50": _ms(out, "50%"), "p99": _ms(out, "99%"), "n": requests_total,
            "non2xx": int(bad.group(1)) if bad else 0, "sockerr": errs.group(0) if errs else "",
            "cpu_us": busy / CLK_TCK * 1e6 / max(requests_total, 1), "idle": 1 - busy / max(total, 1)}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_jiffies() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in clock ticks (``/proc/stat``: every process, the
    servers, wrk and PostgreSQL alike; idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _ms(out: str, pct: str) -> float:
    m = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Servers:
    """The bare app and connect-service under the same gunicorn settings, for one seeded database."""

    def __init__(self, fixture: "seed.Fixture", workers: int):
        self.fixture = fixture
        self.bare_port, self.svc_port = fixture.bare_port, fixture.svc_port
        self.procs = [start_gunicorn("bare_app:app", self.bare_port, workers, fixture.env, BENCH),
                      start_gunicorn("wsgi:app", self.svc_port, workers, fixture.env, ROOT)]

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
            p.wait(timeout=20)

    def cases(self) -> list[tuple[str, str, dict, str | None]]:
        f, base = self.fixture, f"http://127.0.0.1:{self.svc_port}"
        token = {"Authorization": f"Bearer {f.token}"}
        return [
            (FLOOR, f"http://127.0.0.1:{self.bare_port}/ping-db?id={f.org_id}", {}, None),
            ("GET /v1/connect/requirements/statuses", f"{base}/v1/connect/requirements/statuses", token, None),
            ("GET /v1/connect/requirements", f"{base}/v1/connect/requirements", token, None),
            ("POST /v1/connect/tokens", f"{base}/v1/connect/tokens", {"Host": f.hostname},
             '{"user_id": "bench-user"}'),
            ("GET /v1/connections/{id}?include_secrets=true",
             f"{base}/v1/connections/{f.connection_id}?include_secrets=true",
             {"Authorization": f"Bearer {f.access_key}"}, None),
        ]


def run_rounds(servers: Servers, rounds: int, seconds: float, only: list[str] | None = None) -> dict:
    """Alternate bare and each row; sum requests and keep the worst p99 of each row."""
    bare_url = f"http://127.0.0.1:{servers.bare_port}/ping"
    cases = [c for c in servers.cases() if not only or c[0] in only]
    for label, url, headers, body in cases:  # warm every worker and cache
        wrk(url, 1, headers, body)
    wrk(bare_url, 1, {})
    results: dict[str, list[dict]] = {"bare": []}
    for _ in range(rounds):
        for label, url, headers, body in cases:
            bare = wrk(bare_url, seconds, {})
            results["bare"].append(bare)
            run = wrk(url, seconds, headers, body)
            run["pair_ratio"] = run["rps"] / bare["rps"]  # against the bare run just before it
            run["cpu_ratio"] = bare["cpu_us"] / run["cpu_us"]  # machine CPU per request, the same pair
            results.setdefault(label, []).append(run)
    return results


def summarise(runs: list[dict]) -> dict:
    runs_sorted = sorted(runs, key=lambda r: r["p50"])
    return {"rps": sum(r["rps"] for r in runs) / len(runs), "p50": runs_sorted[len(runs) // 2]["p50"],
            "p99": max(r["p99"] for r in runs), "non2xx": sum(r["non2xx"] for r in runs),
            "n": sum(r["n"] for r in runs), "cpu_us": statistics.median(r["cpu_us"] for r in runs),
            "idle": statistics.median(r["idle"] for r in runs)}


def print_table(all_results: list[tuple[str, dict, dict]], rounds: int, seconds: float, workers: int) -> None:
    print(f"\nwrk -t1 -c16, {rounds} alternating round(s) of {seconds:g} s per row; gunicorn "
          f"deploy/gunicorn.conf.py, {workers} workers x 4 threads; load average now {load()}\n")
    print(f"{'endpoint':46} {'db':10} {'req/s':>7} {'bare':>7} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7}"
          f" {'non-2xx':>7} {'ratio range':>12} {'median':>6} {'CPU µs':>6} {'CPU ratio':>9} {'idle':>5}")
    print("-" * 148)
    for db, results, rss in all_results:
        bare = summarise(results["bare"])
        print(f"{'bare Flask GET /ping':46} {db:10} {bare['rps']:7.0f} {bare['rps']:7.0f} {1:6.2f} "
              f"{bare['p50']:7.2f} {bare['p99']:7.2f} {bare['non2xx']:7d} {'':12} {'':6} {bare['cpu_us']:6.0f}"
              f" {1:9.2f} {bare['idle']:5.0%}")
        for label, runs in results.items():
            if label == "bare":
                continue
            s = summarise(runs)
            pairs = [r["pair_ratio"] for r in runs]
            print(f"{label:46} {db:10} {s['rps']:7.0f} {bare['rps']:7.0f} {s['rps'] / bare['rps']:6.2f} "
                  f"{s['p50']:7.2f} {s['p99']:7.2f} {s['non2xx']:7d} {min(pairs):5.2f}-{max(pairs):4.2f}"
                  f" {statistics.median(pairs):6.2f} {s['cpu_us']:6.0f}"
                  f" {statistics.median(r['cpu_ratio'] for r in runs):9.2f} {s['idle']:5.0%}")
        print(f"{'worker RSS MB (bare | service)':46} {db:10} {rss['bare']} | {rss['service']}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round of 2 s per row (under 2 minutes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("CONNECT_BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--rows", type=int, default=0,
                        help="statuses p99 with 1 k stored connections, then with this many (100 per user)")
    parser.add_argument("--refresh-due", action="store_true", help="refresh-due throughput instead")
    import refresh_due  # bench/refresh_due.py (beside this file): its options

    refresh_due.add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2
    if args.refresh_due:
        refresh_due.main(args.pg_url, args.connections, args.runners, args.concurrency, args.batch_size,
                         args.profile, args.py_spy)
        return
    if args.rows:
        rows_mode(args)
        return
    all_results = []
    for db in args.databases.split(","):
        fixture = seed.Fixture(db, args.pg_url)
        servers = Servers(fixture, args.workers)
        try:
            results = run_rounds(servers, args.rounds, args.seconds)
            rss = {"bare": " ".join(f"{x:.0f}" for x in worker_rss_mb(servers.procs[0])),
                   "service": " ".join(f"{x:.0f}" for x in worker_rss_mb(servers.procs[1]))}
        finally:
            servers.close()
        all_results.append(("SQLite" if db == "sqlite" else "PostgreSQL", results, rss))
    print_table(all_results, args.rounds, args.seconds, args.workers)


def rows_mode(args) -> None:
    """statuses p99 with about 1 k stored connections, then after bulk-seeding ``--rows``."""
    label = "GET /v1/connect/requirements/statuses"
    out = []
    for db in args.databases.split(","):
        fixture = seed.Fixture(db, args.pg_url)
        fixture.bulk_connections(1000)
        servers = Servers(fixture, args.workers)
        try:
            small = run_rounds(servers, args.rounds, args.seconds, only=[label])
        finally:
            servers.close()
        started = time.time()
        fixture.bulk_connections(args.rows)
        seeded = time.time() - started
        print(f"{db}: seeded {args.rows} connections in {seeded:.0f} s", flush=True)
        servers = Servers(fixture, args.workers)
        try:
            large = run_rounds(servers, args.rounds, args.seconds, only=[label])
        finally:
            servers.close()
        print(fixture.explain(), flush=True)
        out.append((db, summarise(small[label]), summarise(large[label]), summarise(small["bare"]),
                    summarise(large["bare"])))
    print(f"\nstatuses with 1 k vs {args.rows} stored connections (100 per user); load average {load()}")
    print("(bare: the bare Flask endpoint in the same rounds, to show how loaded the machine was)\n")
    print(f"{'db':10} {'1k req/s':>9} {'1k p99':>8} {'bare p99':>9} {'N req/s':>9} {'N p99':>8} {'bare p99':>9} "
          f"{'p99 N/1k':>9} {'non-2xx':>8}")
    for db, s, big, bare_small, bare_big in out:
        print(f"{db:10} {s['rps']:9.0f} {s['p99']:8.2f} {bare_small['p99']:9.2f} {big['rps']:9.0f} {big['p99']:8.2f} "
              f"{bare_big['p99']:9.2f} {big['p99'] / s['p99']:9.2f} {s['non2xx'] + big['non2xx']:8d}")


if __name__ == "__main__":
    main()
