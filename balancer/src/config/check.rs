//! `--check-config` (the effective configuration with where each value came from) and
//! `--print-default-config` (a commented template generated from the field docs).

use std::fmt::Write;

use super::model::{DEFAULT_POOLS, DefaultPool, pool_defaults as pd};
use super::{Origin, RawConfig, Settings};

/// A commented TOML template of every key, generated from the config's field docs.
pub fn default_template() -> String {
    // The pool example shows the defaults the balancer applies (one table, `pool_defaults`).
    let d = |v| humantime::format_duration(v);
    let mut out = format!(
        "# balancer configuration (TOML). Precedence: built-in defaults < this file < env vars.\n\
         # Durations are human (500ms, 2s, 1m); sizes take units (16KiB, 10MB).\n\
         # Member lists: \"host:port host:port*3\" (weight after *), or an array of such strings.\n\
         #\n\
         # Example pool and route tables (pools `static` and `dynamic` always exist):\n\
         #\n\
         # [pools.dynamic]\n\
         # members = [\"student-api:3000\"]\n\
         # algorithm = \"least-connections\"  # round-robin | weighted-round-robin | least-connections | p2c | random | ip-hash | header-hash | peak-ewma | reported-load\n\
         # sticky = \"none\"                   # none | cookie | ip-hash\n\
         # cookie_name = \"lb_dynamic\"\n\
         # retries = {}\n\
         # retry_budget = \"{}\"\n\
         # max_fails = {}\n\
         # fail_timeout = \"{}\"\n\
         # slow_start = \"{}\"\n\
         # max_body = \"100MiB\"\n\
         # blackout_period = \"{}\"          # any key of [balancing] overrides it for this pool\n\
         # [pools.dynamic.health]\n\
         # path = \"{}\"\n\
         # interval = \"{}\"\n\
         # timeout = \"{}\"\n\
         # expect_status = {}\n\
         # rise = {}\n\
         # fall = {}\n\
         # [pools.dynamic.hedge]               # unset keys: the top-level [hedge]\n\
         # enabled = true\n\
         # budget = 10\n\
         #\n\
         # [[routes]]\n\
         # path = \"/api/\"\n\
         # pool = \"dynamic\"\n\n",
        pd::RETRIES,
        d(pd::RETRY_BUDGET),
        pd::MAX_FAILS,
        d(pd::FAIL_TIMEOUT),
        d(pd::SLOW_START),
        d(super::balancing::DEFAULT.blackout_period),
        pd::CHECK_PATH,
        d(pd::CHECK_INTERVAL),
        d(pd::CHECK_TIMEOUT),
        pd::EXPECT_STATUS,
        pd::RISE,
        pd::FALL,
    );
    out.push_str(&confique::toml::template::<RawConfig>(
        confique::toml::FormatOptions::default(),
    ));
    out
}

