//! The PostgreSQL wire protocol (pgwire), so psql, pgbench, psycopg, JDBC
//! and Grafana's PostgreSQL data source reach both engines. Each
//! connection is one `Session`: its transaction, and the database (SQL
//! schema) named at startup. Statements are answered as PostgreSQL does:
//! the first failing statement of a simple query ends it, and the
//! transaction status byte follows BEGIN, COMMIT and ROLLBACK.

pub mod auth;
mod encode;
mod params;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::sql::sqlparser::ast::Statement;
use futures::Sink;
use pgwire::api::auth::StartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult, SEVERITY_ERROR};
use pgwire::messages::PgWireBackendMessage;
use sluice_query::session::BlockEffect;
use sluice_query::{Outcome, QueryEngine, QueryError, Session};
use tokio::sync::Mutex;

/// Clients told at once that there is no room; more are just closed.
const REFUSALS_AT_ONCE: usize = 64;

/// Connections the PostgreSQL port holds and has turned away.
pub static CONNECTIONS: crate::conn_limits::Connections = crate::conn_limits::Connections::new();

/// One client connection's handlers and session.
pub struct Connection {
    query: Arc<QueryEngine>,
    gate: Arc<auth::Gate>,
    chosen: Arc<std::sync::OnceLock<auth::Chosen>>,
    session: Mutex<Option<Session>>,
    parser: Arc<NoopQueryParser>,
}

fn error_info(e: &QueryError) -> ErrorInfo {
    ErrorInfo::new(
        SEVERITY_ERROR.to_string(),
        e.sqlstate().to_string(),
        e.to_string(),
    )
}

