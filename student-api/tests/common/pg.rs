//! A throwaway PostgreSQL for the tests, and one fresh database per test.
//!
//! `STUDENT_TEST_DATABASE_URL` (a superuser or a role with CREATEDB) names a server to use;
//! otherwise each test binary starts its own with `pg-harness` (Debian's binaries, a temp
//! dir, a free loopback port; stopped when the test process ends, however it ends). Without
//! binaries the PostgreSQL tests are skipped with the reason printed, unless `CI=true`, where
//! they fail. Tests that stop or pause a server get one of their own ([`own_server`]); the
//! others share one ([`shared_admin_url`]).

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use pg_harness::Options;
pub(crate) use pg_harness::PgServer;
use tokio_postgres::NoTls;

/// A server of this test's own (one it stops or pauses); `Err` says why it cannot.
pub(crate) fn own_server() -> Result<PgServer, String> {
    PgServer::start(Options::default()).map_err(|e| e.to_string())
}

/// Says (once per test binary, past the output capture) why the PostgreSQL tests are
/// skipped; with `CI=true` fails the test instead.
pub(crate) fn unavailable(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL tests cannot run: {reason} (CI=true: not skipping)");
    }
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        let _ = writeln!(
            std::io::stderr(),
            "skipping PostgreSQL tests: {reason}; set STUDENT_TEST_DATABASE_URL or install \
             PostgreSQL to run them"
        );
    });
}

/// The shared server's URL for its `postgres` database (or `STUDENT_TEST_DATABASE_URL`);
/// `None` (after [`unavailable`]) when there is none.
pub(crate) fn shared_admin_url() -> Option<&'static str> {
    static SHARED: OnceLock<Result<(String, Option<PgServer>), String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        if let Some(url) = std::env::var("STUDENT_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return Ok((url, None));
        }
        // Never dropped: the wrapper stops it and removes its files when the process ends.
        let server = PgServer::start(Options {
            cleanup_on_exit: true,
            ..Options::default()
        })
        .map_err(|e| e.to_string())?;
        Ok((server.url("postgres"), Some(server)))
    });
    match shared {
        Ok((url, _)) => Some(url),
        Err(reason) => {
            unavailable(reason);
            None
        }
    }
}

/// A database of its own for one test, dropped afterwards.
pub(crate) struct TestDb {
    /// Its URL.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// Creates a database named after `tag` on the server `admin_url` points to.
    pub(crate) fn create(admin_url: &str, tag: &str) -> Self {
        let mut name: String = format!("t_{tag}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        name.push_str(&format!(
            "_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        admin_sql(admin_url, format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        Self {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin_sql(
            &self.admin_url,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` on a connection of its own, on a thread of its own (callers may be inside a
/// runtime already), giving up after 10 s (a test may have stopped or frozen the server).
fn admin_sql(admin_url: &str, sql: String) -> Result<(), String> {
    let url = admin_url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let work = async {
            let (client, conn) = tokio_postgres::connect(&url, NoTls)
                .await
                .map_err(|e| format!("{e:?}"))?;
            tokio::spawn(conn);
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{e:?}"))
        };
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), work)
                .await
                .unwrap_or_else(|_| Err("no answer within 10 s".into()))
        })
    })
    .join()
    .unwrap_or_else(|_| Err("admin thread panicked".into()))
}

/// `url` with its database (the path) replaced by `db`, query kept.
pub(crate) fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_at = base.find("://").map_or(0, |i| i + 3);
    let authority_at = base
        .rfind('@')
        .map_or(authority_at, |i| i.max(authority_at));
    let host_end = base[authority_at..]
        .find('/')
        .map_or(base.len(), |i| authority_at + i);
    format!("{}/{db}{query}", &base[..host_end])
}

/// Every id in the `students` table of `url`.
pub(crate) async fn stored_ids(url: &str) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .query("SELECT id FROM students", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}
