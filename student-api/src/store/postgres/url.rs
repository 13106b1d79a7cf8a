//! `STUDENT_DATABASE_URL`: a `postgres://` URL checked at start-up, never shown with its
//! password.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::config::SslMode;

use crate::config::mask_password;

/// What a database URL must look like, for error messages.
pub const EXPECTED: &str = "a PostgreSQL URL such as postgres://user:password@host:5432/database \
                            (scheme postgres:// or postgresql://, no TLS)";

/// A checked PostgreSQL connection URL. `Display` and `Debug` mask the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    masked: String,
    config: tokio_postgres::Config,
}

/// Why a database URL was refused. The value it carries is already masked.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?}: {problem}; expected {EXPECTED}")]
pub struct UrlError {
    /// The value as given, password masked.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl DatabaseUrl {
    /// The connection settings the URL describes.
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl FromStr for DatabaseUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let value = s.trim();
        let masked = mask_password(value);
        let refuse = |problem: String| UrlError {
            value: masked.clone(),
            problem,
        };
        let scheme = value.split_once("://").map(|(scheme, _)| scheme);
        if !scheme.is_some_and(|s| s == "postgres" || s == "postgresql") {
            return Err(refuse(
                "the scheme must be postgres:// or postgresql://".into(),
            ));
        }
        let config: tokio_postgres::Config = value
            .parse()
            .map_err(|e| refuse(crate::config::describe(&e)))?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(refuse("it names no host".into()));
        }
        if config.get_user().is_none() {
            // tokio-postgres would fall back to the OS user name, which a scratch image lacks.
            return Err(refuse("it names no user".into()));
        }
        if config.get_ssl_mode() == SslMode::Require {
            return Err(refuse(
                "sslmode=require needs TLS, which student-api is built without".into(),
            ));
        }
        Ok(Self { masked, config })
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.masked)
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `parse_env` for `STUDENT_DATABASE_URL`.
pub fn parse_database_url(s: &str) -> Result<DatabaseUrl, UrlError> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_is_accepted_and_shown_without_its_password() {
        let url: DatabaseUrl = "postgres://lab:s3cret@db.example:5433/lab".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://lab:***@db.example:5433/lab");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.pg_config().get_ports(), &[5433]);
        assert_eq!(url.pg_config().get_dbname(), Some("lab"));
        assert!(
            "postgresql://lab@127.0.0.1/lab"
                .parse::<DatabaseUrl>()
                .is_ok()
        );
    }

    #[test]
    fn a_wrong_scheme_is_refused_with_the_value_masked() {
        let err = "mysql://lab:s3cret@db/lab"
            .parse::<DatabaseUrl>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql://lab:***@db/lab"), "{err}");
        assert!(err.contains("postgres://"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        for bad in ["db:5432", "host=db user=lab password=s3cret", ""] {
            let err = bad.parse::<DatabaseUrl>().unwrap_err().to_string();
            assert!(err.contains("scheme"), "{bad}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn an_unparseable_url_is_refused_with_the_reason() {
        let err = "postgres://lab:s3cret@db:notaport/lab"
            .parse::<DatabaseUrl>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = "postgres:///lab".parse::<DatabaseUrl>().unwrap_err();
        assert!(err.problem.contains("host"), "{err}");
        let err = "postgres://db/lab".parse::<DatabaseUrl>().unwrap_err();
        assert!(err.problem.contains("user"), "{err}");
        let err = "postgres://lab@db/lab?sslmode=require"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(err.problem.contains("TLS"), "{err}");
    }
}
