//! `student-api` binary: its name, `--help` and config; the rest of `main` (arguments,
//! tracing, bind, signals) is shared with static-site in [`student_api::cli`].

use std::process::ExitCode;

use student_api::Config;
use student_api::cli::{self, Binary};

const HELP: &str = "\
student-api: lab-stack's JSON student API

USAGE:
    student-api [--healthcheck | --help | --version]

OPTIONS:
    --healthcheck   GET /healthz on the configured port; exit 0 if healthy, 1 otherwise
    -h, --help      print this help
    -V, --version   print the version

ENVIRONMENT (defaults in brackets):
    STUDENT_API_LISTEN   listen address [0.0.0.0:3000]
    STUDENT_DATA         roster file, JSON Lines [/data/students.jsonl]
    STUDENT_DATABASE_URL keep the roster in PostgreSQL instead of the file, for replicas
                         on several hosts: postgres://user:password@host:5432/database
                         (no TLS) [unset: the file]
    STUDENT_DATABASE_TIMEOUT  longest wait for the database before a 503 [5s]
    DRAIN_GRACE          time /healthz reports draining before shutdown [2s]
    INSTANCE_NAME        X-Instance value [hostname]
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
    STUDENT_API_CONFIG   optional TOML file with the same keys in snake_case
    RUST_LOG             log filter [info]
";

fn main() -> ExitCode {
    cli::main(Binary {
        name: "student-api",
        version: env!("CARGO_PKG_VERSION"),
        help: HELP,
        load: Config::load,
        listen: |config| config.listen,
        run: student_api::run::<cli::Shutdown>,
    })
}
