//! The one error type of the engine. Every variant says what went wrong and where; the Python
//! bindings map each kind onto a class of the `CoreMLCompressError` hierarchy.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a file operation.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A package, its manifest, its model file or its weights are malformed.
    #[error("{0}")]
    Format(String),
    /// A well-formed model this project does not handle (e.g. a NeuralNetwork model).
    #[error("{0}")]
    Unsupported(String),
    /// A compression configuration that is invalid, or invalid for this model.
    #[error("{0}")]
    Config(String),
    /// An output path that would destroy an input or something that is not a package.
    #[error("{0}")]
    Output(String),
    /// The caller stopped the work through its progress report (Ctrl-C in Python).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Says where a malformed value was met: `where_: message`, unless the message already
    /// begins with it (errors made with the context at hand).
    pub fn within(self, where_: &str) -> Self {
        match self {
            Error::Format(m) if !m.starts_with(where_) => Error::Format(format!("{where_}: {m}")),
            other => other,
        }
    }
}

/// `format_err!("...")` builds an [`Error::Format`] from a format string.
#[macro_export]
macro_rules! format_err {
    ($($arg:tt)*) => { $crate::error::Error::Format(format!($($arg)*)) };
}

/// `unsupported!("...")` builds an [`Error::Unsupported`] from a format string.
#[macro_export]
macro_rules! unsupported {
    ($($arg:tt)*) => { $crate::error::Error::Unsupported(format!($($arg)*)) };
}

/// `config_err!("...")` builds an [`Error::Config`] from a format string.
#[macro_export]
macro_rules! config_err {
    ($($arg:tt)*) => { $crate::error::Error::Config(format!($($arg)*)) };
}
