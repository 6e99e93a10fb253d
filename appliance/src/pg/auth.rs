//! Who may open a PostgreSQL session. Without a token the port is as open
//! as the HTTP API is; with `http.auth_token` set, a client must prove it
//! knows the token by SCRAM-SHA-256 (the token is its password; the user
//! name is free), so the port is no way around the API's credentials.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

/// RFC 7677's minimum; the work is the client's, once per connection.
const ITERATIONS: usize = 4096;

pub enum Startup {
    Open(Open),
    Token(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

pub struct Open;

impl NoopStartupHandler for Open {}

/// The token's SCRAM secret, derived once: the token itself is not kept.
struct TokenSecret {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

#[async_trait]
impl AuthSource for TokenSecret {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

impl Startup {
    pub fn new(token: Option<&str>) -> Startup {
        let Some(token) = token else {
            return Startup::Open(Open);
        };
        let salt: [u8; 16] = rand::random();
        let secret = TokenSecret {
            salted: gen_salted_password(token, &salt, ITERATIONS),
            salt: salt.to_vec(),
        };
        let mut scram = ScramAuth::new(Arc::new(secret));
        scram.set_iterations(ITERATIONS);
        let mut params = DefaultServerParameterProvider::default();
        params.scram_iterations = ITERATIONS;
        Startup::Token(Box::new(
            SASLAuthStartupHandler::new(Arc::new(params)).with_scram(scram),
        ))
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(h) => h.on_startup(client, message).await,
            Startup::Token(h) => h.on_startup(client, message).await,
        }
    }
}

/// The request code of an SSLRequest, and of a CancelRequest (which never
/// carries data and comes on a connection of its own).
const SSL_REQUEST: u32 = 80_877_103;
const CANCEL_REQUEST: u32 = 80_877_102;

/// Whether the client's first message asks for TLS (or cancels a query),
/// read without taking it from the socket so pgwire sees it as sent.
pub async fn asks_for_tls(socket: &tokio::net::TcpStream) -> bool {
    let mut head = [0u8; 8];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.peek(&mut head)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        // A TLS record straight away: PostgreSQL 17's direct negotiation.
        if head[0] == 0x16 {
            return true;
        }
        if n == head.len() {
            let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            return code == SSL_REQUEST || code == CANCEL_REQUEST;
        }
        // Part of the header is in; peek again once more has come.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Tells a client that did not ask for TLS why it is turned away.
pub async fn refuse_plaintext(mut socket: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let info = pgwire::error::ErrorInfo::new(
        "FATAL".to_string(),
        "28000".to_string(),
        "this server takes only TLS connections: connect with sslmode=require (or verify-full)"
            .to_string(),
    );
    let mut buf = bytes::BytesMut::new();
    if PgWireBackendMessage::ErrorResponse(info.into())
        .encode(&mut buf)
        .is_ok()
    {
        let _ = socket.write_all(&buf).await;
    }
    let _ = socket.shutdown().await;
}
