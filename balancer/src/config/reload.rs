//! Noticing that the config file changed. Editors and `kubectl`/compose volume updates replace
//! the file by rename, so the path's metadata (inode, size, mtime) is polled rather than an
//! inotify watch on the old inode; polling also works on every bind mount. A writer that
//! rewrites the file in place (`cat > file`, `echo > file`) can be caught between truncating
//! and writing, and an empty or half file may still be valid TOML: so a change is applied only
//! once the file has held still for [`SETTLE`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::Command;

#[derive(Debug, PartialEq, Eq, Clone)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

/// How long a changed file must stay unchanged before it is reloaded.
pub const SETTLE: Duration = Duration::from_millis(150);
/// Give up waiting for a file that keeps changing after this many settle periods.
const MAX_SETTLE_ROUNDS: u32 = 40;

/// Waits until the file's stamp stays the same for [`SETTLE`]; returns the stamp it settled on.
async fn settle(path: &PathBuf, mut seen: Option<Stamp>) -> Option<Stamp> {
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
/// disappears, or is rewritten), checking every `every`.
pub async fn watch_file(
    path: PathBuf,
    every: Duration,
    tx: mpsc::Sender<Command>,
    stop: CancellationToken,
) {
    let mut last = stamp(&path);
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
