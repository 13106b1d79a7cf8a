#!/usr/bin/env python3
"""Balancer binaries side by side with HAProxy and nginx, in interleaved rounds on one set of
backends: for telling two builds apart on this noisy machine, where separate proxy_bench runs
of one binary differ by more than most changes do.

  docs/perf/ab.py BALANCER_BINARY [BALANCER_BINARY ...]

ROUNDS (default 6) rounds of DUR (default 4) seconds of wrk -t2 -c64 per target; prints each
round, then medians and each target's ratio to the better peer.
"""
import os, statistics, sys, tempfile

from rig import pb, start_all, stop


def main():
    rounds, dur = int(os.environ.get("ROUNDS", "6")), int(os.environ.get("DUR", "4"))
    procs, targets, _ = start_all(tempfile.mkdtemp(), sys.argv[1:])
    try:
        res = {t: [] for t in targets}
        for r in range(rounds):
            for t, (port, _) in targets.items():
                res[t].append(pb.run_wrk(port, dur, 64))
            print("round %d: %s" % (r, "  ".join("%s %.0f req/s p99 %.2f" % (t, res[t][-1][0], res[t][-1][1]) for t in targets)), flush=True)
        med = {t: statistics.median(x[0] for x in res[t]) for t in targets}
        best = max(med["haproxy"], med["nginx"])
        for t in targets:
            print("%-16s %7.0f req/s  p99 %.2f ms  errors %d  %.3fx the better peer"
                  % (t, med[t], statistics.median(x[1] for x in res[t]), sum(x[2] for x in res[t]), med[t] / best))
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
