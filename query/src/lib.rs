//! SQL over Sluice through DataFusion. Owns planning and result encoding;
//! reads data only through the engine's snapshots.

mod access;
mod ddl;
pub mod error;
mod functions;
mod latest;
pub mod metrics;
pub mod output;
pub mod overview;
mod rel;
mod scan;
pub mod session;
mod stats;
mod system;
mod table;

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use sluice_engine::EngineHandle;

pub use access::parse_time_ms;
pub use error::QueryError;
pub use output::{Encoder, Format};
pub use session::{Outcome, Session};
pub use system::LiveTable;
pub use table::CATALOG;

pub struct QueryEngine {
    engine: EngineHandle,
    /// Functions, rules and settings every statement starts from; building
    /// them is most of what a fresh context costs, so it is done once.
    base: datafusion::execution::SessionState,
    catalog: Arc<table::SluiceCatalog>,
    live: Vec<Arc<dyn LiveTable>>,
    rel: Option<sluice_relstore::RelHandle>,
    access: Option<Arc<sluice_access::Access>>,
}

/// The state every statement's context is cloned from.
fn base_state(
    engine: &EngineHandle,
    runtime: Arc<RuntimeEnv>,
) -> datafusion::execution::SessionState {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, "public")
        .with_create_default_catalog_and_schema(false)
        .with_target_partitions(engine.shard_count().max(1));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(stats::StatsAggregateRule))
        .with_analyzer_rule(functions::analyzer_rule())
        .with_query_planner(functions::query_planner())
        .build();
    let ctx = SessionContext::new_with_state(state);
    functions::register(&ctx);
    ctx.register_udtf(
        "latest",
        Arc::new(latest::LatestFunction {
            engine: engine.clone(),
        }),
    );
    ctx.state()
}

impl QueryEngine {
    pub fn new(engine: EngineHandle) -> Self {
        let runtime = Arc::new(RuntimeEnv::default());
        QueryEngine {
            catalog: Arc::new(table::SluiceCatalog::new(engine.clone(), Vec::new())),
            base: base_state(&engine, runtime),
            engine,
            live: Vec::new(),
            rel: None,
            access: None,
        }
    }

    /// Serves relational tables (and transactions) from `rel`.
    pub fn with_relstore(mut self, rel: sluice_relstore::RelHandle) -> Self {
        self.rel = Some(rel);
        self
    }

    /// Runs the SQL of users and roles against `access`, and serves its
    /// `system` tables.
    pub fn with_access(self, access: Arc<sluice_access::Access>) -> Self {
        let mut me = self
            .with_system_table(Arc::new(access::RolesTable(access.clone())))
            .with_system_table(Arc::new(access::GrantsTable(access.clone())))
            .with_system_table(Arc::new(access::TokensTable(access.clone())));
        me.access = Some(access);
        me
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

    fn context_with(
        &self,
        db: Option<&str>,
        binding: Option<Arc<rel::RelBinding>>,
    ) -> SessionContext {
        let mut state = self.base.clone();
        state.config_mut().options_mut().catalog.default_schema =
            db.unwrap_or("public").to_string();
        // The catalog is bound to this statement's transaction, so each
        // statement gets a list of its own.
        state.register_catalog_list(Arc::new(
            datafusion::catalog::MemoryCatalogProviderList::new(),
        ));
        let ctx = SessionContext::new_with_state(state);
        if let Some(b) = &binding {
            rel::seqfn::register(
                &ctx,
                &b.handle,
                db.unwrap_or("public"),
                &b.currvals,
                &b.principal,
            );
        }
        let catalog = Arc::new(self.catalog.for_statement(binding));
        ctx.register_catalog(CATALOG, catalog);
        ctx
    }

    /// Runs `sql` (one or more statements, as one session) against
    /// database `db` and answers the last statement's result. A
    /// transaction the statements leave open is rolled back, and that is an
    /// error: over HTTP a transaction lives within one request.
    /// `principal` is who runs it (None: authentication is off).
    pub async fn execute(
        &self,
        db: Option<&str>,
        principal: Option<Arc<sluice_access::Principal>>,
        sql: &str,
    ) -> Result<SendableRecordBatchStream, QueryError> {
        metrics::METRICS
            .queries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut session = Session::new(db);
        session.principal = principal;
        let mut outcomes = self.run(&mut session, sql).await?;
        if session.in_transaction() {
            session.rollback();
            return Err(QueryError::OpenTransaction);
        }
        match outcomes.pop() {
            Some(o) => o.into_stream(),
            None => Err(QueryError::Syntax("no statement".into())),
        }
    }

    /// Whether `name` is a database (time-series) or a schema of
    /// relational tables.
    pub fn schema_exists(&self, name: &str) -> bool {
        self.engine.catalog().database_exists(name)
            || name == "public"
            || self
                .rel
                .as_ref()
                .is_some_and(|r| r.catalog().schemas().iter().any(|s| s == name))
    }

    /// Runs a read in `binding`'s transaction and collects it.
    pub(crate) async fn collect_in(
        &self,
        db: Option<&str>,
        binding: Arc<rel::RelBinding>,
        sql: &str,
    ) -> Result<Vec<arrow::array::RecordBatch>, QueryError> {
        let mut stmt = match session::parse(sql)?.pop() {
            Some(st) => st,
            None => return Err(QueryError::Syntax("no statement".into())),
        };
        rel::view::expand(&mut stmt, &binding.catalog(), db.unwrap_or("public"))?;
        let binding_principal = binding.principal.clone();
        let ctx = self.context_with(db, Some(binding));
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                stmt,
            )))
            .await
            .map_err(QueryError::Plan)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(QueryError::Plan)?;
        if let Some(p) = &binding_principal {
            access::check_plan(p, &plan, db.unwrap_or("public"))?;
        }
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(QueryError::Plan)?;
        df.collect().await.map_err(QueryError::Execution)
    }
}
