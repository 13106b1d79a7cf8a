//! `[load]`: the bounds of the built-in load generator (`POST /api/load`, [`crate::loadgen`]).
//! A run asking for more is refused with a 400 that names the bound, so a classroom machine
//! cannot be flooded from the dashboard by accident.

use confique::Config;

use super::{ConfigError, Origin};

/// Hard ceiling of `load.max_concurrency`: each connection is a socket on both sides.
pub const CEILING_CONCURRENCY: u32 = 1024;
/// Hard ceiling of `load.max_rate` (requests per second).
pub const CEILING_RATE: u32 = 100_000;
/// Hard ceiling of `load.max_seconds`: one hour.
pub const CEILING_SECONDS: u32 = 3600;

/// The load generator's bounds as written.
#[derive(Config, Debug, Clone)]
#[config(layer_attr(serde(deny_unknown_fields)))]
pub struct LoadFile {
    /// Most connections a load run may use (1 to 1024).
    #[config(env = "BALANCER_LOAD_MAX_CONCURRENCY", default = 64)]
    pub max_concurrency: u32,

    /// Highest request rate a paced load run may ask for, per second (1 to 100000).
    #[config(env = "BALANCER_LOAD_MAX_RATE", default = 5000)]
    pub max_rate: u32,

    /// Longest load run, in seconds (1 to 3600).
    #[config(env = "BALANCER_LOAD_MAX_SECONDS", default = 300)]
    pub max_seconds: u32,
}

/// The load generator's bounds, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Most connections of a run.
    pub max_concurrency: u32,
    /// Highest paced rate, requests per second.
    pub max_rate: u32,
    /// Longest run, seconds.
    pub max_seconds: u32,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_concurrency: 64,
            max_rate: 5000,
            max_seconds: 300,
        }
    }
}

impl LoadLimits {
    /// Validates `raw`, naming the key or env var of a value out of range.
    pub(super) fn build(raw: &LoadFile, origin: &Origin) -> Result<Self, ConfigError> {
        let check = |v: u32, max: u32, key: &'static str| {
            if (1..=max).contains(&v) {
                Ok(v)
            } else {
                Err(origin.invalid(
                    None,
                    &["load", key],
                    &v.to_string(),
                    format!("a whole number from 1 to {max}"),
                ))
            }
        };
        Ok(LoadLimits {
            max_concurrency: check(raw.max_concurrency, CEILING_CONCURRENCY, "max_concurrency")?,
            max_rate: check(raw.max_rate, CEILING_RATE, "max_rate")?,
            max_seconds: check(raw.max_seconds, CEILING_SECONDS, "max_seconds")?,
        })
    }
}
