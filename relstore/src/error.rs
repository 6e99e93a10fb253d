use sluice_raftlog::LogError;

/// What can go wrong in the relational store. Each variant has one SQLSTATE
/// ([`RelError::sqlstate`]); the binary maps them to HTTP statuses.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelError {
    #[error("could not serialize access due to a concurrent update ({0}); retry the transaction")]
    Conflict(String),
    #[error("duplicate key value violates unique constraint \"{constraint}\": Key ({columns})=({key}) already exists")]
    UniqueViolation {
        constraint: String,
        columns: String,
        key: String,
    },
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNullViolation { table: String, column: String },
    #[error("new row for relation \"{table}\" violates check constraint \"{constraint}\"")]
    CheckViolation { table: String, constraint: String },
    #[error(
        "{action} on table \"{table}\" violates foreign key constraint \"{constraint}\": {detail}"
    )]
    ForeignKeyViolation {
        action: &'static str,
        table: String,
        constraint: String,
        /// `Key (cols)=(values) is not present …`
        detail: String,
    },
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    #[error("column \"{column}\" of relation \"{table}\" does not exist")]
    UndefinedColumn { table: String, column: String },
    #[error("object \"{0}\" does not exist")]
    UndefinedObject(String),
    #[error("{0}")]
    InvalidDefinition(String),
    #[error("{0}")]
    DependentObjects(String),
    #[error("cannot {0} in a read-only transaction")]
    ReadOnly(&'static str),
    #[error("sequence \"{name}\": {reason}")]
    Sequence { name: String, reason: String },
    #[error(
        "deadlock detected: two transactions wait for rows the other holds; retry the transaction"
    )]
    Deadlock,
    #[error("currval of sequence \"{0}\" is not yet defined in this session")]
    CurrvalUndefined(String),
    #[error("a transaction entry of {size} bytes is over the limit of {limit}; split the work into smaller transactions")]
    TooLarge { size: usize, limit: usize },
    #[error("relational store storage: {0}")]
    Storage(String),
    #[error("relational store log: {0}")]
    Log(String),
    #[error("the relational store is not running")]
    Unavailable,
    #[error("{0}")]
    DiskFull(sluice_raftlog::NoSpace),
}

impl RelError {
    /// The PostgreSQL error code clients see.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            RelError::Conflict(_) => "40001",
            RelError::UniqueViolation { .. } => "23505",
            RelError::NotNullViolation { .. } => "23502",
            RelError::CheckViolation { .. } => "23514",
            RelError::ForeignKeyViolation { .. } => "23503",
            RelError::UndefinedTable(_) => "42P01",
            RelError::DuplicateTable(_) => "42P07",
            RelError::UndefinedColumn { .. } => "42703",
            RelError::UndefinedObject(_) => "42704",
            RelError::InvalidDefinition(_) => "42P16",
            RelError::DependentObjects(_) => "2BP01",
            RelError::ReadOnly(_) => "25006",
            RelError::Sequence { .. } => "2200H",
            RelError::CurrvalUndefined(_) => "55000",
            RelError::Deadlock => "40P01",
            RelError::TooLarge { .. } => "54000",
            RelError::Storage(_) => "58030",
            RelError::Log(_) => "58030",
            RelError::Unavailable => "57P03",
            RelError::DiskFull(_) => "53100",
        }
    }
}

impl From<LogError> for RelError {
    fn from(e: LogError) -> Self {
        RelError::Log(e.to_string())
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for RelError {
            fn from(e: $t) -> Self {
                RelError::Storage(e.to_string())
            }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    postcard::Error
);

pub type Result<T, E = RelError> = std::result::Result<T, E>;
