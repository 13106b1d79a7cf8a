//! Noticing that the config file changed. Editors and `kubectl`/compose volume updates replace
//! the file by rename, so the path's metadata (inode, size, mtime) is polled rather than an
//! inotify watch on the old inode; polling also works on every bind mount.

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
            last = now;
            tracing::info!(path = %path.display(), "config file changed; reloading");
            if tx.send(Command::Reload(None)).await.is_err() {
                return;
            }
        }
    }
}
