#!/usr/bin/env python3
"""When replicas are not equal: what each balancing algorithm does with one bad replica.

Three real student-api replicas (release binaries of this workspace) run behind the musl
release balancer. One of them is made bad with the lab's fault knobs (PUT /fault on the
replica, the same JSON the balancer's admin relay takes), then 16 keep-alive clients load
/api/student through the balancer, once per algorithm:

  1. "slow":    replica 3 answers 50 ms late      ({"delay_ms": 50})
  2. "failing": replica 3 answers 20 % of requests 500, fast ({"error_rate": 0.2})

Per algorithm it prints the bad replica's share of the requests (from the balancer's
/api/status per-member request counts, before and after the measured run), the throughput,
p50/p95/p99 latency (wrk's, through the balancer) and the share of 5xx answers.

Two ways to load, because they answer different questions:

  --rate N (default 300): a fixed rate of N requests per second over the 16 connections,
      the same for every algorithm (the balancer's own load generator, POST /api/load, the
      one the dashboard drives; it keeps a wrk2-style schedule). Latency then measures the
      algorithm: no algorithm gets to push the machine into saturation by being fast.
  --rate 0: closed loop (wrk): each client sends its next request as soon as the last is
      answered. Throughput then measures the algorithm, but a fast algorithm runs the two
      cores flat out and its p95 becomes the machine's scheduling delay, not the replicas'.

Each algorithm gets a fresh balancer, a warm-up under the same load (algorithms that learn
need it: gRFC A58's blackout alone is 10 s), then the measured run. An algorithm the
balancer does not accept is skipped with the balancer's own message.

  docs/perf/unequal.py [ALGORITHM ...] [--rate 300] [--duration 15] [--warmup 15]
                       [--conns 16] [--balancer PATH] [--api PATH] [--scenario slow|failing ...]

Default algorithms: round-robin least-connections p2c peak-ewma reported-load. Missing
binaries are built first with
  cargo build --release --target x86_64-unknown-linux-musl -p balancer -p student-api
--rate 0 needs wrk. The machine's other load shows in the figures: run it on a quiet machine.
"""
import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MUSL = os.path.join(ROOT, "target", "x86_64-unknown-linux-musl", "release")
DEFAULT_ALGORITHMS = ["round-robin", "least-connections", "p2c", "peak-ewma", "reported-load"]
SCENARIOS = {
    "slow": ("replica 3 is 50 ms slow", {"delay_ms": 50}),
    "failing": ("replica 3 fails 20 % of requests", {"error_rate": 0.2}),
}
RESET = {"delay_ms": 0, "cpu_ms": 0, "error_rate": 0, "unhealthy": False}
REPLICAS = 3
BAD = 2  # index of the replica made bad

