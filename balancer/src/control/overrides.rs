//! Run-time algorithm choices (`PUT /api/pools/{pool}/algorithm`): which pools run another
//! algorithm than their file says, and what a reload does to that. Pure.
//!
//! The rule, the same as for a run-time weight: a reload that leaves the pool's algorithm in
//! the file as it was keeps the run-time choice; a reload that changes it (or removes the
//! pool) drops the choice, and the file's new value applies. Either way the reload says so in
//! the events, so a choice is never silently lost nor silently kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Settings, StickyMode};
use crate::select::Algorithm;

/// A pool's run-time algorithm and the file's value it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AlgorithmOverride {
    /// In use.
    pub runtime: Algorithm,
    /// What the file says.
    pub file: Algorithm,
}

/// Why a run-time algorithm was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// No such pool.
    #[error("no pool named `{0}`")]
    NoSuchPool(String),
    /// `sticky = "ip-hash"` fixes the algorithm.
    #[error("pool `{0}` is sticky by ip-hash, which fixes its algorithm to ip-hash")]
    FixedBySticky(String),
    /// header-hash without `hash_header`.
    #[error("header-hash needs the pool's `hash_header`, which pool `{0}` does not set")]
    NoHashHeader(String),
}

/// The run-time choices in force, by pool name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides(BTreeMap<Arc<str>, AlgorithmOverride>);

impl Overrides {
    /// Sets pool `pool`'s algorithm (`None` or the file's value: back to the file). Returns the
    /// algorithm now in use.
    pub fn set(
        &mut self,
        file: &Settings,
        pool: &str,
        algorithm: Option<Algorithm>,
    ) -> Result<Algorithm, OverrideError> {
        let Some(ps) = file.pools.iter().find(|p| &*p.name == pool) else {
            return Err(OverrideError::NoSuchPool(pool.to_owned()));
        };
        let want = algorithm.unwrap_or(ps.algorithm);
        if want == ps.algorithm {
            self.0.remove(pool);
            return Ok(want);
        }
        if ps.sticky == StickyMode::IpHash {
            return Err(OverrideError::FixedBySticky(pool.to_owned()));
        }
        if want == Algorithm::HeaderHash && ps.hash_header.is_none() {
            return Err(OverrideError::NoHashHeader(pool.to_owned()));
        }
        self.0.insert(
            Arc::clone(&ps.name),
            AlgorithmOverride {
                runtime: want,
                file: ps.algorithm,
            },
        );
        Ok(want)
    }

    /// The settings to run on: the file's with the run-time algorithms in place.
    pub fn apply(&self, file: &Arc<Settings>) -> Arc<Settings> {
        if self.0.is_empty() {
            return Arc::clone(file);
        }
        let mut s = Settings::clone(file);
        for p in &mut s.pools {
            if let Some(o) = self.0.get(&p.name) {
                p.algorithm = o.runtime;
            }
        }
        Arc::new(s)
    }

    /// After a reload to `next`: keeps the choices whose pool's file value did not change,
    /// drops the rest. Returns one line per choice, for the events, saying which.
    pub fn reconcile(&mut self, next: &Settings) -> Vec<(Arc<str>, String)> {
        let mut said = Vec::new();
        self.0.retain(|name, o| {
            let now = next.pools.iter().find(|p| p.name == *name);
            let keep = now.is_some_and(|p| {
                p.algorithm == o.file
                    && p.sticky != StickyMode::IpHash
                    && (o.runtime != Algorithm::HeaderHash || p.hash_header.is_some())
            });
            let msg = match (keep, now) {
                (true, _) => format!(
                    "run-time algorithm {} kept: the file still says {}",
                    o.runtime, o.file
                ),
                (false, Some(p)) => format!(
                    "run-time algorithm {} dropped: the file now says {}",
                    o.runtime, p.algorithm
                ),
                (false, None) => format!("run-time algorithm {} dropped with its pool", o.runtime),
            };
            said.push((Arc::clone(name), msg));
            keep
        });
        said
    }

    /// The choices in force.
    pub fn get(&self, pool: &str) -> Option<AlgorithmOverride> {
        self.0.get(pool).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, from_toml_str};

    fn settings(extra: &str) -> Settings {
        let toml = format!("[pools.api]\nmembers = [\"127.0.0.1:1\"]\n{extra}");
        Settings::build(&from_toml_str(&toml).unwrap(), &Origin::default()).unwrap()
    }

    #[test]
    fn a_choice_applies_until_set_back_to_the_files_value() {
        let file = Arc::new(settings(""));
        let mut o = Overrides::default();
        assert_eq!(
            o.set(&file, "api", Some(Algorithm::LeastConnections)),
            Ok(Algorithm::LeastConnections)
        );
        let run = o.apply(&file);
        let api = run.pools.iter().find(|p| &*p.name == "api").unwrap();
        assert_eq!(api.algorithm, Algorithm::LeastConnections);
        assert_eq!(o.get("api").unwrap().file, Algorithm::RoundRobin);
        assert_eq!(o.set(&file, "api", None), Ok(Algorithm::RoundRobin));
        assert!(
            Arc::ptr_eq(&o.apply(&file), &file),
            "no choice: the file's settings"
        );
        assert_eq!(
            o.set(&file, "nope", None),
            Err(OverrideError::NoSuchPool("nope".into()))
        );
    }

    #[test]
    fn choices_the_pool_cannot_run_are_refused() {
        let mut o = Overrides::default();
        let sticky = settings("sticky = \"ip-hash\"\n");
        assert!(matches!(
            o.set(&sticky, "api", Some(Algorithm::Random)),
            Err(OverrideError::FixedBySticky(_))
        ));
        assert!(matches!(
            o.set(&settings(""), "api", Some(Algorithm::HeaderHash)),
            Err(OverrideError::NoHashHeader(_))
        ));
    }

    #[test]
    fn a_reload_keeps_a_choice_unless_it_changed_the_files_value() {
        let file = settings("");
        let mut o = Overrides::default();
        o.set(&file, "api", Some(Algorithm::P2c)).unwrap();
        let said = o.reconcile(&settings("retries = 2\n"));
        assert!(said[0].1.contains("kept"), "{said:?}");
        assert!(o.get("api").is_some());
        let said = o.reconcile(&settings("algorithm = \"random\"\n"));
        assert!(
            said[0].1.contains("dropped: the file now says random"),
            "{said:?}"
        );
        assert!(o.get("api").is_none());
    }
}
