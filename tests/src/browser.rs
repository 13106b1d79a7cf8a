//! Headless Chromium for the page tests: a `chromedriver` child on a free port with a fresh
//! profile, driven by fantoccini over plain HTTP (our own hyper-util `HttpConnector`, no TLS),
//! with screenshots under `target/browser-screenshots/` and the browser's console collected.
//!
//! Everything is torn down by `Drop`, also while a failed test unwinds: the WebDriver session
//! is deleted (chromedriver then quits Chromium), the driver is killed, the profile removed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::docker;
use crate::http;
use crate::stack::{Stack, workspace_root};

/// The browser binary: `CHROMIUM` if set, else Debian's `chromium` on `PATH`.
pub fn chromium_path() -> Option<PathBuf> {
    program("CHROMIUM", "chromium")
}

/// The driver binary: `CHROMEDRIVER` if set, else `chromedriver` on `PATH`.
pub fn chromedriver_path() -> Option<PathBuf> {
    program("CHROMEDRIVER", "chromedriver")
}

fn program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Why the browser tests cannot run here (docker, chromium or chromedriver missing).
pub fn unavailable_reason() -> Option<String> {
    if let Some(reason) = docker::unavailable_reason() {
        return Some(reason);
    }
    if chromium_path().is_none() {
        return Some("`chromium` is not installed (Debian: apt-get install chromium)".into());
    }
    if chromedriver_path().is_none() {
        return Some(
            "`chromedriver` is not installed (Debian: apt-get install chromium-driver)".into(),
        );
    }
    None
}

