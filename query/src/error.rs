use datafusion::error::DataFusionError;
use sluice_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("database {0:?} not found")]
    UnknownDatabase(String),
    #[error("table {0} not found")]
    UnknownTable(String),
    #[error("{0}")]
    Settings(String),
    #[error("{0}")]
    Plan(DataFusionError),
    #[error("{0}")]
    Execution(DataFusionError),
    #[error("unknown format {0:?}: use json, jsonl, csv or arrow")]
    Format(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}
