//! A pool's hedging settings ([`crate::proxy::hedge`]): its `hedge` table over the top-level
//! `[hedge]` (and so the `BALANCER_HEDGE_*` variables), validated.

use std::time::Duration;

use super::ranges::{MIN_HEDGE_DELAY, at_least, percent};
use super::{ConfigError, HedgeFile, Origin, RawConfig};

/// A pool's hedging, validated (see [`crate::proxy::hedge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HedgeSettings {
    /// Whether idempotent requests are hedged.
    pub(crate) enabled: bool,
    /// Shortest hedge delay.
    pub(crate) delay_min: Duration,
    /// Longest hedge delay.
    pub(crate) delay_max: Duration,
    /// Hedges allowed, in percent of the pool's recent responses.
    pub(crate) budget_percent: u32,
}

/// A pool's hedging: its `hedge` table over the top-level `[hedge]`. A bad value is named by
/// where it was set (the pool's key when the pool set it).
pub(super) fn hedge(
    raw: &RawConfig,
    pool: &str,
    file: Option<&HedgeFile>,
    origin: &Origin,
) -> Result<HedgeSettings, ConfigError> {
    let f = file.cloned().unwrap_or_default();
    let g = &raw.hedge;
    let key = |set: bool, k: &'static str| -> Vec<&str> {
        if set {
            vec!["pools", pool, "hedge", k]
        } else {
            vec!["hedge", k]
        }
    };
    let min = f.delay_min.unwrap_or(g.delay_min);
    let min_key = key(f.delay_min.is_some(), "delay_min");
    let delay_min = at_least(min, MIN_HEDGE_DELAY, origin, &min_key)?;
    let max = f.delay_max.unwrap_or(g.delay_max);
    let max_key = key(f.delay_max.is_some(), "delay_max");
    let delay_max = at_least(max, delay_min, origin, &max_key)?;
    let budget = f.budget.unwrap_or(g.budget);
    Ok(HedgeSettings {
        enabled: f.enabled.unwrap_or(g.enabled),
        delay_min,
        delay_max,
        budget_percent: percent(budget, origin, &key(f.budget.is_some(), "budget"))?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Origin, Settings, from_toml_str};

    fn build(toml: &str) -> Result<Settings, String> {
        let raw = from_toml_str(toml).map_err(|e| e.to_string())?;
        Settings::build(&raw, &Origin::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_pool_table_overrides_the_top_level_hedge_key_by_key() {
        let s = build(
            "[hedge]\nbudget = 20\n[pools.dynamic.hedge]\nenabled = false\ndelay_min = \"5ms\"\n",
        )
        .unwrap();
        let dynamic = &s.pools[s.pool_index("dynamic").unwrap()].hedge;
        assert!(!dynamic.enabled);
        assert_eq!(dynamic.delay_min, Duration::from_millis(5));
        assert_eq!(dynamic.delay_max, Duration::from_millis(500), "the default");
        assert_eq!(dynamic.budget_percent, 20, "from [hedge]");
        let stat = &s.pools[s.pool_index("static").unwrap()].hedge;
        assert!(stat.enabled && stat.delay_min == Duration::from_millis(50));
    }

    #[test]
    fn a_bad_value_names_the_key_that_set_it() {
        let e = build("[pools.dynamic.hedge]\nbudget = 101\n").unwrap_err();
        assert!(
            e.contains("pools.dynamic.hedge.budget") && e.contains("101"),
            "{e}"
        );
        let e = build("[hedge]\ndelay_min = \"200ms\"\ndelay_max = \"100ms\"\n").unwrap_err();
        assert!(
            e.contains("hedge.delay_max") && e.contains("at least 200ms"),
            "{e}"
        );
        let e = build("[hedge]\ndelay_min = \"0s\"\n").unwrap_err();
        assert!(e.contains("hedge.delay_min"), "{e}");
    }
}