/// True when the browser tests can run. Otherwise prints why and returns false, or panics
/// under CI, where a skipped browser test would prove nothing.
pub fn available_or_skip(test: &str) -> bool {
    match unavailable_reason() {
        None => true,
        Some(reason) if docker::in_ci() => {
            panic!("{test}: docker, chromium and chromedriver are required under CI: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

/// Runs `N` replicas of `service` in `stack` (`compose up --no-recreate --scale`), for
/// services `./setup.sh scale` does not cover (it scales student-api only).
pub fn scale(stack: &Stack, service: &str, n: usize) -> Result<()> {
    let root = workspace_root();
    let compose_file = root.join("compose.yaml");
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    cmd.arg("--project-directory")
        .arg(&root)
        .arg("-f")
        .arg(&compose_file)
        .args(["-p", &stack.project, "up", "-d", "--no-recreate", "--scale"])
        .arg(format!("{service}={n}"))
        .arg(service)
        .envs(stack.env())
        .current_dir(&root);
    docker::run(&mut cmd)?;
    crate::stack::wait_for(Duration::from_secs(30), || {
        Ok(stack.containers(service)?.len() == n)
    })
    .with_context(|| format!("{service} did not reach {n} running replicas"))
}

/// The `chromedriver` child process and its private Chromium profile.
#[derive(Debug)]
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    fn start(profile: PathBuf) -> Result<Self> {
        let exe = chromedriver_path().ok_or_else(|| anyhow!("chromedriver not found"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::create_dir_all(&profile)?;
        let log = std::fs::File::create(profile.with_extension("chromedriver.log"))?;
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start chromedriver")?;
        let driver = Self {
            child,
            port,
            profile,
        };
        crate::stack::wait_for(Duration::from_secs(15), || {
            Ok(http::get(port, "/status").is_ok_and(|r| r.status == 200))
        })
        .context("chromedriver did not answer /status")?;
        Ok(driver)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One entry of the browser's console log, as chromedriver reports it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, ...
    pub level: String,
    /// `javascript`, `console-api`, `network`, `security`, ... (empty if not given).
    pub source: String,
    /// The text, usually starting with the URL and position.
    pub message: String,
}

/// chromedriver's log endpoint (not part of W3C WebDriver, hence our own command).
#[derive(Debug)]
struct GetBrowserLog;

impl WebDriverCompatibleCommand for GetBrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (::http::Method, Option<String>) {
        (
            ::http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// A headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver client: navigate, find, execute.
    pub client: Client,
    session: Option<String>,
    shots: PathBuf,
    shot: u32,
    /// Every console entry read so far.
    pub console: Vec<LogEntry>,
    driver: Driver,
}

/// The flags the lab's browser tests run Chromium with.
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// What overflows on the balancer's dashboard: the page's and each card's widths, and how far
/// the rightmost cell of each card sticks out of the card's content box (> 0: cut off).
const DASHBOARD_OVERFLOW: &str = "function overhang(card) {
    var box = card.getBoundingClientRect();
    var right = box.left + card.clientLeft + card.clientWidth
      - parseFloat(getComputedStyle(card).paddingRight);
    var most = 0;
    card.querySelectorAll('td, li').forEach(function (e) {
      most = Math.max(most, e.getBoundingClientRect().right);
    });
    return most - right;
  }
  return {
    page: document.documentElement.scrollWidth, inner: window.innerWidth,
    cards: Array.from(document.querySelectorAll('.card')).map(function (c) {
      var t = c.querySelector('table');
      return { card: c.dataset.chart || c.dataset.pool || c.id || c.className,
               scroll: c.scrollWidth, client: c.clientWidth, table: t ? t.scrollWidth : 0,
               overhang: overhang(c) };
    })
  };";

/// The dashboard's cards: two charts, the events, controls, load generator, experiment, and
/// the two pools of the lab.
const DASHBOARD_CARDS: usize = 8;

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile; screenshots go to
    /// `target/browser-screenshots/` (emptied first).
    pub async fn start(name: &str) -> Result<Self> {
        Self::start_with_screenshots(name, None).await
    }

    /// [`Browser::start`] with the screenshots in `target/browser-screenshots/<dir>/` (emptied
    /// first) when `dir` is given, so that two tests keep each other's.
    pub async fn start_with_screenshots(name: &str, dir: Option<&str>) -> Result<Self> {
        let target = workspace_root().join("target");
        let profile = target.join("browser-profiles").join(format!(
            "{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let driver = Driver::start(profile)?;
        let mut shots = target.join("browser-screenshots");
        if let Some(d) = dir {
            shots = shots.join(d);
            let _ = std::fs::remove_dir_all(&shots);
        } else {
            // Only this test's pictures: another test's directory beside them stays.
            for e in std::fs::read_dir(&shots).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "png") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        std::fs::create_dir_all(&shots)?;

        let chromium = chromium_path().ok_or_else(|| anyhow!("chromium not found"))?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", driver.profile.display()));
        args.push("--window-size=1280,1000".to_owned());
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": args}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .context("cannot open a WebDriver session")?;
        let session = client.session_id().await?;
        Ok(Self {
            client,
            session,
            shots,
            shot: 0,
            console: Vec::new(),
            driver,
        })
    }

    /// Saves a screenshot as `NN-step.png`; returns its path.
    pub async fn screenshot(&mut self, step: &str) -> Result<PathBuf> {
        self.shot += 1;
        let path = self.shots.join(format!("{:02}-{step}.png", self.shot));
        let png = self.client.screenshot().await?;
        std::fs::write(&path, png)?;
        eprintln!("screenshot {}", path.display());
        Ok(path)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn js(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Text of the element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        Ok(self.client.find(Locator::Css(css)).await?.text().await?)
    }

    /// Attribute `name` of the element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .client
            .find(Locator::Css(css))
            .await?
            .attr(name)
            .await?)
    }

    /// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout`.
    pub async fn wait_until<T, F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => None,
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                return Err(match last {
                    Some(e) => e.context(format!("{what}: still not true after {timeout:?}")),
                    None => anyhow!("{what}: still not true after {timeout:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads the console entries logged since the last call and keeps them in `console`.
    pub async fn read_console(&mut self) -> Result<Vec<LogEntry>> {
        let value = self.client.issue_cmd(GetBrowserLog).await?;
        let Some(entries) = value.as_array() else {
            bail!("unexpected log answer: {value}");
        };
        let entries: Vec<LogEntry> = entries
            .iter()
            .map(|e| LogEntry {
                level: e["level"].as_str().unwrap_or_default().to_owned(),
                source: e["source"].as_str().unwrap_or_default().to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        self.console.extend(entries.iter().cloned());
        Ok(entries)
    }

    /// Ends the session (Chromium quits) before the driver is killed.
    pub async fn close(mut self) -> Result<()> {
        self.session = None;
        // `close` consumes the client; the Drop of `self` still kills the driver.
        let client = self.client.clone();
        client.close().await?;
        Ok(())
    }

    /// Checks that nothing on the balancer's dashboard (the current page) scrolls sideways
    /// at the window's `width`: not the page, not a card inside itself, and no table or event
    /// line is wider than its card; and that every card is there.
    pub async fn dashboard_fits(&self, width: u64) -> Result<()> {
        let v = self.js(DASHBOARD_OVERFLOW).await?;
        if v["inner"] != width {
            bail!("the window is not {width} px wide: {v}");
        }
        if v["page"].as_u64().is_none_or(|page| page > width) {
            bail!("the dashboard scrolls sideways at {width} px: {v}");
        }
        let cards = v["cards"].as_array().context("no card list")?;
        if cards.len() != DASHBOARD_CARDS {
            bail!("{DASHBOARD_CARDS} cards expected: {v}");
        }
        for c in cards {
            let px = |key: &str| c[key].as_u64().unwrap_or(u64::MAX);
            let (scroll, client, table) = (px("scroll"), px("client"), px("table"));
            let overhang = c["overhang"].as_f64().unwrap_or(f64::MAX);
            if scroll > client || table > client || overhang > 1.0 {
                bail!(
                    "at {width} px the card {} overflows (its table {table} px, card {client} \
                     px, scrolls to {scroll} px, cells stick out {overhang} px): {v}",
                    c["card"]
                );
            }
        }
        Ok(())
    }

    /// The screenshots directory.
    pub fn screenshots_dir(&self) -> &Path {
        &self.shots
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Also on a panic: delete the session so chromedriver quits Chromium, instead of
        // leaving it running after the driver is killed. Blocking std I/O: no runtime needed.
        if let Some(id) = self.session.take() {
            let mut c = http::Client::new(self.driver.port);
            let _ = c.request("DELETE", &format!("/session/{id}"), None);
        }
    }
}
