//! An app binary's whole `main`: parse arguments, load config, set up tracing, bind, run.
//!
//! Each app's `main.rs` holds only what differs (its name, `--help` text, config and `run`)
//! in a [`Binary`] and hands it to [`main`].

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{errors, healthcheck};

/// Resolves when the process should shut down (SIGTERM or SIGINT). Boxed so that `run`, generic
/// over its shutdown future, can be passed as a plain function.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What differs between the two binaries.
#[derive(Debug)]
pub struct Binary<C, R> {
    /// The binary's name, which starts every message (`student-api`).
    pub name: &'static str,
    /// The version `--version` prints.
    pub version: &'static str,
    /// The `--help` text.
    pub help: &'static str,
    /// Loads the config from env vars, the optional file and defaults.
    pub load: fn() -> Result<C, config_report::Problem>,
    /// The address the config says to listen on (also what `--healthcheck` probes).
    pub listen: fn(&C) -> SocketAddr,
    /// Serves an already-bound listener until the shutdown future resolves.
    pub run: R,
}

enum Mode {
    Serve,
    Healthcheck,
}

/// Runs `bin` with the process's arguments: exit 0 on success, 1 on failure (config errors
/// included), 2 on an unknown argument.
pub fn main<C, R, F, E>(bin: Binary<C, R>) -> ExitCode
where
    R: FnOnce(TcpListener, C, Shutdown) -> F,
    F: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let name = bin.name;
    let mode = match std::env::args().nth(1).as_deref() {
        None => Mode::Serve,
        Some("--healthcheck") => Mode::Healthcheck,
        Some("-h" | "--help") => {
            print!("{}", bin.help);
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("{name} {}", bin.version);
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("{name}: unknown argument {other:?}\n\n{}", bin.help);
            return ExitCode::from(2);
        }
    };
    let config = match (bin.load)() {
        Ok(c) => c,
        Err(e) => {
            // Masked: a refused database URL or a quoted file line may hold a password.
            eprintln!("{name}: configuration error: {}", errors::describe(&e));
            return ExitCode::FAILURE;
        }
    };
    let listen = (bin.listen)(&config);
    let result = match mode {
        Mode::Healthcheck => {
            healthcheck::check(listen, Duration::from_secs(3)).map_err(anyhow::Error::from)
        }
        Mode::Serve => serve(listen, config, bin.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {}", errors::describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn serve<C, R, F, E>(listen: SocketAddr, config: C, run: R) -> anyhow::Result<()>
where
    R: FnOnce(TcpListener, C, Shutdown) -> F,
    F: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = termination_signal().context("installing signal handlers")?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        println!("listening on {}", listener.local_addr()?);
        run(listener, config, Box::pin(shutdown)).await?;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT; installed before serving so no early signal is lost.
fn termination_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("received {name}");
    })
}
