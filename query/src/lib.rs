//! SQL over Sluice through DataFusion. Owns planning and result encoding;
//! reads data only through the engine's snapshots.

mod ddl;
pub mod error;
mod functions;
mod latest;
pub mod metrics;
pub mod output;
mod scan;
mod stats;
mod system;
mod table;

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use sluice_engine::EngineHandle;

pub use error::QueryError;
pub use output::{Encoder, Format};
pub use system::LiveTable;
pub use table::CATALOG;

pub struct QueryEngine {
    engine: EngineHandle,
    catalog: Arc<table::SluiceCatalog>,
    live: Vec<Arc<dyn LiveTable>>,
    runtime: Arc<RuntimeEnv>,
}

impl QueryEngine {
    pub fn new(engine: EngineHandle) -> Self {
        QueryEngine {
            catalog: Arc::new(table::SluiceCatalog::new(engine.clone(), Vec::new())),
            engine,
            live: Vec::new(),
            runtime: Arc::new(RuntimeEnv::default()),
        }
    }

    /// Adds a table to the `system` schema.
    pub fn with_system_table(mut self, table: Arc<dyn LiveTable>) -> Self {
        self.live.push(table);
        self.catalog = Arc::new(table::SluiceCatalog::new(
            self.engine.clone(),
            self.live.clone(),
        ));
        self
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
            .with_physical_optimizer_rule(Arc::new(stats::StatsAggregateRule))
            .with_analyzer_rule(functions::analyzer_rule())
            .with_query_planner(functions::query_planner())
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_catalog(CATALOG, self.catalog.clone());
        functions::register(&ctx);
        ctx.register_udtf(
            "latest",
            Arc::new(latest::LatestFunction {
                engine: self.engine.clone(),
            }),
        );
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
        metrics::METRICS
            .queries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(stmt) = ddl::parse(db, sql) {
            let stmt = stmt.map_err(QueryError::Settings)?;
            ddl::apply(&self.engine, &stmt)?;
            let batch = arrow::array::RecordBatch::try_from_iter([(
                "result",
                Arc::new(arrow::array::StringArray::from(vec!["ok"])) as arrow::array::ArrayRef,
            )])
            .map_err(|e| QueryError::Execution(e.into()))?;
            let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                batch.schema(),
                futures::stream::iter([Ok(batch)]),
            );
            return Ok(Box::pin(stream));
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
