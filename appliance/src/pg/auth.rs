//! Who may open a PostgreSQL session. With authentication off the port is
//! as open as the HTTP API is. With it on, a client proves its password by
//! SCRAM-SHA-256 against the verifier the access directory keeps for the
//! user it names; the shared `http.auth_token`, if set, is also accepted as
//! the password of any name that is not a role, so the port is no way
//! around the API's credentials.

use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth, ScramSecret};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sluice_access::{Access, Principal, SCRAM_ITERATIONS};

/// Which secret a connection's exchange was checked against, decided when
/// the client named its user.
#[derive(Debug, Clone)]
pub enum Chosen {
    Role(String),
    Root,
}

/// What every connection's startup shares.
pub struct Gate {
    pub access: Arc<Access>,
    pub auth_on: bool,
    /// The shared token's SCRAM secret, derived once: the token is not kept.
    root: Option<(Vec<u8>, Vec<u8>)>,
}

impl Gate {
    pub fn new(access: Arc<Access>, auth_on: bool, token: Option<&str>) -> Gate {
        let root = token.map(|t| {
            let salt: [u8; 16] = rand::random();
            (
                salt.to_vec(),
                gen_salted_password(t, &salt, SCRAM_ITERATIONS as usize),
            )
        });
        Gate {
            access,
            auth_on,
            root,
        }
    }

    /// Who a connection acts as, now: None when authentication is off.
    pub fn principal(&self, chosen: &OnceLock<Chosen>, user: &str) -> Option<Arc<Principal>> {
        if !self.auth_on {
            return None;
        }
        Some(Arc::new(match chosen.get() {
            Some(Chosen::Root) => Principal::root(),
            // A role dropped since it logged in may do nothing more.
            Some(Chosen::Role(name)) => self
                .access
                .principal(name)
                .unwrap_or_else(|_| Principal::nobody(name)),
            None => Principal::nobody(user),
        }))
    }
}

pub enum Startup {
    Open(Open),
    Scram(
        Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
        Arc<Gate>,
    ),
}

pub struct Open;

impl NoopStartupHandler for Open {}

/// The secrets one connection's exchange may be checked against.
struct Source {
    gate: Arc<Gate>,
    chosen: Arc<OnceLock<Chosen>>,
}

impl Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source(<redacted>)")
    }
}

#[async_trait]
impl AuthSource for Source {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::ApiError(
            "only SCRAM-SHA-256 is offered".into(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        if let Some(v) = self.gate.access.scram_verifier(user) {
            let _ = self.chosen.set(Chosen::Role(user.to_string()));
            return Ok((verifier(v), None));
        }
        if let Some((salt, salted)) = &self.gate.root {
            if !self.gate.access.directory().roles.contains_key(user) {
                let _ = self.chosen.set(Chosen::Root);
                return Ok((
                    ScramSecret::SaltedPassword {
                        salt: salt.clone(),
                        salted_password: salted.clone(),
                    },
                    None,
                ));
            }
        }
        // No such user (or one that may not log in): an exchange that fails
        // where a wrong password would.
        Ok((verifier(self.gate.access.mock_verifier(user)), None))
    }
}

fn verifier(v: sluice_access::ScramVerifier) -> ScramSecret {
    ScramSecret::Verifier {
        salt: v.salt,
        iterations: v.iterations as usize,
        stored_key: v.stored_key,
        server_key: v.server_key,
    }
}

impl Startup {
    /// The startup of one connection; what it decides lands in `chosen`.
    pub fn new(gate: &Arc<Gate>, chosen: Arc<OnceLock<Chosen>>) -> Startup {
        if !gate.auth_on {
            return Startup::Open(Open);
        }
        let source = Source {
            gate: gate.clone(),
            chosen,
        };
        let mut scram = ScramAuth::new(Arc::new(source));
        scram.set_iterations(SCRAM_ITERATIONS as usize);
        let mut params = DefaultServerParameterProvider::default();
        params.scram_iterations = SCRAM_ITERATIONS as usize;
        Startup::Scram(
            Box::new(SASLAuthStartupHandler::new(Arc::new(params)).with_scram(scram)),
            gate.clone(),
        )
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
            Startup::Scram(h, gate) => {
                // Failed exchanges count against the client's address, and an
                // address past its limit is turned away before one begins.
                let peer = Some(client.socket_addr().ip());
                let throttle = gate.access.throttle();
                let answer = matches!(message, PgWireFrontendMessage::PasswordMessageFamily(_));
                if matches!(message, PgWireFrontendMessage::Startup(_)) {
                    if let Err(e) = throttle.check(peer) {
                        return Err(fatal(&e.to_string(), e.sqlstate()));
                    }
                }
                let r = h.on_startup(client, message).await;
                if answer && r.is_err() {
                    throttle.failed(peer);
                }
                r
            }
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
pub async fn refuse_plaintext(socket: tokio::net::TcpStream) {
    refuse(
        socket,
        "28000",
        "this server takes only TLS connections: connect with sslmode=require (or verify-full)",
    )
    .await
}

/// Turns away a client the connection limits leave no room for, the way
/// PostgreSQL does: through the TLS negotiation first (libpq asks for TLS
/// before anything else and would report only that the negotiation failed),
/// then after the startup message, with FATAL 53300.
pub async fn refuse_busy(
    mut socket: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    use tokio::io::AsyncWriteExt;
    const MESSAGE: &str = "sorry, too many clients already";
    let deadline = std::time::Duration::from_secs(2);
    let first = tokio::time::timeout(deadline, read_packet(&mut socket)).await;
    let Ok(Some(code)) = first else { return };
    if code != SSL_REQUEST {
        return refuse(socket, "53300", MESSAGE).await;
    }
    match acceptor {
        Some(a) => {
            if socket.write_all(b"S").await.is_err() {
                return;
            }
            let Ok(Ok(mut tls)) = tokio::time::timeout(deadline, a.accept(socket)).await else {
                return;
            };
            if let Ok(Some(_)) = tokio::time::timeout(deadline, read_packet(&mut tls)).await {
                refuse(tls, "53300", MESSAGE).await;
            }
        }
        None => {
            if socket.write_all(b"N").await.is_err() {
                return;
            }
            if let Ok(Some(_)) = tokio::time::timeout(deadline, read_packet(&mut socket)).await {
                refuse(socket, "53300", MESSAGE).await;
            }
        }
    }
}

/// Reads one length-prefixed startup-phase packet and answers its request
/// code (the four bytes after the length); None if it is malformed.
async fn read_packet<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<u32> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    // A startup message is small; anything larger is not one.
    if !(8..=10_000).contains(&len) {
        return None;
    }
    let mut rest = vec![0u8; len - 8];
    s.read_exact(&mut rest).await.ok()?;
    Some(u32::from_be_bytes([head[4], head[5], head[6], head[7]]))
}

/// A FATAL error, which ends the connection once pgwire has sent it.
fn fatal(message: &str, code: &str) -> PgWireError {
    PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.to_string(),
    )))
}

/// Answers a FATAL error during the startup exchange and closes.
pub async fn refuse<S>(mut socket: S, code: &str, message: &str)
where
    S: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let info =
        pgwire::error::ErrorInfo::new("FATAL".to_string(), code.to_string(), message.to_string());
    let mut buf = bytes::BytesMut::new();
    if PgWireBackendMessage::ErrorResponse(info.into())
        .encode(&mut buf)
        .is_ok()
    {
        let _ = socket.write_all(&buf).await;
    }
    let _ = socket.shutdown().await;
}
