//! `static-site` binary: its name, `--help` and config; the rest of `main` (arguments,
//! tracing, bind, signals) is shared with student-api in [`static_site::cli`].

use std::process::ExitCode;

use static_site::Config;
use static_site::cli::{self, Binary};

const HELP: &str = "\
static-site: lab-stack's lab page (polls /api/student every 2 s)

USAGE:
    static-site [--healthcheck | --help | --version]

OPTIONS:
    --healthcheck   GET /healthz on the configured port; exit 0 if healthy, 1 otherwise
    -h, --help      print this help
    -V, --version   print the version

ENVIRONMENT (defaults in brackets):
    STATIC_SITE_LISTEN   listen address [0.0.0.0:8080]
    DRAIN_GRACE          time /healthz reports draining before shutdown [2s]
    INSTANCE_NAME        X-Instance value [hostname]
    STICKY_COOKIE        the balancer's sticky cookie for this pool [lb_static]
    DASHBOARD_URL        the page's link to the balancer's stats [http://localhost:1936/]
    BALANCER_REGISTER_URL  announce this replica to the balancer, e.g.
                         http://balancer:1936/api/pools/dynamic/members [unset: don't]
    BALANCER_ADMIN_TOKEN bearer token for the balancer's admin API [unset]
    REGISTER_ADVERTISE   ip:port to announce [listen port on the IP the balancer sees]
    REGISTER_INTERVAL    time between heartbeats; TTL = 3x, at least 5s [2s]
    LOAD_CAPACITY        requests in flight reported as full utilization in the
                         endpoint-load-metrics header on every response [100]
    LAB_DELAY            lab fault: extra latency per request, e.g. 50ms [0ms]
    LAB_CPU              lab fault: CPU spinning per request, e.g. 5ms [0ms]
    LAB_ERROR_RATE       lab fault: share of requests answered 500, 0 to 1 [0]
    LAB_UNHEALTHY        lab fault: /healthz answers 503 (1/0) [0]
                         (at run time: PUT /fault with BALANCER_ADMIN_TOKEN)
    STATIC_SITE_CONFIG   optional TOML file with the same keys in snake_case
    RUST_LOG             log filter [info]
";

fn main() -> ExitCode {
    cli::main(Binary {
        name: "static-site",
        version: env!("CARGO_PKG_VERSION"),
        help: HELP,
        load: Config::load,
        listen: |config| config.listen,
        run: static_site::run::<cli::Shutdown>,
    })
}
