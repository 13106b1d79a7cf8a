//! `/metrics`: Prometheus text exposition (format 0.0.4), rendered on each scrape from the
//! snapshot, the per-member atomics and the event totals. Nothing is precomputed, so a scrape
//! costs the proxy nothing but the relaxed loads.
//!
//! Names follow the Prometheus conventions: a `balancer_` prefix, base units (seconds, bytes),
//! `_total` on counters, one `# HELP` and `# TYPE` per family, each family's samples together.
//! Member series are labelled `pool` and `member` (the `ip:port`).

use std::fmt::{Display, Write};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AdminCtx;
use super::status::{MemberState, member_state};
use crate::clock;
use crate::events::{EventKind, MembershipChange};
use crate::pool::{CheckResult, Member};
use crate::state::Shared;
use crate::stats::LATENCY_BUCKETS_MS;

/// Content type of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn handler(State(s): State<AdminCtx>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&s.shared)).into_response()
}

/// Writes families of samples; keeps the format rules in one place.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"");
                escape_into(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label-value escaping of the text format: backslash, double quote and newline.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One member with its labels.
struct Row {
    pool: Arc<str>,
    member: String,
    m: Arc<Member>,
    slow_start_ms: u64,
}

/// The `pool` and `member` labels of a row.
fn lbl(r: &Row) -> [(&'static str, &str); 2] {
    [("pool", &r.pool), ("member", &r.member)]
}

/// Renders every metric.
pub(crate) fn render(shared: &Shared) -> String {
    let snap = shared.snapshot();
    let now = clock::now_ms();
    let rows: Vec<Row> = snap
        .pools
        .iter()
        .flat_map(|p| {
            p.members.iter().map(|m| Row {
                pool: Arc::clone(&p.settings.name),
                member: m.addr.to_string(),
                m: Arc::clone(m),
                slow_start_ms: p.settings.slow_start.as_millis() as u64,
            })
        })
        .collect();
    let mut o = Out(String::with_capacity(4096 + rows.len() * 3072));

    o.family(
        "balancer_build_info",
        "gauge",
        "Build information; always 1.",
    );
    o.sample(
        "balancer_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    o.family(
        "balancer_config_version",
        "gauge",
        "Version of the snapshot in use; increases with every reload or membership change.",
    );
    o.sample("balancer_config_version", &[], snap.version);

    o.family(
        "balancer_client_connections",
        "gauge",
        "Open client connections, by proxy worker.",
    );
    for (worker, n) in shared.clients.open().into_iter().enumerate() {
        o.sample(
            "balancer_client_connections",
            &[("worker", &worker.to_string())],
            n,
        );
    }
    connection_cap(&mut o, shared, snap.settings.max_connections);

    o.family(
        "balancer_local_responses_total",
        "counter",
        "Responses the balancer made itself because no member answered (400, 404, 413, 502, \
         503, 504), by pool (`-` before a route matched) and status code.",
    );
    for c in shared.local_responses() {
        o.sample(
            "balancer_local_responses_total",
            &[("pool", &c.pool), ("code", &c.code.to_string())],
            c.count,
        );
    }

    let reload = shared
        .reload
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    o.family(
        "balancer_config_reloads_total",
        "counter",
        "Config reloads: applied (changed the config), unchanged (valid, nothing to change) or \
         rejected (invalid; the old config kept serving).",
    );
    o.sample(
        "balancer_config_reloads_total",
        &[("result", "applied")],
        reload.applied,
    );
    o.sample(
        "balancer_config_reloads_total",
        &[("result", "unchanged")],
        reload.unchanged,
    );
    o.sample(
        "balancer_config_reloads_total",
        &[("result", "rejected")],
        reload.rejected,
    );
    if reload.at > 0.0 {
        o.family(
            "balancer_config_last_reload_success",
            "gauge",
            "Whether the last reload attempt succeeded (1) or was rejected (0).",
        );
        o.sample(
            "balancer_config_last_reload_success",
            &[],
            u8::from(reload.ok),
        );
        o.family(
            "balancer_config_last_reload_timestamp_seconds",
            "gauge",
            "Unix time of the last reload attempt.",
        );
        o.sample(
            "balancer_config_last_reload_timestamp_seconds",
            &[],
            reload.at,
        );
    }

    member_metrics(&mut o, &rows, now);

    let totals = shared.events.totals();
    o.family(
        "balancer_membership_events_total",
        "counter",
        "Members that joined or left a pool (discovery, registration, reload) since start.",
    );
    for p in &snap.pools {
        for change in MembershipChange::ALL {
            let n = totals
                .membership
                .get(&(p.settings.name.to_string(), change))
                .copied()
                .unwrap_or(0);
            o.sample(
                "balancer_membership_events_total",
                &[("pool", &p.settings.name), ("kind", change.as_str())],
                n,
            );
        }
    }
    o.family(
        "balancer_events_total",
        "counter",
        "Entries of the event feed by kind (membership, health, passive, reload, admin).",
    );
    for kind in EventKind::ALL {
        let n = totals.by_kind.get(&kind).copied().unwrap_or(0);
        o.sample("balancer_events_total", &[("kind", kind.as_str())], n);
    }
    o.0
}

fn member_metrics(o: &mut Out, rows: &[Row], now: u64) {
    // (name, help, value) for the simple one-sample-per-member families.
    type Get = fn(&Member, u64) -> u64;
    let counters: [(&str, &str, Get); 5] = [
        (
            "balancer_retries_total",
            "Attempts on this member that retried a request failed on another.",
            |m, _| m.stats.retries(),
        ),
        (
            "balancer_hedges_total",
            "Hedges sent to this member: requests another member had not answered within the hedge delay.",
            |m, _| m.hedge.sent(),
        ),
        (
            "balancer_hedges_won_total",
            "Hedges sent to this member that answered first.",
            |m, _| m.hedge.won(),
        ),
        (
            "balancer_upstream_failures_total",
            "Attempts that failed before a response (connect error, reset, timeout).",
            |m, _| m.stats.failures(),
        ),
        (
            "balancer_response_bytes_total",
            "Response body bytes sent to clients.",
            |m, _| m.stats.bytes_out(),
        ),
    ];
    let gauges: [(&str, &str, Get); 3] = [
        (
            "balancer_member_up",
            "1 when the member may receive new requests (enabled, not failing checks, not ejected, weight > 0).",
            |m, now| u64::from(m.is_available(now)),
        ),
        (
            "balancer_member_active_requests",
            "Requests in flight to the member.",
            |m, _| u64::from(m.in_flight()),
        ),
        (
            "balancer_member_weight",
            "Weight in use (config or admin action; 0 = never picked).",
            |m, _| u64::from(m.weight()),
        ),
    ];

    o.family(
        "balancer_requests_total",
        "counter",
        "Responses from members by status class.",
    );
    for r in rows {
        for (i, code) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let [p, m] = lbl(r);
            o.sample(
                "balancer_requests_total",
                &[p, m, ("code", code)],
                r.m.stats.responses(i),
            );
        }
    }

    const HIST: &str = "balancer_request_duration_seconds";
    o.family(
        HIST,
        "histogram",
        "Time from sending a request to a member to its response headers.",
    );
    for r in rows {
        let [p, m] = lbl(r);
        let mut cumulative = 0u64;
        let bucket = format!("{HIST}_bucket");
        for i in 0..=LATENCY_BUCKETS_MS.len() {
            cumulative += r.m.stats.latency_bucket(i);
            let le = LATENCY_BUCKETS_MS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |ms| (*ms as f64 / 1000.0).to_string());
            o.sample(&bucket, &[p, m, ("le", &le)], cumulative);
        }
        let sum = r.m.stats.latency_sum_us() as f64 / 1e6;
        o.sample(&format!("{HIST}_sum"), &[p, m], sum);
        o.sample(&format!("{HIST}_count"), &[p, m], cumulative);
    }

    for (name, help, get) in counters {
        o.family(name, "counter", help);
        for r in rows {
            o.sample(name, &lbl(r), get(&r.m, now));
        }
    }
    for (name, help, get) in gauges {
        o.family(name, "gauge", help);
        for r in rows {
            o.sample(name, &lbl(r), get(&r.m, now));
        }
    }

    o.family(
        "balancer_member_state",
        "gauge",
        "The member's state, one series per state, 1 for the current one.",
    );
    for r in rows {
        let current = member_state(&r.m, now, r.slow_start_ms);
        let [p, m] = lbl(r);
        for s in MemberState::ALL {
            o.sample(
                "balancer_member_state",
                &[p, m, ("state", s.as_str())],
                u8::from(s == current),
            );
        }
    }

    o.family(
        "balancer_member_last_check_success",
        "gauge",
        "Whether the member's last active health check passed (absent before the first).",
    );
    for r in rows {
        if let Some(c) = r.m.last_check() {
            o.sample(
                "balancer_member_last_check_success",
                &lbl(r),
                u8::from(c.result == CheckResult::Pass),
            );
        }
    }
}

