use datafusion::error::DataFusionError;
use sluice_access::AccessError;
use sluice_engine::EngineError;
use sluice_relstore::RelError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("database {0:?} not found")]
    UnknownDatabase(String),
    #[error("table {0} not found")]
    UnknownTable(String),
    #[error("{0}")]
    Settings(String),
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("{}", df_message(.0))]
    Plan(DataFusionError),
    #[error("{}", df_message(.0))]
    Execution(DataFusionError),
    #[error("unknown format {0:?}: use json, jsonl, csv or arrow")]
    Format(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("statement too complex: {0}")]
    TooComplex(String),
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    TransactionAborted,
    #[error("there is no transaction in progress")]
    NoTransaction,
    #[error("schema changes cannot run inside a transaction block; run them on their own")]
    DdlInTransaction,
    #[error("the request ended inside a transaction, which was rolled back; end it with COMMIT")]
    OpenTransaction,
    #[error("statement {index}: {source}")]
    InStatement {
        index: usize,
        source: Box<QueryError>,
    },
    #[error(transparent)]
    Rel(#[from] RelError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Access(#[from] AccessError),
}

impl QueryError {
    /// The error a statement failed with, looking through the statement
    /// number a multi-statement request adds.
    pub fn root(&self) -> &QueryError {
        match self {
            QueryError::InStatement { source, .. } => source.root(),
            other => other,
        }
    }

    /// The PostgreSQL SQLSTATE of this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QueryError::UnknownDatabase(_) => "3D000",
            QueryError::UnknownTable(_) => "42P01",
            QueryError::Settings(_) => "22023",
            QueryError::Syntax(_) => "42601",
            QueryError::Plan(e) | QueryError::Execution(e) => {
                if let Some(r) = rel_error(e) {
                    r.sqlstate()
                } else if let Some(a) = access_error(e) {
                    a.sqlstate()
                } else if matches!(self, QueryError::Plan(_)) {
                    plan_sqlstate(e)
                } else {
                    "XX000"
                }
            }
            QueryError::Format(_) => "22023",
            QueryError::Unsupported(_) => "0A000",
            QueryError::InvalidValue(_) => "22P02",
            QueryError::TooComplex(_) => "54001",
            QueryError::TransactionAborted => "25P02",
            QueryError::NoTransaction => "25P01",
            QueryError::DdlInTransaction => "25001",
            QueryError::OpenTransaction => "25001",
            QueryError::InStatement { source, .. } => source.sqlstate(),
            QueryError::Rel(r) => r.sqlstate(),
            QueryError::Engine(_) => "58000",
            QueryError::Access(a) => a.sqlstate(),
        }
    }
}

/// A relational store error that travelled through DataFusion reads as
/// itself, without DataFusion's wrapping.
fn df_message(e: &DataFusionError) -> String {
    match (rel_error(e), access_error(e)) {
        (Some(r), _) => r.to_string(),
        (None, Some(a)) => a.to_string(),
        (None, None) => e.to_string(),
    }
}

/// A permission error raised inside a plan (by `nextval`, say).
pub fn access_error(e: &DataFusionError) -> Option<&AccessError> {
    match e {
        DataFusionError::External(b) => b.downcast_ref::<AccessError>(),
        DataFusionError::Context(_, inner) => access_error(inner),
        DataFusionError::Shared(inner) => access_error(inner),
        _ => None,
    }
}

/// A relational store error that travelled through DataFusion.
pub fn rel_error(e: &DataFusionError) -> Option<&RelError> {
    match e {
        DataFusionError::External(b) => b.downcast_ref::<RelError>(),
        DataFusionError::Context(_, inner) => rel_error(inner),
        DataFusionError::Shared(inner) => rel_error(inner),
        _ => None,
    }
}

/// DataFusion's planning errors carry no codes; the common ones are told
/// apart by what they say.
fn plan_sqlstate(e: &DataFusionError) -> &'static str {
    let text = e.to_string();
    if text.contains("table '") && text.contains("not found") {
        "42P01"
    } else if text.contains("No field named") || text.contains("Schema error: No field") {
        "42703"
    } else if text.contains("SQL error") || text.contains("ParserError") {
        "42601"
    } else {
        "42000"
    }
}
