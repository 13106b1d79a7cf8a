//! Looping client threads for the failure tests: every request that does not get its expected
//! status is a failure, and every acknowledged POST is remembered for the read-back.
//!
//! Loops are bounded: they stop when told, and in any case after [`MAX_RUN`].

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::Client;

/// A safety stop for a load whose test forgot, or failed before, calling [`Load::stop`].
const MAX_RUN: Duration = Duration::from_secs(120);

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests answered as expected.
    pub ok: u64,
    /// Every failed request, described.
    pub failures: Vec<String>,
    /// Emails of the students whose POST was acknowledged (201).
    pub acknowledged: Vec<String>,
    /// Ids of those students, from the 201 bodies.
    pub ids: Vec<String>,
    /// Distinct `X-Instance` values seen.
    pub instances: BTreeSet<String>,
    /// The longest any request took, answered or not.
    pub worst: Duration,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.ok += other.ok;
        self.failures.extend(other.failures);
        self.acknowledged.extend(other.acknowledged);
        self.ids.extend(other.ids);
        self.instances.extend(other.instances);
        self.worst = self.worst.max(other.worst);
    }
}

/// Running client threads.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Report>>,
}

impl Load {
    /// Starts `getters` threads looping `GET /api/student` and `posters` threads looping
    /// `POST /api/student` against `127.0.0.1:port`.
    pub fn start(port: u16, getters: usize, posters: usize) -> Self {
        Self::start_at(
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            getters,
            posters,
        )
    }

    /// [`Load::start`] against any address (a swarm node's published port).
    pub fn start_at(addr: SocketAddr, getters: usize, posters: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..getters + posters)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let post = i >= getters;
                std::thread::spawn(move || worker(addr, i, post, &stop))
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops the clients and adds up what they saw.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Report::default();
        for w in self.workers {
            match w.join() {
                Ok(r) => total.merge(r),
                Err(_) => total.failures.push("a client thread panicked".into()),
            }
        }
        total
    }
}

fn worker(addr: SocketAddr, id: usize, post: bool, stop: &AtomicBool) -> Report {
    let mut client = Client::to(addr);
    let mut report = Report::default();
    let started = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
        n += 1;
        let sent = Instant::now();
        let (result, expected, email) = if post {
            let email = format!("e2e-{}-{id}-{n}@example.org", std::process::id());
            let body = format!(
                r#"{{"firstName":"Load","lastName":"Test {id}","gender":"other","birthday":"2000-01-01","email":"{email}","city":"Loopback"}}"#
            );
            (client.post_json("/api/student", &body), 201, Some(email))
        } else {
            (client.get("/api/student"), 200, None)
        };
        report.worst = report.worst.max(sent.elapsed());
        let at = started.elapsed().as_secs_f64();
        match result {
            Ok(r) if r.status == expected => {
                report.ok += 1;
                if let Some(i) = r.header("x-instance") {
                    report.instances.insert(i.to_owned());
                }
                if email.is_some() {
                    report.ids.extend(student_id(&r.body));
                }
                report.acknowledged.extend(email);
            }
            Ok(r) => report.failures.push(format!(
                "client {id} at {at:.2}s: status {} (x-upstream {:?}): {}",
                r.status,
                r.header("x-upstream"),
                r.text().chars().take(200).collect::<String>()
            )),
            Err(e) => report
                .failures
                .push(format!("client {id} at {at:.2}s: {e:#}")),
        }
    }
    report
}

/// The `id` of a stored student's JSON.
fn student_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("id")?.as_str().map(str::to_owned)
}
