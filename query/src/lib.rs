//! SQL over Sluice through DataFusion. Owns planning and result encoding;
//! reads data only through the engine's snapshots.

pub mod error;
pub mod output;
mod table;

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use sluice_engine::EngineHandle;

pub use error::QueryError;
pub use output::{Encoder, Format};
pub use table::CATALOG;

pub struct QueryEngine {
    engine: EngineHandle,
    catalog: Arc<table::SluiceCatalog>,
    runtime: Arc<RuntimeEnv>,
}

impl QueryEngine {
    pub fn new(engine: EngineHandle) -> Self {
        QueryEngine {
            catalog: Arc::new(table::SluiceCatalog::new(engine.clone())),
            engine,
            runtime: Arc::new(RuntimeEnv::default()),
        }
    }

    fn context(&self, db: Option<&str>) -> SessionContext {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, db.unwrap_or("public"))
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(self.engine.shard_count().max(1));
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_catalog(CATALOG, self.catalog.clone());
        ctx
    }

    /// Plans and starts `sql` against database `db`. Only queries: DDL, DML
    /// and statements that would change session state are refused.
    pub async fn execute(
        &self,
        db: Option<&str>,
        sql: &str,
    ) -> Result<SendableRecordBatchStream, QueryError> {
        if let Some(db) = db {
            if !self.engine.catalog().database_exists(db) {
                return Err(QueryError::UnknownDatabase(db.to_string()));
            }
        }
        let ctx = self.context(db);
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx
            .sql_with_options(sql, opts)
            .await
            .map_err(QueryError::Plan)?;
        df.execute_stream().await.map_err(QueryError::Execution)
    }
}
