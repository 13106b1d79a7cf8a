//! Roster file behaviour on real files in a private temp dir.

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "student-api-unit-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn empty_file_is_seeded_once() {
    let dir = TempDir::new("seed");
    let path = dir.0.join("students.jsonl");
    std::fs::write(&path, "").unwrap();
    let a = Roster::open(&path);
    let b = Roster::open(&path);
    assert_eq!(a.len(), generate::SEED_COUNT);
    assert_eq!(b.len(), generate::SEED_COUNT);
}

#[test]
fn torn_last_line_is_skipped_then_terminated_by_next_append() {
    let dir = TempDir::new("torn");
    let path = dir.0.join("students.jsonl");
    let good = generate::student();
    let mut text = serde_json::to_string(&good).unwrap();
    text.push_str("\n{\"id\":\"torn\",\"firstN");
    std::fs::write(&path, &text).unwrap();
    let roster = Roster::open(&path);
    assert_eq!(roster.len(), 1, "only the complete line counts");
    let next = generate::student();
    roster.append(&next).unwrap();
    roster.refresh();
    assert_eq!(roster.len(), 2);
    let content = std::fs::read_to_string(&path).unwrap();
    assert!(content.ends_with('\n'));
    assert_eq!(content.lines().count(), 3, "torn line kept on its own line");
}

#[test]
fn other_writers_appends_are_picked_up() {
    let dir = TempDir::new("grow");
    let path = dir.0.join("students.jsonl");
    let reader = Roster::open(&path);
    let writer = Roster::open(&path);
    let s = generate::student();
    writer.append(&s).unwrap();
    reader.refresh();
    assert_eq!(reader.len(), generate::SEED_COUNT + 1);
    assert!(reader.sample(100).iter().any(|x| x.id == s.id));
}

#[test]
fn memory_roster_refuses_writes() {
    let roster = Roster::in_memory("no disk".into());
    assert_eq!(roster.len(), generate::SEED_COUNT);
    assert!(matches!(
        roster.append(&generate::student()),
        Err(StoreError::Unavailable(_))
    ));
}

#[test]
fn sample_has_exactly_n_and_is_distinct_when_possible() {
    let roster = Roster::in_memory(String::new());
    let s = roster.sample(50);
    let ids: std::collections::HashSet<_> = s.iter().map(|x| &x.id).collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(roster.sample(100).len(), 100);
}

#[test]
fn replicas_starting_together_seed_exactly_once() {
    let dir = TempDir::new("race");
    let path = dir.0.join("students.jsonl");
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Roster::open(&path).len())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), generate::SEED_COUNT);
    }
    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
    assert_eq!(lines, generate::SEED_COUNT);
}
