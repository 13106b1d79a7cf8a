//! The roster in PostgreSQL, for replicas on several hosts: a pooled connection per request,
//! the table created and seeded on first contact, every operation bounded by one deadline.
//!
//! An unreachable database never stops the service: start-up goes on without it, each
//! request that cannot reach it fails (the API answers 503), and the pool opens fresh
//! connections as soon as the server answers again. The outage and the recovery are each
//! logged once, not per request.

mod url;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio::time::{Instant, timeout_at};
use tokio_postgres::{NoTls, Row};

pub use url::{DatabaseUrl, EXPECTED, UrlError, parse_database_url};

use crate::config::describe;
use crate::generate;
use crate::student::Student;

/// Connections per replica. PostgreSQL allows 100 by default: six replicas stay well under.
const POOL_SIZE: usize = 8;

/// Key of the advisory lock under which a replica creates and seeds the table, so that
/// replicas starting together do it exactly once (and `CREATE TABLE IF NOT EXISTS` does not
/// race with itself, which PostgreSQL reports as a duplicate key in `pg_type`).
const SEED_LOCK: i64 = 0x5354_5544_454e_5453; // "STUDENTS"

/// The table, created when missing. An operator may create it beforehand (with more
/// columns, or constraints of their own) as long as these columns exist.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS students (
    id text PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    gender text NOT NULL,
    birthday date NOT NULL,
    email text NOT NULL,
    city text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// The columns of a [`Student`], in the order [`student`] reads them. `to_char` because a
/// date's text form follows the session's `DateStyle`. A macro so that `concat!` builds
/// each query once, at compile time.
macro_rules! columns {
    () => {
        "id, first_name, last_name, gender, to_char(birthday, 'YYYY-MM-DD'), email, city"
    };
}

/// ORDER BY random() reads the whole table: fine for a class roster of thousands.
const SAMPLE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM students ORDER BY random() LIMIT $1"
);
const FIND: &str = concat!("SELECT ", columns!(), " FROM students WHERE id = $1");

const INSERT: &str =
    "INSERT INTO students (id, first_name, last_name, gender, birthday, email, city)
    VALUES ($1, $2, $3, $4, $5::text::date, $6, $7)";

/// Why the database could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection, or no answer, within the deadline.
    #[error("database did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Connecting failed.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// The server refused or failed the statement.
    #[error("database error: {0}")]
    Query(String),
}

/// A pool of connections to one database, shared by the handlers.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    url: DatabaseUrl,
    /// Budget of one operation, from taking a connection to the last row.
    timeout: Duration,
    /// Set once the table exists and holds the seed: checked with one atomic load.
    ready: tokio::sync::OnceCell<()>,
    /// Whether the last operation worked, to log an outage and its end once each.
    reachable: Reachability,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.inner.url)
    }
}

impl PgStore {
    /// A pool for `url` (no connection is opened yet). `timeout` bounds each operation.
    pub fn new(url: &DatabaseUrl, timeout: Duration) -> Self {
        let mut pg = url.pg_config().clone();
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("student-api");
        }
        // Fast recycling skips a round trip per request; a connection the server closed is
        // noticed (`is_closed`) and replaced, and one that hung is dropped by `with_client`.
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .build()
            // Only fails without a runtime or with a post-create hook: neither can happen.
            .unwrap_or_else(|e| unreachable!("pool config: {e}"));
        Self {
            inner: Arc::new(Inner {
                pool,
                url: url.clone(),
                timeout,
                ready: tokio::sync::OnceCell::new(),
                reachable: Reachability::default(),
            }),
        }
    }

    /// The database, password masked, for logs.
    pub fn url(&self) -> &DatabaseUrl {
        &self.inner.url
    }

    /// Creates and seeds the table now if the database answers; logs when it does not (the
    /// first request after it comes back will do it).
    pub async fn prepare(&self) -> Result<(), DbError> {
        self.run(async |_| Ok(())).await
    }

    /// `n` students in random order: distinct while the table has enough, repeats after;
    /// generated ones if it is empty (as the file roster does).
    pub async fn sample(&self, n: usize) -> Result<Vec<Student>, DbError> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self
            .run(async |c| {
                let stmt = c.prepare_cached(SAMPLE).await?;
                c.query(&stmt, &[&limit]).await
            })
            .await?;
        let picked = rows.iter().map(student).collect::<Result<Vec<_>, _>>();
        let picked = picked.map_err(|e| DbError::Query(describe(&e)))?;
        Ok(fill(picked, n))
    }

    /// The student with `id`, if any.
    pub async fn find(&self, id: &str) -> Result<Option<Student>, DbError> {
        let row = self
            .run(async |c| {
                let stmt = c.prepare_cached(FIND).await?;
                c.query_opt(&stmt, &[&id]).await
            })
            .await?;
        row.as_ref()
            .map(student)
            .transpose()
            .map_err(|e| DbError::Query(describe(&e)))
    }

    /// Inserts `s`; returns once the server has committed it.
    pub async fn append(&self, s: &Student) -> Result<(), DbError> {
        self.run(async |c| {
            let stmt = c.prepare_cached(INSERT).await?;
            c.execute(&stmt, &params(s)).await.map(drop)
        })
        .await
    }

    /// Runs `op` on a pooled connection within the deadline, creating the table first if
    /// that has not been done yet, and logs a change of reachability.
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&Object) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, DbError> {
        let result = self.run_inner(op).await;
        match &result {
            Ok(_) => {
                if self.inner.reachable.record(true) {
                    tracing::info!(database = %self.inner.url, "database reachable again");
                }
            }
            Err(err) => {
                if self.inner.reachable.record(false) {
                    tracing::warn!(database = %self.inner.url, "{err}; answering 503 until it is back");
                } else {
                    tracing::debug!("{err}");
                }
            }
        }
        result
    }

    async fn run_inner<T>(
        &self,
        op: impl AsyncFnOnce(&Object) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, DbError> {
        let deadline = Instant::now() + self.inner.timeout;
        let timed_out = || DbError::Timeout(self.inner.timeout);
        let client = timeout_at(deadline, self.inner.pool.get())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| match e {
                PoolError::Backend(e) => DbError::Connect(describe(&e)),
                PoolError::Timeout(_) => timed_out(),
                other => DbError::Connect(other.to_string()),
            })?;
        let work = async {
            if !self.inner.ready.initialized() {
                self.inner
                    .ready
                    .get_or_try_init(|| create_and_seed(&client))
                    .await?;
            }
            op(&client).await
        };
        match timeout_at(deadline, work).await {
            Ok(result) => result.map_err(|e| DbError::Query(describe(&e))),
            Err(_) => {
                // The connection may be stuck mid-statement: do not hand it to the next request.
                drop(Object::take(client));
                Err(timed_out())
            }
        }
    }
}

