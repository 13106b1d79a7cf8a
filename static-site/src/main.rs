//! `static-site` binary: its name, `--help` and config; the rest of `main` (arguments,
//! tracing, bind, signals) is shared with student-api in [`static_site::cli`].

use std::process::ExitCode;

use static_site::Config;
use static_site::cli::{self, Binary};

const HELP: &str = concat!(
    "\
static-site: lab-stack's lab page (polls /api/student every 2 s)

USAGE:
    static-site [--healthcheck | --help | --version]

OPTIONS:
    --healthcheck   GET /healthz on the configured port; exit 0 if healthy, 1 otherwise
    -h, --help      print this help
    -V, --version   print the version

ENVIRONMENT (defaults in brackets):
    STATIC_SITE_LISTEN   listen address [0.0.0.0:8080]
    STICKY_COOKIE        the balancer's sticky cookie for this pool [lb_static]
    DASHBOARD_URL        the page's link to the balancer's stats [http://localhost:1936/]
",
    apps_shared::shared_env_help!(),
    "    STATIC_SITE_CONFIG   optional TOML file with the same keys in snake_case
    RUST_LOG             log filter [info]
"
);

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
