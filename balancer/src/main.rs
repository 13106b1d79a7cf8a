//! `balancer`: loads the configuration, sets up logging, binds, and runs until SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apps_shared::errors::describe;
use balancer::config::{self, FileChoice};
use balancer::control::Command;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

// musl's allocator is slow under threads; mimalloc wins ~15% req/s on the proxy benchmark
// (docs/benchmarks.md). Its ~10 MB of extra RSS was transparent huge pages on its arenas, which
// the `no_thp` feature (balancer/Cargo.toml) turns off: 14 MB -> 4.6 MB at start.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HELP: &str = "\
balancer - lab-stack's load balancer (dynamic reverse proxy)

USAGE:
    balancer [--config PATH]            run
    balancer --check-config [--config PATH]
                                        validate; print the effective config with the source
                                        of every value; exit 0 if valid, 2 if not
    balancer --print-default-config     print a commented TOML template of every key
    balancer --healthcheck              GET the admin /healthz; exit 0 if healthy, 1 if not
    balancer --help | --version

Configuration: built-in defaults < TOML file (BALANCER_CONFIG, default
/etc/balancer/balancer.toml when present) < environment variables.
Common variables: BALANCER_LISTEN (0.0.0.0:80), BALANCER_ADMIN_LISTEN (0.0.0.0:1936),
STATIC_BACKEND, DYNAMIC_BACKEND (\"host:port host:port*weight\"), BALANCER_STATIC_ALGORITHM,
BALANCER_DYNAMIC_ALGORITHM, BALANCER_STATIC_STICKY, BALANCER_DYNAMIC_STICKY, BALANCER_ADMIN_TOKEN.
See the README for the full table. SIGHUP or editing the file reloads; SIGTERM drains and exits.
";

enum Mode {
    Run,
    Check,
    PrintDefault,
    Healthcheck,
}

fn parse_args() -> Result<(Mode, Option<PathBuf>), String> {
    let mut mode = Mode::Run;
    let mut path = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--version" | "-V" => {
                println!("balancer {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--check-config" | "-t" => mode = Mode::Check,
            "--print-default-config" => mode = Mode::PrintDefault,
            "--healthcheck" => mode = Mode::Healthcheck,
            "--config" | "-c" => {
                path = Some(args.next().ok_or("--config needs a path")?.into());
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    Ok((mode, path))
}

fn main() -> ExitCode {
    let (mode, path) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("balancer: {e}");
            return ExitCode::from(2);
        }
    };
    let file = FileChoice::resolve(path);
    match mode {
        Mode::PrintDefault => {
            print!("{}", config::check::default_template());
            ExitCode::SUCCESS
        }
        Mode::Check => check(&file),
        Mode::Healthcheck => healthcheck(&file),
        Mode::Run => run(file),
    }
}

fn check(file: &FileChoice) -> ExitCode {
    let (raw, origin) = match config::load_with_origin(file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("balancer: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match config::Settings::build(&raw, &origin) {
        Ok(s) => {
            let source = origin
                .file
                .as_ref()
                .map_or("no config file".to_owned(), |p| {
                    format!("file {}", p.display())
                });
            println!("# configuration is valid ({source}); effective values and their sources:");
            print!("{}", config::check::describe(&s, &raw, &origin));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("balancer: invalid configuration: {e}");
            ExitCode::from(2)
        }
    }
}

/// The image's HEALTHCHECK: the apps' `--healthcheck` client, pointed at the admin listener.
fn healthcheck(file: &FileChoice) -> ExitCode {
    let admin = config::load_raw(file)
        .map(|r| r.admin_listen)
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 1936)));
    match apps_shared::healthcheck::check(admin, Duration::from_secs(2)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("balancer: unhealthy: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

fn init_tracing(
    access_log: Option<&PathBuf>,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>, String> {
    // `Targets` understands the usual RUST_LOG forms (`info`, `warn,access=info`) without
    // EnvFilter's regex engine, which would add ~1 MB to a binary that must fit a 5 MB image.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let stdout = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(true)
        .with_filter(filter);
    let (file_layer, guard) = match access_log {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("access_log {}: {e}", path.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(f);
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_writer(writer)
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("access", tracing::Level::INFO),
                );
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stdout)
        .with(file_layer)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(guard)
}

fn run(file: FileChoice) -> ExitCode {
    let settings = match config::load(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("balancer: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let _log_guard = match init_tracing(settings.access_log.as_ref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("balancer: cannot open the access log: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = match balancer::server::bind_reuseport(settings.listen, settings.workers) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "balancer: cannot listen on {} (listen / BALANCER_LISTEN): {e}",
                settings.listen
            );
            return ExitCode::from(1);
        }
    };
    let admin = match std::net::TcpListener::bind(settings.admin_listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "balancer: cannot listen on {} (admin_listen / BALANCER_ADMIN_LISTEN): {e}",
                settings.admin_listen
            );
            return ExitCode::from(1);
        }
    };
    let file = Some(file).filter(|f| f.explicit || f.path.exists());
    let listeners = balancer::Listeners { proxy, admin };
    let running = match balancer::start(settings, file, listeners, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("balancer: cannot start: {}", describe(e.as_ref()));
            return ExitCode::from(1);
        }
    };
    // Handlers first: whoever reads "listening on" may send SIGTERM at once, and it must drain.
    if let Err(e) = install_signals(&running) {
        eprintln!("balancer: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    println!("listening on {}", running.proxy_addr);
    println!("listening on {} (admin)", running.admin_addr);
    tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, "balancer started");
    match running.wait() {
        Ok(()) => {
            tracing::info!("balancer stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("balancer: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

fn install_signals(running: &balancer::Running) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = running
        .runtime()
        .ok_or_else(|| std::io::Error::other("no runtime"))?;
    let _g = rt.enter();
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let control = running.control();
    rt.spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            if control.send(Command::Reload(None)).await.is_err() {
                return;
            }
        }
    });
    let stop = running.stopper();
    rt.spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining, then exiting"),
            _ = int.recv() => tracing::info!("SIGINT: draining, then exiting"),
        }
        stop.cancel();
    });
    Ok(())
}
