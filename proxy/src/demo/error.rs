//! Why the demo could not start or stop cleanly, with what the user can do about it.

use std::path::PathBuf;

use thiserror::Error;

/// A demo failure.
#[derive(Debug, Error)]
pub enum DemoError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; looked in {searched}. \
         Install them (Debian/Ubuntu: `apt-get install -y postgresql`, RHEL/Fedora: \
         `dnf install -y postgresql-server`, macOS: `brew install postgresql`) \
         or set PG_BIN_DIR to the directory that holds initdb"
    )]
    NoPostgres { searched: String },
    #[error("PG_BIN_DIR={0} does not contain initdb, pg_ctl and postgres")]
    BadBinDir(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        source: tokio_postgres::Error,
    },
}

impl DemoError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
        let what = what.into();
        move |source| DemoError::Io { what, source }
    }

    /// A database error with what was being done.
    pub fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DemoError {
        move |source| DemoError::Sql { what, source }
    }
}
