#!/usr/bin/env python3
"""How the balancer's workers share the load: CPU ticks per worker thread, req/s and p99 for
each of RUNS short wrk runs (each run opens new connections, so SO_REUSEPORT splits them anew).

  docs/perf/worker_split.py BALANCER_BINARY

Same two nginx backends as ../shared/bench/proxy_bench.py; wrk -t2 -c64 for 3 s per run.
"""
import os, sys, tempfile, time

from rig import pb, start_backends, start_balancer, stop


def thread_ticks(pid):
    ticks = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        stat = open("/proc/%d/task/%s/stat" % (pid, tid)).read().rsplit(")", 1)[1].split()
        name = open("/proc/%d/task/%s/comm" % (pid, tid)).read().strip()
        if name.startswith("proxy-"):
            ticks[name] = int(stat[11]) + int(stat[12])
    return ticks


def main():
    binary = sys.argv[1]
    tmp = tempfile.mkdtemp()
    procs = [start_backends(tmp)]
    try:
        procs.append(start_balancer(tmp, binary))
        if not (pb.wait_port(19001) and pb.wait_port(18080)):
            sys.exit("did not start (logs in %s)" % tmp)
        time.sleep(0.5)
        pid = procs[-1].pid
        for _ in range(int(os.environ.get("RUNS", "12"))):
            before = thread_ticks(pid)
            rps, p99, errors = pb.run_wrk(18080, 3, 64)
            after = thread_ticks(pid)
            used = {t: after[t] - before.get(t, 0) for t in sorted(after)}
            busiest = max(used.values()) / max(1, sum(used.values()))
            print("%s  busiest %.0f %%  %6.0f req/s  p99 %.2f ms  errors %d"
                  % (" ".join("%s=%d" % kv for kv in used.items()), 100 * busiest, rps, p99, errors))
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
