//! Where each configuration value came from (default, file key, env var), to name the culprit.

use std::collections::BTreeMap;
use std::path::PathBuf;

use confique::Config;
use confique::meta::{FieldKind, Meta};

use super::error::{self, Problem, Source};
use super::{CONFIG_ENV, ConfigError, RawConfig};

/// The env var that sets the config field at file key `key`, read from `RawConfig::META`: the
/// `#[config(env = ...)]` attribute is the one place a variable's name is written.
pub(crate) fn env_var(key: &[&str]) -> Option<&'static str> {
    fn find(meta: &'static Meta, key: &[&str]) -> Option<&'static str> {
        let (first, rest) = key.split_first()?;
        let field = meta.fields.iter().find(|f| f.name == *first)?;
        match (field.kind, rest.is_empty()) {
            (FieldKind::Leaf { env, .. }, true) => env,
            (FieldKind::Nested { meta }, false) => find(meta, rest),
            _ => None,
        }
    }
    find(&RawConfig::META, key)
}

/// What the environment and the file set, captured once per load.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file that was read, if it existed.
    pub file: Option<PathBuf>,
    /// The file's parsed table.
    pub(crate) table: Option<toml::Table>,
    /// Env vars seen set (non-empty), by name.
    pub(crate) env: BTreeMap<String, String>,
}

impl Origin {
    /// The variables the balancer reads (its config's, and `BALANCER_CONFIG`) that are set.
    pub(crate) fn from_env() -> Self {
        let env = error::env_vars::<RawConfig>()
            .into_iter()
            .chain([CONFIG_ENV])
            .filter_map(|k| {
                std::env::var(k)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| (k.to_owned(), v))
            })
            .collect();
        Origin {
            env,
            ..Origin::default()
        }
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
    /// `default`. `env` names a variable other than the key's own (which is found in the
    /// config's metadata), as `STATIC_BACKEND` sets `pools.static.members`.
    pub(crate) fn describe(&self, env: Option<&str>, key: &[&str]) -> String {
        let env = env.or_else(|| env_var(key));
        if let Some(var) = env.filter(|v| self.env.contains_key(*v)) {
            return format!("env {var}");
        }
        match &self.file {
            Some(path) if self.file_has(key) => {
                format!("file {} key {}", path.display(), key.join("."))
            }
            _ => "default".to_owned(),
        }
    }

    /// A refused value of `key`: named by its env var if that set it, else by its file key,
    /// else as a default. `env` is as in [`Origin::describe`].
    pub(crate) fn invalid(
        &self,
        env: Option<&str>,
        key: &[&str],
        value: &str,
        expected: impl Into<String>,
    ) -> ConfigError {
        self.invalid_named(key.join("."), env, key, value, expected)
    }

    /// [`Origin::invalid`] for a value shown under another `name` than its file `key`
    /// (`routes[2].pool`, within `routes`).
    pub(crate) fn invalid_named(
        &self,
        name: String,
        env: Option<&str>,
        key: &[&str],
        value: &str,
        expected: impl Into<String>,
    ) -> ConfigError {
        let env = env.or_else(|| env_var(key));
        let quoted = (!value.is_empty()).then(|| error::shown(&name, value));
        let (origin, value) = match (env.and_then(|v| self.env.get_key_value(v)), &self.file) {
            (Some((var, set)), _) => (Source::Env(var.clone()), Some(error::shown(var, set))),
            (None, Some(path)) if self.file_has(key) => {
                let written = self
                    .file_value(key)
                    .filter(|v| !v.is_table() && name == key.join("."))
                    .map(ToString::to_string);
                let source = Source::File {
                    path: path.clone(),
                    key: name,
                    line: None,
                };
                (source, written.or(quoted))
            }
            _ => (Source::Default(name), quoted),
        };
        Problem::invalid(origin, value, expected).into()
    }

    fn file_value(&self, key: &[&str]) -> Option<&toml::Value> {
        let (last, path) = key.split_last()?;
        let mut cur = self.table.as_ref()?;
        for k in path {
            cur = cur.get(*k)?.as_table()?;
        }
        cur.get(*last)
    }

    /// Whether the file sets this dotted key.
    pub(crate) fn file_has(&self, key: &[&str]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::env_var;

    #[test]
    fn env_vars_come_from_the_config_metadata() {
        assert_eq!(env_var(&["listen"]), Some("BALANCER_LISTEN"));
        assert_eq!(
            env_var(&["limits", "max_header_bytes"]),
            Some("BALANCER_MAX_HEADER_BYTES")
        );
        assert_eq!(env_var(&["static_backend"]), Some("STATIC_BACKEND"));
        assert_eq!(env_var(&["limits"]), None, "a table has no variable");
        assert_eq!(env_var(&["pools", "static", "members"]), None);
        assert_eq!(env_var(&["routes"]), None);
    }
}
