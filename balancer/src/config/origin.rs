//! Where each configuration value came from (default, file key, env var), to name the culprit.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::FileChoice;

/// Every environment variable the balancer reads.
pub const ENV_VARS: &[&str] = &[
    "BALANCER_CONFIG",
    "BALANCER_LISTEN",
    "BALANCER_ADMIN_LISTEN",
    "BALANCER_ADMIN_TOKEN",
    "BALANCER_ACCESS_LOG",
    "BALANCER_UPSTREAM_HEADER",
    "BALANCER_STICKY_SECRET",
    "BALANCER_WORKERS",
    "BALANCER_DISCOVERY_INTERVAL",
    "STATIC_BACKEND",
    "DYNAMIC_BACKEND",
    "BALANCER_STATIC_ALGORITHM",
    "BALANCER_DYNAMIC_ALGORITHM",
    "BALANCER_STATIC_STICKY",
    "BALANCER_DYNAMIC_STICKY",
    "BALANCER_CONNECT_TIMEOUT",
    "BALANCER_RESPONSE_TIMEOUT",
    "BALANCER_IDLE_TIMEOUT",
    "BALANCER_BACKEND_IDLE_TIMEOUT",
    "BALANCER_MAX_HEADER_BYTES",
    "BALANCER_MAX_BODY",
];

/// What the environment and the file set, captured once per load.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file that was read, if it existed.
    pub file: Option<PathBuf>,
    /// The file's parsed table.
    pub table: Option<toml::Table>,
    /// Env vars seen set (non-empty), by name.
    pub env: BTreeMap<String, String>,
}

impl Origin {
    /// Reads which env vars are set and which keys the file sets.
    pub fn detect(file: Option<&FileChoice>) -> Self {
        let env = ENV_VARS
            .iter()
            .filter_map(|k| {
                std::env::var(k)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| ((*k).to_owned(), v))
            })
            .collect();
        let mut origin = Origin {
            env,
            ..Origin::default()
        };
        if let Some(f) = file.filter(|f| f.path.exists()) {
            origin.file = Some(f.path.clone());
            origin.table = std::fs::read_to_string(&f.path)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok());
        }
        origin
    }

    /// An origin for config built in code from a TOML text (tests).
    pub fn from_toml(path: &str, text: &str) -> Self {
        Origin {
            file: Some(path.into()),
            table: text.parse().ok(),
            env: BTreeMap::new(),
        }
    }

    /// Names the source of a value: its env var if set, else the file key if present, else
    /// `default`.
    pub fn describe(&self, env_var: Option<&str>, key: &[&str]) -> String {
        if let Some(var) = env_var.filter(|v| self.env.contains_key(*v)) {
            return format!("env {var}");
        }
        match &self.file {
            Some(path) if self.file_has(key) => {
                format!("file {} key {}", path.display(), key.join("."))
            }
            _ => "default".to_owned(),
        }
    }

    /// Whether the file sets this dotted key.
    pub fn file_has(&self, key: &[&str]) -> bool {
        let Some(mut cur) = self.table.as_ref() else {
            return false;
        };
        for (i, k) in key.iter().enumerate() {
            match cur.get(*k) {
                Some(toml::Value::Table(t)) if i + 1 < key.len() => cur = t,
                Some(_) if i + 1 == key.len() => return true,
                _ => return false,
            }
        }
        false
    }
}
