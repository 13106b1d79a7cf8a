#!/usr/bin/env python3
"""Who pays for a proxied request, and how often each process is switched out: CPU time and
context switches per request of the proxy, the backend and wrk, for each balancer binary given
and for HAProxy and nginx, in interleaved rounds.

  docs/perf/switches.py BALANCER_BINARY [BALANCER_BINARY ...]

CPU time comes from perf stat (run as root); voluntary (went to sleep) and involuntary
(preempted) switches from /proc/PID/task/*/status. ROUNDS (default 4) rounds of DUR (default
4) seconds of wrk -t2 -c64; medians per request.
"""
import collections, os, re, statistics, subprocess, sys, tempfile

from rig import group_pids, start_all, stop


def switches(pids):
    vol = invol = 0
    for p in pids:
        for t in os.listdir("/proc/%s/task" % p):
            try:
                for line in open("/proc/%s/task/%s/status" % (p, t)):
                    key, _, value = line.partition(":")
                    if key == "voluntary_ctxt_switches":
                        vol += int(value)
                    elif key == "nonvoluntary_ctxt_switches":
                        invol += int(value)
            except OSError:
                pass
    return vol, invol


def cpu_ms(perf_stderr):
    return float(perf_stderr.strip().splitlines()[-1].split(",")[0])


def one_run(port, proxy_pids, backend_pids, dur):
    """Per-request figures of one wrk run against `port`."""
    watch = {"proxy": proxy_pids, "backend": backend_pids}
    perf = {who: subprocess.Popen(["perf", "stat", "-x,", "-e", "task-clock", "-p", ",".join(p), "--", "sleep", str(dur)],
                                  stderr=subprocess.PIPE, text=True) for who, p in watch.items()}
    before = {who: switches(p) for who, p in watch.items()}
    wrk = subprocess.run(["perf", "stat", "-x,", "-e", "task-clock,context-switches", "--",
                          "wrk", "-t2", "-c64", "-d%ds" % dur, "http://127.0.0.1:%d/api/student" % port],
                         capture_output=True, text=True)
    after = {who: switches(p) for who, p in watch.items()}
    reqs = int(re.search(r"(\d+) requests in", wrk.stdout).group(1))
    out = {"req/s": reqs / dur}
    for who in watch:
        out[who + " cpu us"] = cpu_ms(perf[who].communicate()[1]) * 1000 / reqs
        out[who + " voluntary"] = (after[who][0] - before[who][0]) / reqs
        out[who + " involuntary"] = (after[who][1] - before[who][1]) / reqs
    lines = wrk.stderr.strip().splitlines()
    out["wrk cpu us"] = float(lines[-2].split(",")[0]) * 1000 / reqs
    out["wrk switches"] = float(lines[-1].split(",")[0]) / reqs
    return out


def main():
    rounds, dur = int(os.environ.get("ROUNDS", "4")), int(os.environ.get("DUR", "4"))
    procs, targets, backends = start_all(tempfile.mkdtemp(), sys.argv[1:])
    try:
        backend_pids = group_pids(backends.pid)
        res = collections.defaultdict(lambda: collections.defaultdict(list))
        for _ in range(rounds):
            for t, (port, p) in targets.items():
                for k, v in one_run(port, group_pids(p.pid), backend_pids, dur).items():
                    res[t][k].append(v)
        print("%-22s" % "per request" + "".join("%14s" % t[:13] for t in targets))
        for k in res[next(iter(targets))]:
            print("%-22s" % k + "".join("%14.3f" % statistics.median(res[t][k]) for t in targets))
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
