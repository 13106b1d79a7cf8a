//! Settings of the load-aware algorithms (`peak-ewma`, `reported-load`): the `[balancing]`
//! section with its env vars, the same keys overridable per pool, and their ranges.
//!
//! The defaults are the references' own: Linkerd's peak-EWMA (default rtt 30 ms, decay 10 s)
//! and gRFC A58's `weighted_round_robin` (blackout 10 s, expiration 3 min, update period 1 s,
//! error utilization penalty 1.0). A value out of range is refused naming its key or variable,
//! never rounded into range (A58 clamps a short update period to 100 ms; here it is an error).

use std::time::Duration;

use confique::Config;

use super::{ConfigError, Origin, PoolFile, units};

/// Defaults for every pool; each key may be overridden in a `[pools.NAME]` table.
#[derive(Config, Debug, Clone)]
#[config(layer_attr(serde(deny_unknown_fields)))]
pub struct BalancingFile {
    /// peak-ewma: how fast the latency estimate forgets (the EWMA's time constant), 100ms to 10m.
    #[config(env = "BALANCER_EWMA_DECAY", default = "10s", deserialize_with = units::duration)]
    pub ewma_decay: Duration,

    /// peak-ewma: the estimate of a member with no answer yet, 1ms to 10s; a failed attempt
    /// or a 5xx counts as an answer taking at least 10x this.
    #[config(env = "BALANCER_EWMA_DEFAULT_RTT", default = "30ms", deserialize_with = units::duration)]
    pub ewma_default_rtt: Duration,

    /// reported-load: a member's reported weight is used only once it has reported for this
    /// long (until then it counts as the mean), 0 to 10m.
    #[config(env = "BALANCER_BLACKOUT_PERIOD", default = "10s", deserialize_with = units::duration)]
    pub blackout_period: Duration,

    /// reported-load: a weight with no new report for this long is dropped (the member counts
    /// as the mean, and a new blackout starts when reports resume), 100ms to 1h.
    #[config(env = "BALANCER_WEIGHT_EXPIRATION_PERIOD", default = "3m", deserialize_with = units::duration)]
    pub weight_expiration_period: Duration,

    /// reported-load: how often the weights in use are recomputed from the reports, 100ms to 1m.
    #[config(env = "BALANCER_WEIGHT_UPDATE_PERIOD", default = "1s", deserialize_with = units::duration)]
    pub weight_update_period: Duration,

    /// reported-load: weight = rps / (utilization + eps / rps x this); 0 ignores errors, 0 to 100.
    #[config(env = "BALANCER_ERROR_UTILIZATION_PENALTY", default = 1.0)]
    pub error_utilization_penalty: f64,
}

/// The validated settings of one pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balancing {
    /// peak-ewma decay (time constant).
    pub ewma_decay: Duration,
    /// peak-ewma estimate before any answer.
    pub ewma_default_rtt: Duration,
    /// reported-load blackout.
    pub blackout_period: Duration,
    /// reported-load weight expiry.
    pub weight_expiration_period: Duration,
    /// reported-load recompute period.
    pub weight_update_period: Duration,
    /// reported-load error penalty.
    pub error_utilization_penalty: f64,
}

/// The references' defaults (the same as `[balancing]`'s).
pub const DEFAULT: Balancing = Balancing {
    ewma_decay: Duration::from_secs(10),
    ewma_default_rtt: Duration::from_millis(30),
    blackout_period: Duration::from_secs(10),
    weight_expiration_period: Duration::from_secs(180),
    weight_update_period: Duration::from_secs(1),
    error_utilization_penalty: 1.0,
};

impl Default for Balancing {
    fn default() -> Self {
        DEFAULT
    }
}

const MS: fn(u64) -> Duration = Duration::from_millis;

/// One duration key: its pool override or the `[balancing]` value, checked against its range.
fn duration(
    origin: &Origin,
    pool: &str,
    name: &'static str,
    (own, global): (Option<Duration>, Duration),
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let value = own.unwrap_or(global);
    if (min..=max).contains(&value) {
        return Ok(value);
    }
    let key: Vec<&str> = match own {
        Some(_) => vec!["pools", pool, name],
        None => vec!["balancing", name],
    };
    let d = humantime::format_duration;
    Err(origin.invalid(
        None,
        &key,
        &d(value).to_string(),
        format!("a duration from {} to {}", d(min), d(max)),
    ))
}

/// Builds a pool's settings from its file table over the `[balancing]` defaults.
pub(super) fn build(
    global: &BalancingFile,
    file: &PoolFile,
    pool: &str,
    origin: &Origin,
) -> Result<Balancing, ConfigError> {
    let g = global;
    let penalty = file
        .error_utilization_penalty
        .unwrap_or(g.error_utilization_penalty);
    if !(0.0..=100.0).contains(&penalty) {
        let key: Vec<&str> = match file.error_utilization_penalty {
            Some(_) => vec!["pools", pool, "error_utilization_penalty"],
            None => vec!["balancing", "error_utilization_penalty"],
        };
        return Err(origin.invalid(None, &key, &penalty.to_string(), "a number from 0 to 100"));
    }
    Ok(Balancing {
        ewma_decay: duration(
            origin,
            pool,
            "ewma_decay",
            (file.ewma_decay, g.ewma_decay),
            (MS(100), MS(600_000)),
        )?,
        ewma_default_rtt: duration(
            origin,
            pool,
            "ewma_default_rtt",
            (file.ewma_default_rtt, g.ewma_default_rtt),
            (MS(1), MS(10_000)),
        )?,
        blackout_period: duration(
            origin,
            pool,
            "blackout_period",
            (file.blackout_period, g.blackout_period),
            (Duration::ZERO, MS(600_000)),
        )?,
        weight_expiration_period: duration(
            origin,
            pool,
            "weight_expiration_period",
            (file.weight_expiration_period, g.weight_expiration_period),
            (MS(100), MS(3_600_000)),
        )?,
        weight_update_period: duration(
            origin,
            pool,
            "weight_update_period",
            (file.weight_update_period, g.weight_update_period),
            (MS(100), MS(60_000)),
        )?,
        error_utilization_penalty: penalty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(toml: &str) -> Result<crate::config::Settings, ConfigError> {
        let raw = crate::config::from_toml_str(toml)?;
        crate::config::Settings::build(&raw, &Origin::from_toml("lb.toml", toml))
    }

    #[test]
    fn defaults_are_the_references() {
        let s = built("").unwrap();
        assert_eq!(s.pools[0].balancing, Balancing::default());
    }

    #[test]
    fn a_pool_overrides_the_section() {
        let s = built(
            "[balancing]\nblackout_period = \"2s\"\n[pools.dynamic]\nweight_update_period = \"200ms\"\n",
        )
        .unwrap();
        let b = s.pools[1].balancing;
        assert_eq!(b.blackout_period, Duration::from_secs(2));
        assert_eq!(b.weight_update_period, Duration::from_millis(200));
        assert_eq!(
            s.pools[0].balancing.weight_update_period,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn out_of_range_values_name_their_key_value_and_range() {
        let e = built("[pools.dynamic]\nweight_update_period = \"10ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pools.dynamic.weight_update_period"), "{e}");
        assert!(e.contains("10ms") && e.contains("100ms to 1m"), "{e}");
        let e = built("[balancing]\nerror_utilization_penalty = -1.0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("balancing.error_utilization_penalty"), "{e}");
        assert!(e.contains("-1") && e.contains("0 to 100"), "{e}");
        let e = built("[balancing]\newma_decay = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("balancing.ewma_decay") && e.contains("100ms to 10m"),
            "{e}"
        );
    }
}
