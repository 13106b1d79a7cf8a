//! The roster: a JSON Lines file shared by every replica, cached in memory.
//!
//! Writers append one record per `write` under an exclusive `flock` and `fsync` before
//! answering, so an acknowledged POST survives a crash. Readers take no lock: they stat the
//! file on each read and parse only the bytes appended since last time, so a POST on one
//! replica shows up on the others at their next GET. An incomplete last line (a torn write,
//! or an append still in flight) is skipped and logged, never fatal; the next writer
//! terminates it with a newline so its own record stays readable.
//!
//! All methods block on file I/O: call them from `spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::seq::{IndexedRandom, SliceRandom};

use crate::generate;
use crate::student::Student;

/// Why a student could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// There is no usable roster file (the data dir is missing or read-only).
    #[error("roster storage unavailable: {0}")]
    Unavailable(String),
    /// The append itself failed.
    #[error("could not write roster file {path}: {source}")]
    Io {
        /// The roster file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Where the students live.
#[derive(Debug)]
enum Backing {
    /// A roster file, re-read as it grows.
    File(PathBuf),
    /// Generated students only; POST is refused with this reason.
    Memory(String),
}

/// What has been read from the file so far.
#[derive(Debug, Default)]
struct Cache {
    students: Vec<Student>,
    /// Bytes consumed: always just after a newline (or a complete record at EOF).
    offset: u64,
    /// Identity (device, inode) of the file read, so a replaced file is read from the start.
    file_id: (u64, u64),
    /// Offset of an incomplete last line already logged, to log it once.
    torn_logged_at: Option<u64>,
}

/// The shared roster and this replica's cache of it.
#[derive(Debug)]
pub struct Roster {
    backing: Backing,
    cache: Mutex<Cache>,
}

impl Roster {
    /// Opens the roster at `path`, seeding it when it holds no student; falls back to
    /// generated students in memory when the file can be neither read nor created.
    pub fn open(path: &Path) -> Self {
        match seed_if_empty(path) {
            Ok(()) => {}
            Err(err) if has_students(path) => {
                tracing::warn!(path = %path.display(), "roster is read-only ({err}); POST will answer 503");
            }
            Err(err) => {
                let reason = format!("cannot create or write {}: {err}", path.display());
                tracing::warn!("{reason}; serving generated students from memory");
                return Self::in_memory(reason);
            }
        }
        let roster = Self {
            backing: Backing::File(path.to_owned()),
            cache: Mutex::default(),
        };
        roster.refresh();
        roster
    }

    /// A roster of generated students that refuses writes with `reason`.
    pub fn in_memory(reason: String) -> Self {
        let cache = Cache {
            students: generate::students(generate::SEED_COUNT),
            ..Cache::default()
        };
        Self {
            backing: Backing::Memory(reason),
            cache: Mutex::new(cache),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a cache that is at worst stale: keep going.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads whatever was appended since the last call (cheap when nothing changed).
    pub fn refresh(&self) {
        let Backing::File(path) = &self.backing else {
            return;
        };
        let mut cache = self.cache();
        if let Err(err) = read_new(path, &mut cache) {
            tracing::warn!(path = %path.display(), "cannot read roster: {err}");
        }
    }

    /// Number of students known to this replica.
    pub fn len(&self) -> usize {
        self.cache().students.len()
    }

    /// Whether no student is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` students in random order: distinct while the roster has enough, repeats after.
    pub fn sample(&self, n: usize) -> Vec<Student> {
        let mut rng = rand::rng();
        let cache = self.cache();
        if cache.students.is_empty() {
            return generate::students(n);
        }
        let mut out: Vec<Student> = cache.students.sample(&mut rng, n).cloned().collect();
        while out.len() < n {
            out.extend(cache.students.choose(&mut rng).cloned());
        }
        drop(cache);
        out.shuffle(&mut rng);
        out
    }

    /// The student with `id`, if this replica knows it (call [`Roster::refresh`] first to see
    /// what other replicas appended). The last record wins should an id ever repeat.
    pub fn find(&self, id: &str) -> Option<Student> {
        self.cache()
            .students
            .iter()
            .rev()
            .find(|s| s.id == id)
            .cloned()
    }

    /// Appends `student` durably: one write under the file lock, then fsync.
    pub fn append(&self, student: &Student) -> Result<(), StoreError> {
        let path = match &self.backing {
            Backing::File(path) => path,
            Backing::Memory(reason) => return Err(StoreError::Unavailable(reason.clone())),
        };
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(student).map_err(|e| io_err(io::Error::other(e)))?;
        line.push(b'\n');
        let file = open_for_append(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot open {} for writing: {e}", path.display()))
        })?;
        file.lock().map_err(io_err)?;
        let result = append_locked(&file, &line);
        // Dropping the file would release the lock too; unlocking first keeps it short.
        let _ = file.unlock();
        result.map_err(io_err)
    }
}

fn open_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

/// Writes `bytes` at the end of a locked file, first terminating a torn last line.
fn append_locked(mut file: &File, bytes: &[u8]) -> io::Result<()> {
    let len = file.metadata()?.len();
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            buf.push(b'\n');
        }
    }
    buf.extend_from_slice(bytes);
    file.write_all(&buf)?;
    file.sync_data()
}

