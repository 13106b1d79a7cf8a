//! What student-api and static-site do the same way, written once; and the two pieces the
//! balancer shares with them (`--healthcheck` and how an error is printed).
//!
//! A small `publish = false` crate of the workspace, like `config-report`: both apps and the
//! balancer depend on it, so its unit tests run once (`cargo test -p apps-shared`) instead of
//! once per app that compiled its sources in. It costs the balancer nothing it did not
//! already link: every dependency here (axum, tokio, confique, tracing-subscriber, ...) is
//! one of the balancer's own, and what the balancer does not call is not in its binary.
//!
//! The rule that made it shareable still holds: nothing in here names either app. What
//! differs between the apps comes in as arguments ([`cli::Binary`]) or from the caller of
//! [`app_config!`], whose paths into this crate go through `$crate`.
//!
//! # Layout
//!
//! - [`config`]: the settings both apps read (drain, instance name, registration) declared once
//!   by [`app_config!`], and the value parsers that name what they expected.
//! - How a refused config value is reported (variable or file key, value, what was expected)
//!   is the crate `config-report`, which the balancer uses too, so all three binaries word
//!   config errors alike.
//! - [`errors`]: an error's whole chain on one line, passwords masked (all three binaries).
//! - [`healthcheck`]: the tiny HTTP client behind `--healthcheck` (all three binaries).
//! - [`cli`]: an app's whole `main`: arguments, config errors, tracing, runtime, bind, signals.
//! - [`serve`]: deregister first, then drain, then a graceful shutdown.
//! - [`web`]: `X-Instance`, access log, `/healthz` and draining, JSON 404/405.
//! - [`load`]: the ORCA `endpoint-load-metrics` header on every response (utilization, rps,
//!   eps) for the balancer's load-aware algorithms.
//! - [`faults`]: the lab's knobs (slow, busy, failing, unhealthy) and `/fault` to turn them.
//! - [`register`]: heartbeats to the balancer's admin API and the DELETE on shutdown.
//!
//! The tests every app binary must pass (exit codes, draining, `--healthcheck`, config
//! errors, registration) are in `apps-shared/tests/each_app/`: each app's own tests include
//! them with `#[path]` and run them against its binary, since only a test of that package
//! can start it.

pub mod cli;
pub mod config;
pub mod errors;
pub mod faults;
pub mod healthcheck;
pub mod load;
pub mod register;
pub mod serve;
pub mod web;
