//! What student-api and static-site do the same way, written once and compiled into both.
//!
//! This directory is not a crate. Each app's `lib.rs` includes it as a private module:
//!
//! ```text
//! #[path = "../../apps-shared/src/mod.rs"]
//! mod shared;
//! ```
//!
//! Why not a crate: the project keeps three crates with one job each (balancer, the two apps)
//! plus `tests/`, and this code is the apps' common plumbing, not a job of its own. It needs
//! nothing the apps do not already depend on (axum, tokio, confique, serde, thiserror,
//! tracing), so including it costs no dependency, no version and nothing to stage for the
//! images. The price is a rule: nothing in here may name either app's items. Paths stay inside
//! this module (`super::`), or go through `$crate::shared::` in macros.
//!
//! # Layout
//!
//! - [`config`]: the settings both apps read (drain, instance name, registration) declared once
//!   by [`config::app_config!`], and the value parsers that name what they expected.
//! - How a refused config value is reported (variable or file key, value, what was expected)
//!   is the crate `config-report`, which the balancer uses too, so all three binaries word
//!   config errors alike.
//! - [`cli`]: the whole `main`: arguments, config errors, tracing, runtime, bind, signals.
//! - [`serve`]: deregister first, then drain, then a graceful shutdown.
//! - [`web`]: `X-Instance`, access log, `/healthz` and draining, JSON 404/405.
//! - [`healthcheck`]: the tiny HTTP client behind `--healthcheck`.
//! - [`register`]: heartbeats to the balancer's admin API and the DELETE on shutdown.
//!
//! The apps' tests share their helpers the same way, from `apps-shared/tests/`.

pub mod cli;
pub mod config;
pub mod healthcheck;
pub mod register;
pub mod serve;
pub mod web;
