use std::path::PathBuf;

/// What can go wrong in a raft group's durable log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("raft error: {0}")]
    Raft(#[from] raft::Error),
    #[error("log record encoding failed: {0}")]
    Encode(String),
    #[error("log entry at index {index} cannot be decoded: {reason}")]
    Decode { index: u64, reason: String },
    #[error("raft snapshot received, but snapshots are not supported yet")]
    SnapshotUnsupported,
}

impl LogError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
