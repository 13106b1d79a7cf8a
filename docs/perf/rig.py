"""What the scripts here share: the two nginx backends and the balancer, started the way
../shared/bench/proxy_bench.py starts them, and stopped with their process groups."""
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("BENCH_DIR", os.path.join(HERE, "../../../shared/bench")))
import proxy_bench as pb  # noqa: E402,F401  (re-exported for the scripts)

MEMBERS = "127.0.0.1:19001 127.0.0.1:19002"


def start_backends(tmp):
    """The two nginx backends serving proxy_bench's JSON body on 19001 and 19002."""
    backends, _ = pb.nginx_conf(tmp, pb.BODY)
    open(tmp + "/backends.conf", "w").write(backends)
    return pb.start(["nginx", "-c", tmp + "/backends.conf", "-p", tmp], tmp, "backends")


def start_balancer(tmp, binary):
    """The balancer on 127.0.0.1:18080 in front of both backends, with its defaults."""
    env = dict(os.environ, STATIC_BACKEND=MEMBERS, DYNAMIC_BACKEND=MEMBERS,
               BALANCER_LISTEN="127.0.0.1:18080", RUST_LOG="warn")
    return pb.start([binary], tmp, "balancer", env)


def stop(procs):
    """SIGTERM to every started process group."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
