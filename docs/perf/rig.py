"""What the scripts here share: the two nginx backends and the balancer, started the way
../shared/bench/proxy_bench.py starts them, and stopped with their process groups."""
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("BENCH_DIR", os.path.join(HERE, "../../../shared/bench")))
import proxy_bench as pb  # noqa: E402,F401  (re-exported for the scripts)

MEMBERS = "127.0.0.1:19001 127.0.0.1:19002"


def start_backends(tmp):
    """The two nginx backends serving proxy_bench's JSON body on 19001 and 19002."""
    backends, _ = pb.nginx_conf(tmp, pb.BODY)
    open(tmp + "/backends.conf", "w").write(backends)
    return pb.start(["nginx", "-c", tmp + "/backends.conf", "-p", tmp], tmp, "backends")


def start_balancer(tmp, binary, port=18080, name="balancer"):
    """The balancer on 127.0.0.1:`port` (admin on `port` + 100) in front of both backends,
    with its defaults."""
    env = dict(os.environ, STATIC_BACKEND=MEMBERS, DYNAMIC_BACKEND=MEMBERS,
               BALANCER_LISTEN="127.0.0.1:%d" % port,
               BALANCER_ADMIN_LISTEN="127.0.0.1:%d" % (port + 100), RUST_LOG="warn")
    return pb.start([binary], tmp, name, env)


def start_peer(tmp, name):
    """HAProxy or nginx (`name`) configured as in proxy_bench.py, on its proxy_bench port."""
    if name == "nginx":
        _, proxy = pb.nginx_conf(tmp, pb.BODY)
        open(tmp + "/nginx-proxy.conf", "w").write(proxy)
        return pb.start(["nginx", "-c", tmp + "/nginx-proxy.conf", "-p", tmp], tmp, "nginx")
    open(tmp + "/haproxy.cfg", "w").write(pb.haproxy_conf())
    return pb.start(["haproxy", "-db", "-f", tmp + "/haproxy.cfg"], tmp, "haproxy")


def start_peers(tmp):
    """HAProxy and nginx: {name: (port, process)}."""
    return {name: (pb.PORTS[name], start_peer(tmp, name)) for name in ("haproxy", "nginx")}


def start_all(tmp, binaries):
    """Backends, one balancer per binary (ports 18090, 18091, ...) and the peers, each warmed
    up with 1 s of wrk: (processes to stop, {name: (port, process)}, backend process)."""
    backends = start_backends(tmp)
    targets = {}
    for i, b in enumerate(binaries):
        targets["%s#%d" % (os.path.basename(b), i)] = (18090 + i, start_balancer(tmp, b, 18090 + i, "balancer%d" % i))
    targets.update(start_peers(tmp))
    procs = [backends] + [p for _, p in targets.values()]
    for port, _ in list(targets.values()) + [(19001, None)]:
        if not pb.wait_port(port):
            stop(procs)
            sys.exit("nothing listens on %d (logs in %s)" % (port, tmp))
    time.sleep(0.5)
    for port, _ in targets.values():
        pb.run_wrk(port, 1, 64)
    return procs, targets, backends


def group_pids(pgid):
    """Every process of a process group (a proxy and its workers)."""
    def in_group(pid):
        try:
            return os.getpgid(int(pid)) == pgid
        except ProcessLookupError:  # exited since listdir
            return False
    return [p for p in os.listdir("/proc") if p.isdigit() and in_group(p)]


def stop(procs):
    """SIGTERM to every started process group."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
