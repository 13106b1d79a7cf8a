#!/usr/bin/env python3
"""Slow-connection flood, side by side: memory per connection and availability.

Each target (our balancer if given, nginx, HAProxy) fronts the same small nginx backend on
loopback, one target at a time. `slowhttptest -H` (slowloris: a partial request head, then one
more header line every --interval seconds, never the blank line that ends it) opens
--connections connections at --rate per second and holds them for --duration seconds; then it
closes them. Meanwhile a probe client opens a new connection every 100 ms and GETs a page (2 s
timeout): that is a real visitor during the flood. Printed per target:

  RSS before   the target's resident memory (all its processes) before the flood, warmed up
  peak         its highest RSS during the flood
  conns        the most client connections it held at once (ESTABLISHED on its port)
  KB/conn      (peak - before) / conns
  probe        answered / sent during the flood, with p50 / p99 / worst latency
  after        RSS --after seconds after the flood ended

  flood.py [--balancer PATH] [--connections 10000] [--rate 1000] [--interval 10]
           [--duration 90] [--head-timeout 120] [--after 30] [--only balancer,nginx,haproxy] [--env K=V ...]

slowhttptest opens only about 150-200 connections a second on this 2-core machine whatever
--rate says, so 10,000 take about a minute. Head timeouts are therefore --head-timeout (120 s)
everywhere (our BALANCER_IDLE_TIMEOUT, nginx's client_header_timeout, HAProxy's
`timeout http-request`), longer than --duration, so the plateau is the flood's own size and
not a timeout's. Peers are given limits above the flood
(nginx worker_connections; HAProxy maxconn, but HAProxy wants two descriptors per connection
under the descriptor limit, so with a hard limit of 20000 it holds about 9,950); ours runs with its defaults unless --env says
otherwise (--env BALANCER_MAX_CONNECTIONS=20000, for example).
Needs: slowhttptest nginx haproxy (Debian packages). Raises the descriptor limit itself (root
may raise the hard limit too; the targets and slowhttptest inherit it).
"""
import argparse, os, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