/// Under the lock, writes generated students when the file holds no valid record.
///
/// Several replicas may start at once on an empty volume: the lock plus the re-check means
/// exactly one of them seeds.
fn seed_if_empty(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = open_for_append(path)?;
    file.lock()?;
    let mut cache = Cache::default();
    let result = read_from(&file, &mut cache).and_then(|()| {
        if !cache.students.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for s in generate::students(generate::SEED_COUNT) {
            serde_json::to_writer(&mut lines, &s).map_err(io::Error::other)?;
            lines.push(b'\n');
        }
        tracing::info!(path = %path.display(), count = generate::SEED_COUNT, "seeding empty roster");
        append_locked(&file, &lines)
    });
    let _ = file.unlock();
    result
}

fn has_students(path: &Path) -> bool {
    let mut cache = Cache::default();
    File::open(path)
        .and_then(|f| read_from(&f, &mut cache))
        .is_ok()
        && !cache.students.is_empty()
}

/// Stats `path` and reads what is new into `cache`, from the start if the file was replaced.
fn read_new(path: &Path, cache: &mut Cache) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    let id = (meta.dev(), meta.ino());
    if id != cache.file_id || meta.len() < cache.offset {
        *cache = Cache {
            file_id: id,
            ..Cache::default()
        };
    }
    if meta.len() == cache.offset {
        return Ok(());
    }
    read_from(&File::open(path)?, cache)
}

/// Parses complete lines from `cache.offset` to the end of `file`, skipping bad ones.
fn read_from(mut file: &File, cache: &mut Cache) -> io::Result<()> {
    file.seek(SeekFrom::Start(cache.offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut pos = 0;
    while pos < bytes.len() {
        let at = cache.offset + pos as u64;
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            // No newline yet: keep the bytes for next time unless they already form a record.
            match serde_json::from_slice::<Student>(&bytes[pos..]) {
                Ok(s) => {
                    cache.students.push(s);
                    pos = bytes.len();
                }
                Err(err) if cache.torn_logged_at != Some(at) => {
                    tracing::warn!(offset = at, "skipping incomplete last roster line: {err}");
                    cache.torn_logged_at = Some(at);
                }
                Err(_) => {}
            }
            break;
        };
        let line = &bytes[pos..pos + nl];
        pos += nl + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Student>(line) {
            Ok(s) => cache.students.push(s),
            Err(err) => tracing::warn!(offset = at, "skipping unreadable roster line: {err}"),
        }
    }
    cache.offset += pos as u64;
    Ok(())
}

#[cfg(test)]
mod tests;
