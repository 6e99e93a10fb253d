/// What can go wrong when a caller proves who it is or asks to do something.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No credentials, or credentials that do not check out. The message
    /// never says which part was wrong, so it cannot be used to find users.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {who} may not {what}")]
    Denied { who: String, what: String },
    /// Too many failed logins from the caller's address of late; no
    /// secret was checked.
    #[error("authentication failed: too many failed logins from this address; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    #[error("role {0:?} does not exist")]
    UndefinedRole(String),
    #[error("role {0:?} already exists")]
    DuplicateRole(String),
    #[error("token {0:?} does not exist")]
    UndefinedToken(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the access directory cannot be stored or read: {0}")]
    Store(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl AccessError {
    /// The PostgreSQL SQLSTATE of this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AccessError::Unauthenticated(_) => "28P01",
            AccessError::Throttled { .. } => "28000",
            AccessError::Denied { .. } => "42501",
            AccessError::UndefinedRole(_) | AccessError::UndefinedToken(_) => "42704",
            AccessError::DuplicateRole(_) => "42710",
            AccessError::Invalid(_) => "22023",
            AccessError::Store(_) => "58000",
            AccessError::Hashing(_) => "XX000",
        }
    }
}

pub type Result<T, E = AccessError> = std::result::Result<T, E>;