BACKEND = 19201
PORTS = {"balancer": 18280, "nginx": 18281, "haproxy": 18282}
ADMIN = 18290
BODY = '[' + ','.join('{"id":%d,"firstName":"Ada","lastName":"Lovelace","gender":"F"}' % i for i in range(5)) + ']'


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def spawn(cmd, tmp, name, env=None):
    log = open(os.path.join(tmp, name + ".log"), "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def group_rss_kb(pgid):
    """Resident memory of every process in a process group (a proxy and its workers), in KB."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for line in open("/proc/%s/status" % pid):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            pass
    return total


def established(port):
    """Connections ESTABLISHED to local `port` (the server side of each client connection)."""
    hexport = ":%04X" % port
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split(None, 4)
                    if parts[3] == "01" and parts[1].endswith(hexport):
                        n += 1
        except OSError:
            pass
    return n


def backend_conf(tmp):
    return f"""worker_processes 1; daemon off; pid {tmp}/backend.pid; error_log {tmp}/backend.err;
events {{ worker_connections 1024; }}
http {{ client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
access_log off; keepalive_requests 1000000;
server {{ listen 127.0.0.1:{BACKEND}; location / {{ default_type application/json; return 200 '{BODY}'; }} }} }}
"""


def nginx_conf(tmp, conns, limit, head):
    return f"""worker_processes 2; daemon off; pid {tmp}/nginx-p.pid; error_log {tmp}/nginx-p.err;
worker_rlimit_nofile {limit};
events {{ worker_connections {conns + 1000}; }}
http {{ client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
access_log off; client_header_timeout {head}s; keepalive_timeout 60s;
upstream pool {{ server 127.0.0.1:{BACKEND}; keepalive 64; }}
server {{ listen 127.0.0.1:{PORTS['nginx']} reuseport; location / {{ proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
"""


def haproxy_conf(conns, limit, head):
    # HAProxy wants two descriptors per connection (client and server side) under the limit.
    maxconn = min(conns + 1000, (limit - 100) // 2)
    return f"""global
  nbthread 2
  maxconn {maxconn}
defaults
  mode http
  timeout connect 5s
  timeout client {head}s
  timeout http-request {head}s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  default_backend be
backend be
  server s0 127.0.0.1:{BACKEND}
"""


class Probe(threading.Thread):
    """A visitor: a new connection and one GET every 100 ms, 2 s to answer."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.ok, self.bad, self.lat, self.halt = port, 0, 0, [], threading.Event()

    def run(self):
        req = b"GET /api/student HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
        while not self.halt.is_set():
            t0 = time.time()
            try:
                with socket.create_connection(("127.0.0.1", self.port), 2) as s:
                    s.settimeout(max(0.01, 2 - (time.time() - t0)))
                    s.sendall(req)
                    got = b""
                    while b"\r\n" not in got:
                        d = s.recv(4096)
                        if not d:
                            break
                        got += d
                if got.startswith(b"HTTP/1.1 200"):
                    self.ok += 1
                    self.lat.append(time.time() - t0)
                else:
                    self.bad += 1
            except OSError:
                self.bad += 1
            self.halt.wait(max(0, 0.1 - (time.time() - t0)))


def ms(x):
    return "%.0f" % (x * 1000) if x < 10 else "%.0fs" % x


def flood(name, port, pgid, a, tmp):
    """Runs one flood against `port`; returns the row of figures."""
    # A few plain requests so every worker has served something before "before".
    for _ in range(20):
        try:
            with socket.create_connection(("127.0.0.1", port), 2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: warm\r\nConnection: close\r\n\r\n")
                s.recv(4096)
        except OSError:
            pass
    time.sleep(2)
    before = group_rss_kb(pgid)
    probe = Probe(port)
    probe.start()
    log = open(os.path.join(tmp, "slowhttptest-%s.log" % name), "w")
    sht = subprocess.Popen(["slowhttptest", "-H", "-c", str(a.connections), "-r", str(a.rate),
                            "-i", str(a.interval), "-x", "24", "-p", "3", "-l", str(a.duration),
                            "-u", "http://127.0.0.1:%d/" % port],
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peak = before
    most = 0
    while sht.poll() is None:
        peak = max(peak, group_rss_kb(pgid))
        most = max(most, established(port))
        time.sleep(1)
    probe.halt.set()
    probe.join()
    ended = time.time()
    time.sleep(max(0, a.after - (time.time() - ended)))
    after = group_rss_kb(pgid)
    lat = sorted(probe.lat) or [float("nan")]
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    per = (peak - before) / most if most else float("nan")
    return dict(name=name, before=before, peak=peak, conns=most, per=per, after=after,
                ok=probe.ok, sent=probe.ok + probe.bad, p50=p(0.5), p99=p(0.99), worst=lat[-1])


def metrics(admin):
    """Our balancer's connection counters from /metrics."""
    try:
        with socket.create_connection(("127.0.0.1", admin), 2) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
    except OSError:
        return []
    keep = ("balancer_connections", "balancer_connection_cap", "balancer_client_head_timeouts",
            "balancer_max_connections")
    return [l for l in data.decode(errors="replace").splitlines() if l.startswith(keep)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--balancer")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--duration", type=int, default=90)
    ap.add_argument("--head-timeout", type=int, default=120)
    ap.add_argument("--after", type=int, default=30)
    ap.add_argument("--only", default="")
    ap.add_argument("--env", action="append", default=[], help="K=V for our balancer")
    a = ap.parse_args()
    limit = raise_fd_limit(max(65536, a.connections * 3))
    if limit < a.connections + 100:
        print("WARN: descriptor limit %d is below the flood's %d connections" % (limit, a.connections))
    tmp = tempfile.mkdtemp(prefix="flood-")
    targets = [t for t in ("balancer", "nginx", "haproxy")
               if (t != "balancer" or a.balancer) and (not a.only or t in a.only)]
    rows, extra = [], []
    open(os.path.join(tmp, "backend.conf"), "w").write(backend_conf(tmp))
    backend = spawn(["nginx", "-c", os.path.join(tmp, "backend.conf"), "-p", tmp], tmp, "backend")
    try:
        if not wait_port(BACKEND):
            print("FAIL: backend did not listen (logs in %s)" % tmp); return 2
        for t in targets:
            if t == "balancer":
                env = dict(os.environ, STATIC_BACKEND="127.0.0.1:%d" % BACKEND,
                           DYNAMIC_BACKEND="127.0.0.1:%d" % BACKEND,
                           BALANCER_LISTEN="127.0.0.1:%d" % PORTS[t],
                           BALANCER_ADMIN_LISTEN="127.0.0.1:%d" % ADMIN, RUST_LOG="warn",
                           BALANCER_IDLE_TIMEOUT="%ds" % a.head_timeout)
                env.update(kv.split("=", 1) for kv in a.env)
                p = spawn([a.balancer], tmp, t, env)
            elif t == "nginx":
                open(os.path.join(tmp, "nginx-p.conf"), "w").write(nginx_conf(tmp, a.connections, limit, a.head_timeout))
                p = spawn(["nginx", "-c", os.path.join(tmp, "nginx-p.conf"), "-p", tmp], tmp, t)
            else:
                open(os.path.join(tmp, "haproxy.cfg"), "w").write(haproxy_conf(a.connections, limit, a.head_timeout))
                p = spawn(["haproxy", "-db", "-f", os.path.join(tmp, "haproxy.cfg")], tmp, t)
            try:
                if not wait_port(PORTS[t]):
                    print("FAIL: %s did not listen (logs in %s)" % (t, tmp)); return 2
                rows.append(flood(t, PORTS[t], p.pid, a, tmp))
                if t == "balancer":
                    extra = metrics(ADMIN)
            finally:
                stop(p)
            time.sleep(2)
        print("slowhttptest -H -c %d -r %d -i %d -l %d, head timeouts %d s; probe: a new connection + GET every 100 ms"
              % (a.connections, a.rate, a.interval, a.duration, a.head_timeout))
        print("%-9s %10s %9s %7s %8s %14s %18s %9s %7s" % ("target", "before MB", "peak MB", "conns", "KB/conn",
                                                            "probe ok/sent", "p50/p99/max ms", "after MB",
                                                            "after/before"))
        for r in rows:
            print("%-9s %10.1f %9.1f %7d %8.1f %14s %18s %9.1f %7.1fx" % (
                r["name"], r["before"] / 1024, r["peak"] / 1024, r["conns"], r["per"],
                "%d/%d" % (r["ok"], r["sent"]), "%s/%s/%s" % (ms(r["p50"]), ms(r["p99"]), ms(r["worst"])),
                r["after"] / 1024, r["after"] / max(1, r["before"])))
        for l in extra:
            print("  " + l)
        return 0
    finally:
        stop(backend)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