/// The connection cap and what it did (`server::cap`), and heads cut at the head timeout.
fn connection_cap(o: &mut Out, shared: &Shared, max: usize) {
    let cap = &shared.clients.cap;
    o.family(
        "balancer_max_connections",
        "gauge",
        "The connection cap (max_connections), all workers together.",
    );
    o.sample("balancer_max_connections", &[], max);
    o.family(
        "balancer_connection_cap_reached",
        "gauge",
        "1 while the balancer is at its connection cap (until it is back under 90 %).",
    );
    o.sample(
        "balancer_connection_cap_reached",
        &[],
        u8::from(cap.capped()),
    );
    o.family(
        "balancer_connection_cap_reached_total",
        "counter",
        "Times the balancer reached its connection cap.",
    );
    o.sample(
        "balancer_connection_cap_reached_total",
        &[],
        cap.times_reached(),
    );
    o.family(
        "balancer_connections_closed_for_cap_total",
        "counter",
        "Connections waiting for a request head (idle keep-alive or slow) closed to make room \
         at the cap, longest-waiting first.",
    );
    o.sample(
        "balancer_connections_closed_for_cap_total",
        &[],
        cap.closed(),
    );
    o.family(
        "balancer_client_head_timeouts_total",
        "counter",
        "Request heads that did not arrive within the idle timeout (answered 408).",
    );
    o.sample(
        "balancer_client_head_timeouts_total",
        &[],
        cap.head_timeouts(),
    );
}
