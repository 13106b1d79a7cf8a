//! Shared helpers for the whole-stack tests (docker compose, browser).
//!
//! # Layout
//!
//! - [`http`]: a tiny blocking HTTP/1.1 client on `std::net` (keep-alive, `Content-Length`
//!   and chunked bodies), so tests see exactly what a client sees and pull in no async runtime.
//! - [`stack`]: one lab stack per test under its own compose project and free ports, built and
//!   started by `./setup.sh` itself, and always torn down (`down -v`) by a `Drop` guard.
//! - [`load`]: looping client threads that count every failed request and keep acknowledged
//!   POSTs for a read-back.
//! - [`checkout`]: a `git clone` of this repository under another folder name, driven by its
//!   `.env` alone, as a newcomer's checkout is.
//! - [`docker`]: the docker CLI calls the tests make, and whether docker can be used at all.
//! - [`browser`]: headless Chromium through chromedriver (fantoccini), screenshots, console.
//! - [`swarm`]: a real multi-node Docker Swarm on this machine (`./setup.sh cluster`) under a
//!   test-only prefix, removed by a `Drop` guard.
//! - [`postgres`]: a throwaway PostgreSQL server (the database a swarm operator provides).

pub mod browser;
pub mod checkout;
pub mod docker;
pub mod http;
pub mod load;
pub mod postgres;
pub mod stack;
pub mod swarm;
