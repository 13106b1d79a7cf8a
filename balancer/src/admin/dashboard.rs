//! `/`: the live dashboard. The page is rendered once by askama (so it is complete without
//! script: every pool, member and recent event), then `dashboard.js` polls `/api/status` every
//! second and updates it in place. Script and stylesheet are compiled into the binary and served
//! from this listener; the page's Content-Security-Policy allows only them (no inline code, no
//! external assets: the classroom machine may be offline).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AdminCtx;
use super::status::{MemberStatus, PoolStatus, Status, build_status};

/// Where the stylesheet is served.
pub(crate) const CSS_PATH: &str = "/assets/dashboard.css";
/// Where the script is served.
pub(crate) const JS_PATH: &str = "/assets/dashboard.js";
/// Where the lab script (charts, controls, load generator, experiment) is served.
pub(crate) const LAB_JS_PATH: &str = "/assets/dashboard-lab.js";

const CSS: &str = include_str!("../../templates/dashboard.css");
const JS: &str = include_str!("../../templates/dashboard.js");
const LAB_JS: &str = include_str!("../../templates/dashboard-lab.js");

/// Only our own script, stylesheet and API: no inline code, nothing external.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How many events the page shows (newest first).
pub(crate) const EVENTS_SHOWN: usize = 12;

/// The page's inputs: the status document turned into display strings.
#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
pub(crate) struct Page {
    /// Snapshot version.
    pub(crate) version: u64,
    /// Config source in words.
    pub(crate) source: String,
    /// Last reload, in words.
    pub(crate) reload: String,
    /// CSS class of the reload chip: `ok`, `bad` or `none`.
    pub(crate) reload_class: &'static str,
    /// Whether actions are enabled.
    pub(crate) actions: &'static str,
    /// Open client connections of each proxy worker, e.g. `32 · 32`.
    pub(crate) clients: String,
    /// Latency window, seconds.
    pub(crate) window: u64,
    /// Pool cards.
    pub(crate) pools: Vec<PoolView>,
    /// Newest events first.
    pub(crate) events: Vec<EventView>,
    /// Stylesheet URL.
    pub(crate) css: &'static str,
    /// Script URL.
    pub(crate) js: &'static str,
    /// Lab script URL.
    pub(crate) lab_js: &'static str,
}

/// A pool card.
#[derive(Debug)]
pub(crate) struct PoolView {
    /// Name.
    pub(crate) name: String,
    /// Algorithm, sticky mode and routes in one line.
    pub(crate) about: String,
    /// Total responses.
    pub(crate) requests: u64,
    /// Hedges sent, and how many answered first (`3 (2 won)`; `off` when hedging is off).
    pub(crate) hedges: String,
    /// Member rows.
    pub(crate) members: Vec<MemberView>,
}

/// A member row.
#[derive(Debug)]
pub(crate) struct MemberView {
    /// `ip:port`.
    pub(crate) addr: String,
    /// As configured, when it differs from `addr`.
    pub(crate) origin: String,
    /// State word (also the pill's CSS class).
    pub(crate) state: &'static str,
    /// Weight, with the effective weight while ramping.
    pub(crate) weight: String,
    /// In flight.
    pub(crate) active: u32,
    /// Total responses.
    pub(crate) requests: u64,
    /// Share of the pool's recent responses, percent (0..=100).
    pub(crate) share: u32,
    /// 2xx responses.
    pub(crate) ok: u64,
    /// 4xx responses.
    pub(crate) client_err: u64,
    /// 5xx responses.
    pub(crate) server_err: u64,
    /// Retries made on this member.
    pub(crate) retries: u64,
    /// Recent p50, formatted.
    pub(crate) p50: String,
    /// Recent p95, formatted.
    pub(crate) p95: String,
    /// Recent p99, formatted.
    pub(crate) p99: String,
    /// Last check result: `pass`, `fail`, `draining` or `none`.
    pub(crate) check: &'static str,
    /// Last check detail and age.
    pub(crate) check_detail: String,
    /// What the load-aware algorithm sees: estimate or weight in use with its state.
    pub(crate) load: String,
    /// The last load report and the weight's age.
    pub(crate) load_detail: String,
}

/// An event line.
#[derive(Debug)]
pub(crate) struct EventView {
    /// Unix time, for the script to show in local time.
    pub(crate) at: f64,
    /// Kind.
    pub(crate) kind: &'static str,
    /// `pool member`, or empty.
    pub(crate) subject: String,
    /// Message.
    pub(crate) message: String,
}

pub(super) async fn page(State(s): State<AdminCtx>) -> Response {
    let html = Page::from_status(&build_status(&s.shared)).into_response();
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        html,
    )
        .into_response()
}

pub(super) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub(super) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