/// The effective configuration as TOML-like text, each value followed by its source.
pub fn describe(s: &Settings, raw: &RawConfig, origin: &Origin) -> String {
    let mut out = String::new();
    let top = |key: &str| origin.describe(None, &[key]);
    line(&mut out, "listen", q(s.listen), top("listen"));
    line(
        &mut out,
        "admin_listen",
        q(s.admin_listen),
        top("admin_listen"),
    );
    let token = if s.admin_token.is_some() {
        "\"<set>\""
    } else {
        "\"<unset>\""
    };
    line(&mut out, "admin_token", token.into(), top("admin_token"));
    let log = s
        .access_log
        .as_ref()
        .map_or("\"<stdout only>\"".into(), |p| q(p.display()));
    line(&mut out, "access_log", log, top("access_log"));
    line(
        &mut out,
        "upstream_header",
        s.upstream_header.to_string(),
        top("upstream_header"),
    );
    line(&mut out, "workers", s.workers.to_string(), top("workers"));
    line(
        &mut out,
        "discovery_interval",
        q(humantime::format_duration(s.discovery_interval)),
        top("discovery_interval"),
    );
    let t = &raw.timeouts;
    let nested = |a: &str, b: &str| origin.describe(None, &[a, b]);
    line(
        &mut out,
        "timeouts.connect",
        q(humantime::format_duration(t.connect)),
        nested("timeouts", "connect"),
    );
    line(
        &mut out,
        "timeouts.response",
        q(humantime::format_duration(t.response)),
        nested("timeouts", "response"),
    );
    line(
        &mut out,
        "timeouts.client_idle",
        q(humantime::format_duration(t.client_idle)),
        nested("timeouts", "client_idle"),
    );
    line(
        &mut out,
        "timeouts.backend_idle",
        q(humantime::format_duration(t.backend_idle)),
        nested("timeouts", "backend_idle"),
    );
    line(
        &mut out,
        "limits.max_header_bytes",
        q(raw.limits.max_header_bytes),
        nested("limits", "max_header_bytes"),
    );
    line(
        &mut out,
        "limits.max_body",
        q(raw.limits.max_body),
        nested("limits", "max_body"),
    );
    line(
        &mut out,
        "limits.max_connections",
        s.max_connections.to_string(),
        nested("limits", "max_connections"),
    );
    let h = &raw.hedge;
    let hedge_line = |k: &str| origin.describe(None, &["hedge", k]);
    line(
        &mut out,
        "hedge.enabled",
        h.enabled.to_string(),
        hedge_line("enabled"),
    );
    line(
        &mut out,
        "hedge.delay_min",
        q(humantime::format_duration(h.delay_min)),
        hedge_line("delay_min"),
    );
    line(
        &mut out,
        "hedge.delay_max",
        q(humantime::format_duration(h.delay_max)),
        hedge_line("delay_max"),
    );
    line(
        &mut out,
        "hedge.budget",
        h.budget.to_string(),
        hedge_line("budget"),
    );
    for (key, v) in [
        ("max_concurrency", s.load.max_concurrency),
        ("max_rate", s.load.max_rate),
        ("max_seconds", s.load.max_seconds),
    ] {
        line(
            &mut out,
            &format!("load.{key}"),
            v.to_string(),
            nested("load", key),
        );
    }
    for p in &s.pools {
        let _ = writeln!(out, "\n[pools.{}]", p.name);
        let d = DEFAULT_POOLS.iter().find(|d| *d.name == *p.name);
        let src = |env: Option<&str>, k: &str| origin.describe(env, &["pools", &p.name, k]);
        let members: Vec<String> = p.members.iter().map(q).collect();
        let mut lines = Vec::new();
        lines.push((
            "members",
            format!("[{}]", members.join(", ")),
            src(d.and_then(DefaultPool::members_env), "members"),
        ));
        lines.push((
            "algorithm",
            q(p.algorithm),
            src(d.and_then(DefaultPool::algorithm_env), "algorithm"),
        ));
        lines.push((
            "sticky",
            q(serde_plain(&p.sticky)),
            src(d.and_then(DefaultPool::sticky_env), "sticky"),
        ));
        lines.push(("cookie_name", q(&p.cookie_name), src(None, "cookie_name")));
        lines.push(("retries", p.retries.to_string(), src(None, "retries")));
        lines.push((
            "retry_budget",
            q(humantime::format_duration(p.retry_budget)),
            src(None, "retry_budget"),
        ));
        lines.push(("max_fails", p.max_fails.to_string(), src(None, "max_fails")));
        lines.push((
            "fail_timeout",
            q(humantime::format_duration(p.fail_timeout)),
            src(None, "fail_timeout"),
        ));
        lines.push((
            "connect_timeout",
            q(humantime::format_duration(p.connect_timeout)),
            src(None, "connect_timeout"),
        ));
        lines.push((
            "response_timeout",
            q(humantime::format_duration(p.response_timeout)),
            src(None, "response_timeout"),
        ));
        lines.push((
            "slow_start",
            q(humantime::format_duration(p.slow_start)),
            src(None, "slow_start"),
        ));
        lines.push((
            "max_body",
            q(super::ByteSize(p.max_body)),
            src(None, "max_body"),
        ));
        let health = match &p.health {
            Some(h) => format!(
                "{{ path = {}, interval = {}, timeout = {}, expect_status = {}, rise = {}, fall = {} }}",
                q(&h.path),
                q(humantime::format_duration(h.interval)),
                q(humantime::format_duration(h.timeout)),
                h.expect_status,
                h.rise,
                h.fall
            ),
            None => "{ enabled = false }".into(),
        };
        lines.push(("health", health, src(None, "health")));
        let b = &p.balancing;
        let from = |k: &str| {
            if origin.file_has(&["pools", &p.name, k]) {
                src(None, k)
            } else {
                origin.describe(None, &["balancing", k])
            }
        };
        let hd = |v| q(humantime::format_duration(v));
        lines.push(("ewma_decay", hd(b.ewma_decay), from("ewma_decay")));
        lines.push((
            "ewma_default_rtt",
            hd(b.ewma_default_rtt),
            from("ewma_default_rtt"),
        ));
        lines.push((
            "blackout_period",
            hd(b.blackout_period),
            from("blackout_period"),
        ));
        lines.push((
            "weight_expiration_period",
            hd(b.weight_expiration_period),
            from("weight_expiration_period"),
        ));
        lines.push((
            "weight_update_period",
            hd(b.weight_update_period),
            from("weight_update_period"),
        ));
        lines.push((
            "error_utilization_penalty",
            b.error_utilization_penalty.to_string(),
            from("error_utilization_penalty"),
        ));
        let h = &p.hedge;
        let hedge = format!(
            "{{ enabled = {}, delay_min = {}, delay_max = {}, budget = {} }}",
            h.enabled,
            q(humantime::format_duration(h.delay_min)),
            q(humantime::format_duration(h.delay_max)),
            h.budget_percent
        );
        lines.push(("hedge", hedge, src(None, "hedge")));
        for (k, v, src) in lines {
            line(&mut out, k, v, src);
        }
    }
    for r in &s.routes {
        let _ = writeln!(out, "\n[[routes]]");
        let src = origin.describe(None, &["routes"]);
        line(&mut out, "path", q(&r.path), src.clone());
        if r.exact {
            line(&mut out, "exact", "true".into(), src.clone());
        }
        if let Some(h) = &r.host {
            line(&mut out, "host", q(h), src.clone());
        }
        line(&mut out, "pool", q(&s.pools[r.pool].name), src);
    }
    out
}

fn line(out: &mut String, key: &str, value: String, src: String) {
    let _ = writeln!(out, "{:<52} # {src}", format!("{key} = {value}"));
}

fn q(v: impl std::fmt::Display) -> String {
    format!("\"{v}\"")
}

fn serde_plain(m: &super::StickyMode) -> &'static str {
    match m {
        super::StickyMode::None => "none",
        super::StickyMode::Cookie => "cookie",
        super::StickyMode::IpHash => "ip-hash",
    }
}
