//! `student-api` binary: its name, `--help` and config; the rest of `main` (arguments,
//! tracing, bind, signals) is shared with static-site in [`student_api::cli`].

use std::process::ExitCode;

use student_api::Config;
use student_api::cli::{self, Binary};

const HELP: &str = concat!(
    "\
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
",
    apps_shared::shared_env_help!(),
    "    STUDENT_API_CONFIG   optional TOML file with the same keys in snake_case
    RUST_LOG             log filter [info]
"
);

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