pub(super) async fn lab_js() -> Response {
    asset("text/javascript; charset=utf-8", LAB_JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

impl Page {
    /// The page for a status document.
    pub(crate) fn from_status(s: &Status) -> Self {
        let (reload, reload_class) = if s.reload.at == 0.0 {
            ("no reload yet".to_owned(), "none")
        } else if s.reload.ok {
            (
                format!(
                    "last reload ok · {} applied, {} rejected",
                    s.reload.applied, s.reload.rejected
                ),
                "ok",
            )
        } else {
            (
                format!(
                    "last reload rejected: {}",
                    s.reload.error.as_deref().unwrap_or("?")
                ),
                "bad",
            )
        };
        let pools = s.pools.iter().map(|p| pool_view(p, s)).collect();
        let events = s
            .events
            .iter()
            .rev()
            .take(EVENTS_SHOWN)
            .map(|e| EventView {
                at: e.at,
                kind: e.kind.as_str(),
                subject: [e.pool.as_deref(), e.member.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
                message: e.message.clone(),
            })
            .collect();
        Page {
            version: s.version,
            source: s.config_source.clone(),
            reload,
            reload_class,
            actions: if s.actions_enabled {
                "actions enabled"
            } else {
                "actions disabled (no token)"
            },
            clients: s
                .client_connections
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" · "),
            window: s.latency_window_seconds,
            pools,
            events,
            css: CSS_PATH,
            js: JS_PATH,
            lab_js: LAB_JS_PATH,
        }
    }
}

/// A pool's hedges as the card's header shows them.
fn hedges_text(p: &PoolStatus) -> String {
    if p.hedging {
        format!("{} ({} won)", p.hedges, p.hedges_won)
    } else {
        "off".to_owned()
    }
}

fn pool_view(p: &PoolStatus, s: &Status) -> PoolView {
    let routes: Vec<String> = s
        .routes
        .iter()
        .filter(|r| r.pool == p.name)
        .map(|r| format!("{}{}", r.host.as_deref().unwrap_or(""), r.path))
        .collect();
    let recent_total: u64 = p.members.iter().map(recent).sum();
    PoolView {
        name: p.name.clone(),
        about: format!(
            "{} · sticky {} · {}",
            match &p.file_algorithm {
                Some(f) => format!("{} (run-time; file: {f})", p.algorithm),
                None => p.algorithm.clone(),
            },
            serde_json::to_value(p.sticky)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            if routes.is_empty() {
                "no route".to_owned()
            } else {
                routes.join(" ")
            }
        ),
        requests: p.requests,
        hedges: hedges_text(p),
        members: p
            .members
            .iter()
            .map(|m| member_view(m, recent_total, &p.algorithm))
            .collect(),
    }
}

/// Responses in the recent window.
fn recent(m: &MemberStatus) -> u64 {
    m.latency.as_ref().map_or(0, |l| l.samples)
}

fn member_view(m: &MemberStatus, recent_total: u64, algorithm: &str) -> MemberView {
    let fmt = |f: fn(&super::status::Latency) -> f64| {
        m.latency
            .as_ref()
            .map_or_else(|| "–".to_owned(), |l| fmt_ms(f(l)))
    };
    let (check, check_detail) = match &m.last_check {
        None => ("none", "no check".to_owned()),
        Some(c) => (
            c.result.as_str(),
            format!(
                "{}{} s ago",
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!("{} · ", c.detail)
                },
                c.age_seconds.round()
            ),
        ),
    };
    MemberView {
        addr: m.addr.clone(),
        origin: if m.origin == m.addr {
            String::new()
        } else {
            m.origin.clone()
        },
        state: m.state.as_str(),
        weight: weight_text(m),
        active: m.active,
        requests: m.requests,
        share: (recent(m) * 100)
            .checked_div(recent_total)
            .map_or(0, |p| p as u32),
        ok: m.responses[1],
        client_err: m.responses[3],
        server_err: m.responses[4],
        retries: m.retries,
        p50: fmt(|l| l.p50_ms),
        p95: fmt(|l| l.p95_ms),
        p99: fmt(|l| l.p99_ms),
        check,
        check_detail,
        load: load_text(m, algorithm),
        load_detail: load_detail(m, algorithm),
    }
}

/// What the pool's algorithm sees of a member, in a few words (same rules as the script):
/// peak-ewma's latency estimate, reported-load's weight in use and its state.
pub(crate) fn load_text(m: &MemberStatus, algorithm: &str) -> String {
    let l = &m.load;
    match algorithm {
        "peak-ewma" => l
            .ewma_ms
            .map_or_else(|| "rtt –".to_owned(), |e| format!("rtt {}", fmt_ms(e))),
        "reported-load" => format!(
            "weight {} · {}",
            l.weight_in_use
                .map_or_else(|| "–".to_owned(), |w| format!("{w:.0}")),
            l.weight_state.map_or("–", |s| s.as_str())
        ),
        _ => "–".to_owned(),
    }
}

/// The member's last load report, and for reported-load the reported weight's age.
pub(crate) fn load_detail(m: &MemberStatus, algorithm: &str) -> String {
    let l = &m.load;
    let mut out = l.report.as_ref().map_or_else(
        || "no report".to_owned(),
        |r| {
            format!(
                "util {:.2} · {:.1} rps · {:.1} eps",
                r.utilization, r.rps, r.eps
            )
        },
    );
    if algorithm == "reported-load"
        && let (Some(w), Some(age)) = (l.reported_weight, l.weight_age_seconds)
    {
        out.push_str(&format!(" · reported {w:.0}, {age:.0} s ago"));
    }
    if l.malformed_reports > 0 {
        out.push_str(&format!(" · {} malformed", l.malformed_reports));
    }
    out
}

/// The weight in words: ramping (`2 → 5`), and set at run time (`5 run-time, file 1`).
fn weight_text(m: &MemberStatus) -> String {
    let w = if m.effective_weight != m.weight {
        format!("{} → {}", m.effective_weight, m.weight)
    } else {
        m.weight.to_string()
    };
    if m.weight == m.file_weight {
        w
    } else {
        format!("{w} run-time, file {}", m.file_weight)
    }
}

/// Milliseconds with a precision that suits their size (same rules as the script).
pub(crate) fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}
