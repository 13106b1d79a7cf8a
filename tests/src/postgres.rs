//! The database an operator would provide for the swarm lab's shared roster: a throwaway
//! PostgreSQL server (`pg-harness`) that also listens on the swarm's addresses, trusts the
//! swarm's networks, and holds a database `lab` owned by the superuser `lab`.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use pg_harness::{Options, PgServer};

/// A running server; stopped and its directory removed when dropped.
#[derive(Debug)]
pub struct Postgres {
    server: PgServer,
    /// The port it listens on.
    pub port: u16,
}

impl Postgres {
    /// Starts a server listening on 127.0.0.1 and `extra_listen`, trusting connections from
    /// loopback and `trusted` (CIDRs). Its only role is `lab`, a superuser; the database is
    /// `lab`.
    pub fn start(extra_listen: &[Ipv4Addr], trusted: &[&str]) -> Result<Self> {
        let server = PgServer::start(Options {
            superuser: "lab".into(),
            extra_listen: extra_listen.to_vec(),
            trusted: trusted.iter().map(|&t| t.to_owned()).collect(),
            cleanup_on_exit: false,
        })
        .context("cannot start PostgreSQL")?;
        server
            .psql("postgres", "CREATE DATABASE lab")
            .context("cannot create the database")?;
        Ok(Self {
            port: server.port(),
            server,
        })
    }

    /// The URL a client at `host` uses.
    pub fn url(&self, host: &str) -> String {
        format!("postgres://lab@{host}:{}/lab", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.server.log_text()
    }
}

/// Whether PostgreSQL can be started here; `Err` says why not.
pub fn available() -> Result<()> {
    Ok(pg_harness::available()?)
}
