//! Noticing that the config file changed. Editors and `kubectl`/compose volume updates replace
//! the file by rename, so the path's metadata (inode, size, mtime) is polled rather than an
//! inotify watch on the old inode; polling also works on every bind mount. A writer that
//! rewrites the file in place (`cat > file`, `echo > file`) can be caught between truncating
//! and writing, and an empty or half file may still be valid TOML: so a change is applied only
//! once the file has held still for [`SETTLE`].
//!
//! The watcher compares against the file as it was when the running configuration was read
//! ([`FileVersion`], stamped just before reading), not as it is when the watcher first looks:
//! an edit that lands while the balancer starts (between loading and the watcher's first
//! poll, which a busy machine can delay by a second or more) would otherwise become the
//! baseline and never be applied.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::Command;

#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) struct Stamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

/// Which version of the config file a configuration was read from: its stamp taken just
/// before reading, `None` if it could not be read then.
///
/// Two configurations that say the same thing are equal whichever version of the file they
/// came from (a comment-only edit reloads as "unchanged"), so every `FileVersion` equals every
/// other one.
#[derive(Debug, Clone)]
pub(crate) struct FileVersion(Option<Stamp>);

impl FileVersion {
    /// The file at `path` as it is now; take it before reading the file.
    pub(crate) fn of(path: &Path) -> Self {
        FileVersion(stamp(path))
    }
}

impl PartialEq for FileVersion {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// How long a changed file must stay unchanged before it is reloaded.
pub(crate) const SETTLE: Duration = Duration::from_millis(150);
/// Give up waiting for a file that keeps changing after this many settle periods.
const MAX_SETTLE_ROUNDS: u32 = 40;

/// Waits until the file's stamp stays the same for [`SETTLE`]; returns the stamp it settled on.
async fn settle(path: &Path, mut seen: Option<Stamp>) -> Option<Stamp> {
    for _ in 0..MAX_SETTLE_ROUNDS {
        tokio::time::sleep(SETTLE).await;
        let again = stamp(path);
        if again == seen {
            break;
        }
        seen = again;
    }
    seen
}

/// Sends a reload to the control loop whenever the file at `path` changes (appears,
/// disappears, or is rewritten) from `loaded`, the version the running configuration was read
/// from (`None`: not read from this file; then from the file as the watcher first sees it),
/// checking every `every`.
pub(crate) async fn watch_file(
    path: PathBuf,
    loaded: Option<FileVersion>,
    every: Duration,
    tx: mpsc::Sender<Command>,
    stop: CancellationToken,
) {
    let mut last = match loaded {
        Some(FileVersion(s)) => s,
        None => stamp(&path),
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let now = stamp(&path);
        if now != last {
            last = tokio::select! {
                s = settle(&path, now) => s,
                () = stop.cancelled() => return,
            };
            tracing::info!(path = %path.display(), "config file changed; reloading");
            if tx.send(Command::Reload(None)).await.is_err() {
                return;
            }
        }
    }
}