# wrk reports p50/p90/p99 only; this prints p95 too, and the counts, on one line.
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("UNEQUAL requests=%d duration_us=%d non2xx=%d socket_errors=%d "
    .. "p50_us=%d p95_us=%d p99_us=%d\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def die(msg):
    sys.exit("unequal.py: " + msg)


class Proc:
    """A child process in its own group, its stdout read for `listening on` lines."""

    def __init__(self, cmd, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=self.log,
                                  text=True, start_new_session=True)

    def listening(self, count, timeout=20):
        """The first `count` addresses it prints as `listening on ADDR`; None if it exits."""
        addrs, end = [], time.time() + timeout
        while len(addrs) < count and time.time() < end:
            line = self.p.stdout.readline()
            if not line:
                return None
            self.log.write(line)
            m = re.match(r"listening on (\S+)", line)
            if m:
                addrs.append(m.group(1))
        if len(addrs) < count:
            return None
        # Keep reading, so that a chatty child never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        return addrs

    def _drain(self):
        try:
            for line in self.p.stdout:
                self.log.write(line)
        except ValueError:  # the log was closed by stop()
            pass

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.p.wait()
        self.log.close()

    def stderr_tail(self, lines=3):
        self.log.flush()
        with open(self.log_path) as f:
            return " | ".join(l.strip() for l in f.read().strip().splitlines()[-lines:])


def http(method, url, token=None, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def build_if_missing(paths):
    missing = [p for p in paths if not os.path.exists(p)]
    if not missing:
        return
    cmd = ["cargo", "build", "--release", "--target", "x86_64-unknown-linux-musl",
           "-p", "balancer", "-p", "student-api"]
    print("building (missing %s): %s" % (", ".join(missing), " ".join(cmd)), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def start_replicas(api, tmp, token):
    procs, addrs = [], []
    for i in range(REPLICAS):
        env = dict(os.environ, STUDENT_API_LISTEN="127.0.0.1:0",
                   STUDENT_DATA=os.path.join(tmp, "students.jsonl"),
                   INSTANCE_NAME="replica-%d" % (i + 1), BALANCER_ADMIN_TOKEN=token,
                   DRAIN_GRACE="0s", RUST_LOG="warn")
        for var in ("STUDENT_DATABASE_URL", "STUDENT_API_CONFIG", "BALANCER_REGISTER_URL",
                    "LAB_DELAY", "LAB_CPU", "LAB_ERROR_RATE", "LAB_UNHEALTHY"):
            env.pop(var, None)
        p = Proc([api], env, os.path.join(tmp, "replica-%d.log" % (i + 1)))
        procs.append(p)
        found = p.listening(1)
        if not found:
            die("replica %d did not start: %s" % (i + 1, p.stderr_tail()))
        addrs.append(found[0])
        # The first replica seeds the shared roster; the others open it.
    return procs, addrs


def set_knobs(addrs, token, bad_knobs):
    for i, addr in enumerate(addrs):
        knobs = dict(RESET, **(bad_knobs if i == BAD else {}))
        status, body = http("PUT", "http://%s/fault" % addr, token, knobs)
        if status != 200:
            die("PUT /fault on %s answered %s: %s" % (addr, status, body))


def start_balancer(binary, tmp, addrs, algorithm, token):
    conf = os.path.join(tmp, "empty.toml")
    open(conf, "w").close()
    members = " ".join(addrs)
    env = dict(os.environ, BALANCER_LISTEN="127.0.0.1:0", BALANCER_ADMIN_LISTEN="127.0.0.1:0",
               BALANCER_CONFIG=conf, STATIC_BACKEND=members, DYNAMIC_BACKEND=members,
               BALANCER_DYNAMIC_ALGORITHM=algorithm, BALANCER_ADMIN_TOKEN=token,
               RUST_LOG="warn")
    p = Proc([binary], env, os.path.join(tmp, "balancer-%s.log" % algorithm))
    found = p.listening(2)
    if not found:
        p.p.wait(timeout=10)
        reason = p.stderr_tail()
        p.stop()
        return None, reason
    proxy, admin = found
    # Every member in rotation (health checks passed) before any load.
    end = time.time() + 20
    while time.time() < end:
        status, body = http("GET", "http://%s/api/status" % admin)
        if status == 200:
            pool = next(p for p in body["pools"] if p["name"] == "dynamic")
            if sum(m["in_rotation"] for m in pool["members"]) == REPLICAS:
                return (p, proxy, admin), None
        time.sleep(0.2)
    p.stop()
    return None, "members never all in rotation"


def member_counts(admin):
    status, body = http("GET", "http://%s/api/status" % admin)
    if status != 200:
        die("/api/status answered %s" % status)
    pool = next(p for p in body["pools"] if p["name"] == "dynamic")
    return {m["addr"]: (m["requests"], m["responses"][4]) for m in pool["members"]}


def wrk(proxy, seconds, conns, lua):
    threads = min(conns, 2)
    cmd = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds, "--timeout", "5s",
           "-s", lua, "http://%s/api/student" % proxy]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"^UNEQUAL (.*)$", out, re.M)
    if not m:
        die("wrk printed no summary:\n" + out)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def closed_loop(proxy, seconds, conns, lua):
    """wrk: as fast as `conns` clients go. The figures, in the table's units."""
    r = wrk(proxy, seconds, conns, lua)
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50": r["p50_us"] / 1000, "p95": r["p95_us"] / 1000, "p99": r["p99_us"] / 1000,
        "errors": (r["non2xx"] + r["socket_errors"]) / max(r["requests"], 1),
    }


def fixed_rate(admin, token, seconds, conns, rate):
    """The balancer's load generator at `rate` req/s over `conns` connections, to the end."""
    spec = {"path": "/api/student", "concurrency": conns, "rate": rate, "seconds": seconds}
    status, body = http("POST", "http://%s/api/load" % admin, token, spec)
    if status not in (200, 201, 202):
        die("POST /api/load answered %s: %s" % (status, body))
    end = time.time() + seconds + 30
    while time.time() < end:
        time.sleep(0.5)
        status, body = http("GET", "http://%s/api/load" % admin, token)
        run = body if isinstance(body, dict) else {}
        if status == 200 and run.get("state") == "ended":
            break
    else:
        die("the load run did not end: %s" % body)
    lat = run.get("latency") or {}
    sent = max(run["sent"], 1)
    bad = sum(n for code, n in run["statuses"].items() if not code.startswith("2"))
    return {
        "rps": run["requests_per_second"],
        "p50": lat.get("p50_ms", 0), "p95": lat.get("p95_ms", 0), "p99": lat.get("p99_ms", 0),
        "errors": (bad + run["errors"] + run["unanswered"]) / sent,
    }


