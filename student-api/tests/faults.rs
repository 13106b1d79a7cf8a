//! The real `student-api` binary's load report and fault knobs. The tests are the ones every app
//! binary must pass, shared with the other app.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../apps-shared/tests/each_app/faults.rs"]
mod faults;
