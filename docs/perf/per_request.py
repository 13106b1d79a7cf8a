#!/usr/bin/env python3
"""What one proxy costs per request, from the kernel's counters: CPU time, context switches,
wakeups and syscalls (perf stat on the proxy's processes) and TCP segments (/proc/net/snmp).

  docs/perf/per_request.py nginx|haproxy|balancer [BALANCER_BINARY]

Same backends and proxy configurations as ../shared/bench/proxy_bench.py, wrk -t2 -c64 for
DUR seconds (default 6). Needs perf (run as root), nginx, haproxy, wrk.
"""
import os, re, subprocess, sys, tempfile, time

from rig import group_pids, pb, start_backends, start_balancer, start_peer, stop

EVENTS = ["task-clock", "context-switches", "sched:sched_wakeup", "raw_syscalls:sys_enter",
          "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_sendto", "syscalls:sys_enter_writev",
          "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait"]


def tcp_counters():
    rows = [line.split() for line in open("/proc/net/snmp") if line.startswith("Tcp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:])))


def main():
    target = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else None
    dur = int(os.environ.get("DUR", "6"))
    tmp = tempfile.mkdtemp()
    procs = [start_backends(tmp)]
    try:
        if target in ("nginx", "haproxy"):
            procs.append(start_peer(tmp, target))
        else:
            procs.append(start_balancer(tmp, binary))
        port = pb.PORTS[target]
        if not (pb.wait_port(19001) and pb.wait_port(port)):
            sys.exit("%s did not start (logs in %s)" % (target, tmp))
        time.sleep(0.5)
        pids = group_pids(procs[-1].pid)
        pb.run_wrk(port, 2, 64)
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", ",".join(pids),
                                 "--", "sleep", str(dur)], stderr=subprocess.PIPE, text=True)
        before = tcp_counters()
        out = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % dur, "http://127.0.0.1:%d/api/student" % port],
                             capture_output=True, text=True).stdout
        stats = perf.communicate()[1]
        after = tcp_counters()
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        print("%s: %.0f req/s" % (target, reqs / dur))
        print("  %-32s %8.3f" % ("TCP segments out (all)", (after["OutSegs"] - before["OutSegs"]) / reqs))
        for line in stats.strip().splitlines():
            f = line.split(",")
            try:
                v = float(f[0])
            except ValueError:
                continue
            unit = " us" if f[2] == "task-clock" else ""
            print("  %-32s %8.3f%s" % (f[2], v / reqs * (1000 if unit else 1), unit))
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