def run_one(args, tmp, addrs, algorithm, token, lua):
    started, reason = start_balancer(args.balancer, tmp, addrs, algorithm, token)
    if not started:
        return None, reason
    proc, proxy, admin = started

    def load(seconds):
        if args.rate:
            return fixed_rate(admin, token, seconds, args.conns, args.rate)
        return closed_loop(proxy, seconds, args.conns, lua)

    try:
        if args.warmup:
            load(args.warmup)
        before = member_counts(admin)
        res = load(args.duration)
        after = member_counts(admin)
    finally:
        proc.stop()
    delta = {a: after[a][0] - before.get(a, (0, 0))[0] for a in after}
    total = sum(delta.values()) or 1
    bad = addrs[BAD]
    res["bad_share"] = delta.get(bad, 0) / total
    res["shares"] = [delta.get(a, 0) / total for a in addrs]
    return res, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("algorithms", nargs="*", default=DEFAULT_ALGORITHMS)
    ap.add_argument("--balancer", default=os.path.join(MUSL, "balancer"))
    ap.add_argument("--api", default=os.path.join(MUSL, "student-api"))
    ap.add_argument("--duration", type=int, default=15, help="measured seconds per run")
    ap.add_argument("--warmup", type=int, default=15, help="seconds of load before measuring")
    ap.add_argument("--conns", type=int, default=16, help="keep-alive clients")
    ap.add_argument("--rate", type=int, default=300,
                    help="requests per second over all clients, the same for every algorithm "
                         "(0: closed loop with wrk, as fast as the clients go)")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                    help="default: both, slow then failing")
    args = ap.parse_args()
    if args.rate < 0 or args.conns < 1:
        die("--rate must be 0 or more and --conns 1 or more")
    if not args.rate and not shutil.which("wrk"):
        die("--rate 0 needs wrk (Debian: apt-get install wrk)")
    build_if_missing([args.balancer, args.api])

    token = secrets.token_hex(16)
    tmp = tempfile.mkdtemp(prefix="unequal-")
    lua = os.path.join(tmp, "report.lua")
    open(lua, "w").write(WRK_LUA)
    replicas, addrs = start_replicas(args.api, tmp, token)
    skipped = {}
    try:
        pace = ("a fixed %d req/s" % args.rate) if args.rate else "closed loop (wrk)"
        print("replicas: %s (the bad one: replica-%d, %s); %d clients at %s, %ds warm-up, "
              "%ds measured" % (" ".join(addrs), BAD + 1, addrs[BAD], args.conns, pace,
                                args.warmup, args.duration))
        for name in args.scenario or list(SCENARIOS):
            title, knobs = SCENARIOS[name]
            set_knobs(addrs, token, knobs)
            print("\n## %s: %s %s" % (name, title, json.dumps(knobs)))
            print("%-18s %9s %22s %9s %8s %8s %8s %7s" % (
                "algorithm", "bad share", "shares r1/r2/r3", "req/s", "p50 ms", "p95 ms",
                "p99 ms", "5xx"))
            for algorithm in args.algorithms:
                if algorithm in skipped:
                    continue
                res, reason = run_one(args, tmp, addrs, algorithm, token, lua)
                if res is None:
                    skipped[algorithm] = reason
                    print("%-18s skipped: the balancer refused it: %s" % (algorithm, reason))
                    continue
                print("%-18s %8.1f%% %22s %9.0f %8.2f %8.2f %8.2f %6.2f%%" % (
                    algorithm, 100 * res["bad_share"],
                    "/".join("%.1f" % (100 * s) for s in res["shares"]),
                    res["rps"], res["p50"], res["p95"], res["p99"], 100 * res["errors"]), flush=True)
        set_knobs(addrs, token, {})
    finally:
        for p in replicas:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if skipped:
        sys.exit(2 if len(skipped) == len(args.algorithms) else 0)


if __name__ == "__main__":
    main()
