use sluice_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown precision {0:?}: use ns, u, us, ms, s, m or h")]
    Precision(String),
    #[error("invalid database: {0}")]
    Database(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}
