//! Where the students live, as the handlers see it: the JSON Lines [`Roster`] file (the
//! default, for replicas on one host) or a PostgreSQL database (`STUDENT_DATABASE_URL`, for
//! replicas on several hosts). Both keep the same promises: a POST is acknowledged only
//! once stored durably, an empty store is seeded once, and what one replica stores every
//! replica serves.
//!
//! An enum rather than a trait object: the set is closed, and a match costs no allocation
//! or indirection per request.

pub mod postgres;

use std::sync::Arc;

use crate::config::Config;
use crate::roster::{self, Roster};
use crate::student::Student;
use postgres::{DbError, PgStore};

/// The students' storage.
#[derive(Debug, Clone)]
pub enum Store {
    /// The roster file, read and written on the blocking pool.
    File(Arc<Roster>),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The roster file could not be written.
    #[error(transparent)]
    File(#[from] roster::StoreError),
    /// The database could not be reached or failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// A blocking file task panicked.
    #[error("roster task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Whether this is the storage being unavailable (503) rather than a bug here (500).
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, Self::Task(_))
    }
}

impl Store {
    /// The store `config` names: PostgreSQL when `database_url` is set, else the roster
    /// file (opened, and seeded if empty, on the blocking pool). An unreachable database
    /// is logged, not fatal: requests answer 503 until it is back.
    pub async fn open(config: &Config) -> Result<Self, tokio::task::JoinError> {
        match &config.database_url {
            Some(url) => {
                let store = PgStore::new(url, config.database_timeout);
                // Failure is already logged by the store; the first request will retry.
                let _ = store.prepare().await;
                Ok(Self::Postgres(store))
            }
            None => {
                let path = config.data.clone();
                let roster = tokio::task::spawn_blocking(move || Roster::open(&path)).await?;
                Ok(Self::File(Arc::new(roster)))
            }
        }
    }

    /// `n` students in random order (see [`Roster::sample`]), after reading what other
    /// replicas stored.
    pub async fn sample(&self, n: usize) -> Result<Vec<Student>, StoreError> {
        match self {
            Self::File(roster) => {
                let roster = roster.clone();
                Ok(tokio::task::spawn_blocking(move || {
                    roster.refresh();
                    roster.sample(n)
                })
                .await?)
            }
            Self::Postgres(db) => Ok(db.sample(n).await?),
        }
    }

    /// The student with `id`, wherever it was stored.
    pub async fn find(&self, id: &str) -> Result<Option<Student>, StoreError> {
        match self {
            Self::File(roster) => {
                let roster = roster.clone();
                let id = id.to_owned();
                Ok(tokio::task::spawn_blocking(move || {
                    roster.refresh();
                    roster.find(&id)
                })
                .await?)
            }
            Self::Postgres(db) => Ok(db.find(id).await?),
        }
    }

    /// Stores `student` durably; returns once it is on disk or committed.
    pub async fn append(&self, student: &Student) -> Result<(), StoreError> {
        match self {
            Self::File(roster) => {
                let roster = roster.clone();
                let student = student.clone();
                tokio::task::spawn_blocking(move || roster.append(&student))
                    .await
                    .unwrap_or_else(|e| {
                        Err(roster::StoreError::Unavailable(format!(
                            "write task failed: {e}"
                        )))
                    })?;
                Ok(())
            }
            Self::Postgres(db) => Ok(db.append(student).await?),
        }
    }

    /// One line for the start-up log: which store, and how many students a file holds.
    pub fn describe(&self) -> String {
        match self {
            Self::File(roster) => format!("roster file ({} students)", roster.len()),
            Self::Postgres(db) => format!("PostgreSQL {}", db.url()),
        }
    }
}