fn user_error(e: &QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

/// How a statement's answer changes the transaction status clients track.
fn command_response(effect: BlockEffect, tag: String) -> Response {
    match effect {
        BlockEffect::Begin => Response::TransactionStart(Tag::new(&tag)),
        BlockEffect::End => Response::TransactionEnd(Tag::new(&tag)),
        BlockEffect::None => Response::Execution(Tag::new(&tag)),
    }
}

impl Connection {
    async fn session<'a, C: ClientInfo>(
        &'a self,
        client: &C,
    ) -> tokio::sync::MutexGuard<'a, Option<Session>> {
        let mut guard = self.session.lock().await;
        if guard.is_none() {
            let db = client
                .metadata()
                .get("database")
                .cloned()
                .filter(|d| !d.is_empty());
            *guard = Some(Session::new(db.as_deref()));
        }
        // Grants are read at each statement, as PostgreSQL checks them.
        if let Some(s) = guard.as_mut() {
            let user = client.metadata().get("user").cloned().unwrap_or_default();
            s.principal = self.gate.principal(&self.chosen, &user);
        }
        guard
    }

    /// Runs one parsed statement and turns its outcome into a response.
    async fn respond(
        &self,
        session: &mut Session,
        stmt: Statement,
        format: &Format,
    ) -> Result<Response, QueryError> {
        let effect = BlockEffect::of(&stmt);
        let outcome = self.query.run_statement(session, stmt).await?;
        self.response(effect, outcome, format).await
    }

    async fn response(
        &self,
        effect: BlockEffect,
        outcome: Outcome,
        format: &Format,
    ) -> Result<Response, QueryError> {
        match outcome {
            Outcome::Command(tag) => Ok(command_response(effect, tag)),
            Outcome::Rows(stream) => {
                let schema = stream.schema();
                let batches: Vec<_> = futures::TryStreamExt::try_collect(stream)
                    .await
                    .map_err(QueryError::Execution)?;
                let fields = Arc::new(encode::fields(&schema, format));
                let rows = encode::rows(&batches, fields.clone())
                    .map_err(|e| QueryError::InvalidValue(e.to_string()))?;
                Ok(Response::Query(QueryResponse::new(
                    fields,
                    futures::stream::iter(rows.into_iter().map(Ok)),
                )))
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut guard = self.session(client).await;
        let Some(session) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let (done, res) = self.query.run_each(session, query).await;
        let mut out = Vec::with_capacity(done.len() + 1);
        for (effect, outcome) in done {
            match self.response(effect, outcome, &Format::UnifiedText).await {
                Ok(r) => out.push(r),
                Err(e) => {
                    out.push(Response::Error(Box::new(error_info(&e))));
                    return Ok(out);
                }
            }
        }
        // Like PostgreSQL, the first error ends the query string.
        if let Err(e) = res {
            out.push(Response::Error(Box::new(error_info(&e))));
        }
        if out.is_empty() {
            out.push(Response::EmptyQuery);
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let Some(stmt) = params::bind(portal).map_err(|e| user_error(&e))? else {
            return Ok(Response::EmptyQuery);
        };
        let mut guard = self.session(client).await;
        let Some(session) = guard.as_mut() else {
            return Ok(Response::EmptyQuery);
        };
        self.respond(session, stmt, &portal.result_column_format)
            .await
            .map_err(|e| user_error(&e))
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        stmt: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let (parsed, count) = params::with_nulls(&stmt.statement).map_err(|e| user_error(&e))?;
        let types: Vec<Type> = (0..count)
            .map(|i| {
                stmt.parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let fields = match parsed {
            Some(p) => self.describe(client, &p, &Format::UnifiedText).await?,
            None => Vec::new(),
        };
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let fields = match params::bind(portal).map_err(|e| user_error(&e))? {
            Some(stmt) => {
                self.describe(client, &stmt, &portal.result_column_format)
                    .await?
            }
            None => Vec::new(),
        };
        Ok(DescribePortalResponse::new(fields))
    }
}

impl Connection {
    async fn describe<C: ClientInfo>(
        &self,
        client: &C,
        stmt: &Statement,
        format: &Format,
    ) -> PgWireResult<Vec<pgwire::api::results::FieldInfo>> {
        let guard = self.session(client).await;
        let Some(session) = guard.as_ref() else {
            return Ok(Vec::new());
        };
        match self.query.describe(session, stmt).await {
            Ok(Some(schema)) => Ok(encode::fields(&schema, format)),
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(user_error(&e)),
        }
    }
}

struct Handlers {
    conn: Arc<Connection>,
    startup: Arc<auth::Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.conn.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.conn.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

/// Serves the PostgreSQL protocol on `listener` until the task is dropped;
/// with authentication on, only to clients that prove who they are.
pub async fn serve(
    listener: tokio::net::TcpListener,
    query: Arc<QueryEngine>,
    gate: Arc<auth::Gate>,
    tls: Option<Arc<crate::tls::Tls>>,
    allow_plaintext: bool,
    limiter: crate::conn_limits::Limiter,
) {
    let parser = Arc::new(NoopQueryParser::new());
    let refusing = Arc::new(tokio::sync::Semaphore::new(REFUSALS_AT_ONCE));
    loop {
        let (socket, peer): (tokio::net::TcpStream, SocketAddr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or similar: wait rather than spin.
                tracing::warn!(error = %e, "accepting a PostgreSQL connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limiter.take(peer.ip(), "PostgreSQL") else {
            // Told why, as PostgreSQL tells, so clients and poolers back off;
            // but a flood is only dropped: the telling holds sockets too.
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                let acceptor = tls.as_ref().map(|t| t.acceptor());
                tokio::spawn(async move {
                    auth::refuse_busy(socket, acceptor).await;
                    drop(permit);
                });
            }
            continue;
        };
        let chosen = Arc::new(std::sync::OnceLock::new());
        let handlers = Handlers {
            conn: Arc::new(Connection {
                query: query.clone(),
                gate: gate.clone(),
                chosen: chosen.clone(),
                session: Mutex::new(None),
                parser: parser.clone(),
            }),
            startup: Arc::new(auth::Startup::new(&gate, chosen)),
        };
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let _slot = slot;
            if acceptor.is_some() && !allow_plaintext && !auth::asks_for_tls(&socket).await {
                auth::refuse_plaintext(socket).await;
                return;
            }
            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                tracing::debug!(%peer, error = %e, "PostgreSQL connection ended");
            }
        });
    }
}
