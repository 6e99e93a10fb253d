use std::path::PathBuf;

/// Everything that can go wrong inside the engine. Mapped to HTTP status codes
/// by the appliance (the only place that knows about HTTP).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("glommio error: {0}")]
    Runtime(String),
    #[error("raft error: {0}")]
    Raft(#[from] raft::Error),
    #[error(transparent)]
    Log(#[from] sluice_raftlog::LogError),
    #[error("catalog file {path} is corrupt at line {line}: {reason}")]
    CatalogCorrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("column `{column}` of {database}.{table} is {existing}, cannot store {wanted}")]
    TypeConflict {
        database: String,
        table: String,
        column: String,
        existing: String,
        wanted: String,
    },
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("table {database}.{table} would have {wanted} columns; the limit is {limit}")]
    TooManyColumns {
        database: String,
        table: String,
        wanted: usize,
        limit: usize,
    },
    #[error("shard {0} is not running")]
    ShardUnavailable(usize),
    #[error("shard {shard} is not the raft leader; proposal dropped")]
    NotLeader { shard: usize },
    #[error("log entry encoding failed: {0}")]
    Encode(String),
    #[error("log entry at index {index} cannot be decoded: {reason}")]
    Decode { index: u64, reason: String },
    #[error("locked memory limit (RLIMIT_MEMLOCK) is {have} bytes; glommio needs at least {need}: raise it (systemd: LimitMEMLOCK=, shell: ulimit -l) or run with CAP_IPC_LOCK")]
    MemLock { have: u64, need: u64 },
    #[error("chunk file {path} is unreadable: {reason}")]
    ChunkCorrupt { path: PathBuf, reason: String },
    #[error("shard {shard} is over its memory limit ({buffered} bytes buffered); retry shortly")]
    Backpressure { shard: usize, buffered: usize },
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    DiskFull(sluice_raftlog::NoSpace),
    /// The store that keeps the catalog (the relational store) did not take a
    /// change; nothing was changed.
    #[error("catalog store: {0}")]
    CatalogStore(String),
}

impl EngineError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