/// In one transaction under [`SEED_LOCK`]: creates the table if missing and fills an empty
/// one with generated students.
async fn create_and_seed(client: &Object) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let result = async {
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SEED_LOCK])
            .await?;
        client.batch_execute(SCHEMA).await?;
        let empty = client
            .query_opt("SELECT 1 FROM students LIMIT 1", &[])
            .await?
            .is_none();
        if empty {
            tracing::info!(count = generate::SEED_COUNT, "seeding empty students table");
            let stmt = client.prepare(INSERT).await?;
            for s in generate::students(generate::SEED_COUNT) {
                client.execute(&stmt, &params(&s)).await?;
            }
        }
        client.batch_execute("COMMIT").await
    }
    .await;
    if result.is_err() {
        // Best effort: a broken connection rolls back by itself when it closes.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

fn params(s: &Student) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
    [
        &s.id,
        &s.first_name,
        &s.last_name,
        &s.gender,
        &s.birthday,
        &s.email,
        &s.city,
    ]
}

fn student(row: &Row) -> Result<Student, tokio_postgres::Error> {
    Ok(Student {
        id: row.try_get(0)?,
        first_name: row.try_get(1)?,
        last_name: row.try_get(2)?,
        gender: row.try_get(3)?,
        birthday: row.try_get(4)?,
        email: row.try_get(5)?,
        city: row.try_get(6)?,
    })
}

/// `picked` (distinct, random order) grown to `n` with repeats, shuffled again so the
/// repeats are not all at the end; generated students when nothing was picked.
fn fill(mut picked: Vec<Student>, n: usize) -> Vec<Student> {
    use rand::seq::{IndexedRandom, SliceRandom};
    if picked.is_empty() {
        return generate::students(n);
    }
    if picked.len() < n {
        let mut rng = rand::rng();
        let distinct = picked.len();
        while picked.len() < n {
            let again = picked[..distinct].choose(&mut rng).cloned();
            picked.extend(again);
        }
        picked.shuffle(&mut rng);
    }
    picked
}

/// Up or down, as last seen; starts up so that a first failure is logged.
#[derive(Debug)]
struct Reachability(AtomicBool);

impl Default for Reachability {
    fn default() -> Self {
        Self(AtomicBool::new(true))
    }
}

impl Reachability {
    /// Records an operation's outcome; true when it differs from the previous one.
    fn record(&self, ok: bool) -> bool {
        // Read first: the common case (no change) then costs no write to a shared line.
        self.0.load(Ordering::Relaxed) != ok && self.0.swap(ok, Ordering::Relaxed) != ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_reports_each_change_once() {
        let r = Reachability::default();
        assert!(!r.record(true), "starts up");
        assert!(r.record(false), "outage begins");
        assert!(!r.record(false), "still down: not again");
        assert!(r.record(true), "back");
        assert!(!r.record(true));
    }

    #[test]
    fn fill_repeats_only_when_short_and_generates_when_empty() {
        let three = generate::students(3);
        let out = fill(three.clone(), 2);
        assert_eq!(out.len(), 3, "never trimmed: the LIMIT did that");
        let out = fill(three.clone(), 10);
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|s| three.contains(s)));
        for s in &three {
            assert!(out.contains(s), "every distinct one is kept");
        }
        assert_eq!(fill(Vec::new(), 4).len(), 4);
    }
}
