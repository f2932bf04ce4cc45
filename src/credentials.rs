//! Credentials that rotate: a password asked for at each new connection.
//!
//! Cloud databases hand out short-lived passwords (IAM authentication tokens
//! live about an hour), and secret managers rotate static ones. A
//! [`CredentialSource`] set with
//! [`PostgresOptions::password_source`](crate::PostgresOptions::password_source)
//! is asked for the password every time the store opens a connection: each
//! pooled connection, the migration connection, and the LISTEN connection
//! and its reconnects. Connections already open are not touched: PostgreSQL
//! checks a password only when a session starts.
//!
//! A connection attempt the server refuses for its credentials (SQLSTATE
//! `28000` or `28P01`) while a source is set is repeated with backoff, asking
//! the source again each time, until
//! [`PostgresOptions::credential_retry_budget`](crate::PostgresOptions::credential_retry_budget)
//! runs out: a rotation may reach the database before it reaches the source.
//! Then, and on any other connection failure, a [`ConnectError`] says where
//! the store tried to connect, as whom, the SQLSTATE, and the cause. A
//! failing source is reported at once, with its cause.
//!
//! Every connection the store opens goes through here, so this is also
//! where a failover is met. A URL naming several hosts (`host=a,b`,
//! `postgres://a:5432,b:5432/db`) is tried host by host, and unless it says
//! otherwise it asks for `target_session_attrs=read-write`: a store writes
//! on every call, so a standby is of no use to it. A connection that lands
//! on a standby anyway (one host, which reports `in_hot_standby=on`,
//! PostgreSQL 14 and later) is refused with a retryable [`ConnectError`],
//! so calls retry until the host has been promoted or the name points at
//! the new primary.

use async_trait::async_trait;
use postgres_native_tls::{MakeTlsConnector, TlsStream};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Connection, Socket};

/// The error type a [`CredentialSource`] may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Supplies the password of each new connection (an IAM token, a secret
/// read from a vault). It is called once per connection attempt, so it
/// should cache what it fetches for as long as it is valid.
///
/// Any `Fn() -> impl Future<Output = Result<String, BoxError>>` closure is a
/// source:
///
/// ```no_run
/// # async fn example() -> Result<(), duroxide_postgres::Error> {
/// use duroxide_postgres::{BoxError, PostgresOptions, PostgresProvider};
///
/// /// Returns a cached token, refreshed some minutes before it expires
/// /// (say, an RDS IAM authentication token signed by the AWS SDK).
/// async fn current_token() -> Result<String, BoxError> {
///     # Ok(String::new())
///     // ...
/// }
///
/// let options = PostgresOptions::new().password_source(|| async { current_token().await });
/// // The URL names the user; the password comes from the source.
/// let store = PostgresProvider::connect(
///     "postgres://app_iam@db.internal/app?sslmode=verify-full",
///     options,
/// )
/// .await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// The password for a connection about to be opened.
    async fn password(&self) -> Result<String, BoxError>;
}

#[async_trait]
impl<F, Fut> CredentialSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
{
    async fn password(&self) -> Result<String, BoxError> {
        self().await
    }
}

/// A shared [`CredentialSource`], as the options hold it.
#[derive(Clone)]
pub(crate) struct Credentials(pub(crate) Arc<dyn CredentialSource>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialSource")
    }
}

/// A connection that could not be opened: where to, as whom, after how
/// many attempts, and why.
#[derive(Debug)]
pub struct ConnectError {
    host: String,
    port: u16,
    /// Every host:port the configuration names (tokio-postgres tries each).
    endpoints: String,
    user: Option<String>,
    attempts: u32,
    elapsed: Duration,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    /// The credential source failed or did not answer.
    Source(BoxError),
    /// The server or the network refused the connection.
    Database(tokio_postgres::Error),
    /// The connection reached a standby (`in_hot_standby=on`).
    Standby,
}

impl ConnectError {
    fn new(config: &Config, attempts: u32, started: Instant, cause: Cause) -> Self {
        let (host, port) = first_endpoint(config);
        Self {
            host,
            port,
            endpoints: endpoints(config),
            user: config.get_user().map(str::to_string),
            attempts,
            elapsed: started.elapsed(),
            cause,
        }
    }

    /// The (first) host the store tried to connect to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port of that host.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The SQLSTATE the server answered with (`28P01` for a wrong password,
    /// `28000` for a role it does not let in), if it answered.
    pub fn sqlstate(&self) -> Option<&str> {
        match &self.cause {
            Cause::Database(e) => e.code().map(SqlState::code),
            Cause::Source(_) | Cause::Standby => None,
        }
    }

    /// Whether the server refused the credentials (SQLSTATE class 28).
    pub fn is_authentication(&self) -> bool {
        self.sqlstate().is_some_and(|s| s.starts_with("28"))
    }

    /// Whether the [`CredentialSource`] failed (the server was not asked).
    pub fn is_credential_source(&self) -> bool {
        matches!(self.cause, Cause::Source(_))
    }

    /// Whether every host refused writes: the connection reached a standby
    /// (`in_hot_standby=on`), or with `target_session_attrs=read-write` no
    /// host was a read-write primary (during a failover, until the standby
    /// has been promoted).
    pub fn is_read_only(&self) -> bool {
        match &self.cause {
            Cause::Standby => true,
            // tokio-postgres says so with a PermissionDenied I/O error of
            // this text (it has no error kind for it); the text tells it
            // from a socket the OS refused.
            Cause::Database(e) => {
                e.code().is_none()
                    && io_error(e).is_some_and(|io| {
                        io.kind() == std::io::ErrorKind::PermissionDenied
                            && io.to_string().contains("does not allow writes")
                    })
            }
            Cause::Source(_) => false,
        }
    }

    /// How many connection attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether a later attempt may succeed: a failing credential source (its
    /// service may be back), and the failures a provider call retries
    /// ([`is_retryable_sqlstate`](crate::is_retryable_sqlstate), a lost
    /// connection). Refused credentials are not: they were already retried
    /// for the credential retry budget.
    pub(crate) fn is_retryable(&self) -> bool {
        match &self.cause {
            Cause::Source(_) | Cause::Standby => true,
            Cause::Database(e) => match e.code() {
                Some(code) => crate::error::is_retryable_sqlstate(code.code()),
                None => crate::error::retryable_without_sqlstate(e),
            },
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot connect to {}", self.endpoints)?;
        if let Some(user) = &self.user {
            write!(f, " as {user:?}")?;
        }
        match &self.cause {
            Cause::Source(e) => write!(
                f,
                ": the credential source failed: {}",
                crate::error::describe_chain(&**e)
            )?,
            // "[28P01] password authentication failed ...", or for a
            // failure without SQLSTATE the error and its causes.
            Cause::Database(e) if e.as_db_error().is_some() => {
                write!(f, ": {}", crate::error::describe(e))?
            }
            Cause::Database(e) => {
                write!(f, ": {}", crate::error::describe_chain(e))?;
                if self.is_read_only() {
                    // tokio-postgres' words for "SHOW transaction_read_only
                    // said on" on the last host it tried.
                    write!(
                        f,
                        " (no host took writes: a standby, or a failover not yet finished)"
                    )?;
                }
            }
            Cause::Standby => write!(
                f,
                ": the server is a standby (in_hot_standby=on) and takes no writes; \
                 name the primary, or every host with target_session_attrs=read-write"
            )?,
        }
        if self.attempts > 1 {
            write!(
                f,
                " ({} attempts in {:.1} s, asking the credential source each time)",
                self.attempts,
                self.elapsed.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Source(e) => Some(&**e),
            Cause::Database(e) => Some(e),
            Cause::Standby => None,
        }
    }
}

/// The first `std::io::Error` in `err`'s causes.
fn io_error(err: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = c.source();
    }
    None
}

/// `config` as the store connects with it: several hosts and no
/// `target_session_attrs` mean `read-write` (see the module docs).
fn for_writes(config: &Config) -> Config {
    let mut config = config.clone();
    let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
    if hosts > 1 && config.get_target_session_attrs() == TargetSessionAttrs::Any {
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    }
    config
}

fn port_of(config: &Config, i: usize) -> u16 {
    let ports = config.get_ports();
    // tokio-postgres: one port for all hosts, or one per host; 5432 if none.
    ports
        .get(i)
        .or_else(|| ports.first())
        .copied()
        .unwrap_or(5432)
}

fn host_name(host: &tokio_postgres::config::Host) -> String {
    match host {
        tokio_postgres::config::Host::Tcp(name) => name.clone(),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    }
}

fn first_endpoint(config: &Config) -> (String, u16) {
    let host = config
        .get_hosts()
        .first()
        .map(host_name)
        .or_else(|| config.get_hostaddrs().first().map(|a| a.to_string()))
        .unwrap_or_default();
    (host, port_of(config, 0))
}

fn endpoints(config: &Config) -> String {
    let hosts: Vec<String> = if config.get_hosts().is_empty() {
        config
            .get_hostaddrs()
            .iter()
            .map(|a| a.to_string())
            .collect()
    } else {
        config.get_hosts().iter().map(host_name).collect()
    };
    if hosts.is_empty() {
        return format!("(no host):{}", port_of(config, 0));
    }
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{h}:{}", port_of(config, i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Opens connections: asks the credential source (if any) for the password
/// of each, and retries refused credentials within the budget.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: MakeTlsConnector,
    source: Option<Credentials>,
    budget: Duration,
}

/// A client and its connection, which the caller must poll or spawn.
pub(crate) type Opened = (Client, Connection<Socket, TlsStream<Socket>>);

/// First delay between attempts whose credentials were refused; doubled up
/// to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(2);

impl Connector {
    pub(crate) fn new(
        tls: MakeTlsConnector,
        source: Option<Credentials>,
        budget: Duration,
    ) -> Self {
        Self {
            tls,
            source,
            budget,
        }
    }

    /// The same credentials over another TLS set-up (the direct LISTEN
    /// connection of `listen_url`).
    pub(crate) fn with_tls(&self, tls: MakeTlsConnector) -> Self {
        Self {
            tls,
            source: self.source.clone(),
            budget: self.budget,
        }
    }

    /// How long the pool lets one connection take to open: `acquire`, plus
    /// the budget for refused credentials when they are retried.
    pub(crate) fn create_timeout(&self, acquire: Duration) -> Duration {
        match self.source {
            Some(_) => acquire + self.budget,
            None => acquire,
        }
    }

    /// Opens one connection with `config`, the password from the source.
    pub(crate) async fn connect(&self, config: &Config) -> Result<Opened, ConnectError> {
        let config = &for_writes(config);
        let started = Instant::now();
        let deadline = started + self.budget;
        let mut delay = FIRST_DELAY;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let fail = |cause| ConnectError::new(config, attempts, started, cause);
            let mut config = config.clone();
            if let Some(source) = &self.source {
                let password = self
                    .ask(source, &config)
                    .await
                    .map_err(|e| fail(Cause::Source(e)))?;
                config.password(password);
            }
            match config.connect(self.tls.clone()).await {
                // PostgreSQL 14 and later report in_hot_standby at start-up,
                // so a standby is told apart without a statement.
                Ok((_, connection)) if connection.parameter("in_hot_standby") == Some("on") => {
                    return Err(fail(Cause::Standby))
                }
                Ok(opened) => return Ok(opened),
                Err(e)
                    if self.source.is_some()
                        && refused_credentials(&e)
                        && Instant::now() + delay < deadline =>
                {
                    tracing::warn!(target: "duroxide_postgres", error = %crate::error::describe(&e),
                        attempt = attempts, retry_in_ms = delay.as_millis() as u64,
                        "credentials refused; asking the credential source again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                }
                Err(e) => return Err(fail(Cause::Database(e))),
            }
        }
    }

    /// The source's password, within the connect timeout (a hung token
    /// service must not hang the store).
    async fn ask(&self, source: &Credentials, config: &Config) -> Result<String, BoxError> {
        let asked = source.0.password();
        match config.get_connect_timeout() {
            Some(limit) => match tokio::time::timeout(*limit, asked).await {
                Ok(answer) => answer,
                Err(_) => Err(format!(
                    "no answer within the connect timeout ({} ms)",
                    limit.as_millis()
                )
                .into()),
            },
            None => asked.await,
        }
    }
}

/// Whether the server refused the credentials: `28P01`
/// (invalid_password) or `28000` (invalid_authorization_specification).
fn refused_credentials(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::INVALID_PASSWORD) | Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    )
}

/// What deadpool's `Connect::connect` returns.
type PoolConnecting<'a> = std::pin::Pin<
    Box<
        dyn Future<Output = Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>>
            + Send
            + 'a,
    >,
>;

/// The pool's way to open a connection (deadpool's `Connect`), through the
/// same [`Connector`].
impl deadpool_postgres::Connect for Connector {
    fn connect(&self, pg_config: &Config) -> PoolConnecting<'_> {
        let pg_config = pg_config.clone();
        Box::pin(async move {
            match Connector::connect(self, &pg_config).await {
                Ok((client, connection)) => {
                    let driver = tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(target: "duroxide_postgres", error = %e, "pooled connection ended");
                        }
                    });
                    Ok((client, driver))
                }
                Err(e) => Err(carry(e).await),
            }
        })
    }
}

/// deadpool's `Connect` must fail with a `tokio_postgres::Error`, which
/// cannot be constructed outside tokio-postgres. So the [`ConnectError`]
/// travels as the I/O error of a stream that fails at once, and
/// [`carried`] takes it out again (in `error::from_pool`).
async fn carry(err: ConnectError) -> tokio_postgres::Error {
    let mut config = Config::new();
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    config.user("-");
    match config
        .connect_raw(
            Failing(Some(std::io::Error::other(err))),
            tokio_postgres::NoTls,
        )
        .await
    {
        Err(e) => e,
        Ok(_) => unreachable!("a stream that fails every read and write cannot connect"),
    }
}

/// The [`ConnectError`] a pool error carries, if any (see [`carry`]).
pub(crate) fn carried(err: &tokio_postgres::Error) -> Option<&ConnectError> {
    std::error::Error::source(err)?
        .downcast_ref::<std::io::Error>()?
        .get_ref()?
        .downcast_ref::<ConnectError>()
}

/// A stream whose first read or write fails with the given error.
struct Failing(Option<std::io::Error>);

impl Failing {
    fn error(&mut self) -> std::io::Error {
        self.0
            .take()
            .unwrap_or_else(|| std::io::Error::other("connection attempt failed"))
    }
}

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(self.get_mut().error()))
    }
}

impl tokio::io::AsyncWrite for Failing {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(self.get_mut().error()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(self.get_mut().error()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        "postgres://app@db.example:6543/app".parse().unwrap()
    }

    #[tokio::test]
    async fn a_connect_error_survives_the_trip_through_the_pool() {
        let err = ConnectError::new(
            &config(),
            3,
            Instant::now(),
            Cause::Source("token service down".into()),
        );
        let pg = carry(err).await;
        let back = carried(&pg).expect("the ConnectError is carried");
        assert_eq!((back.host(), back.port()), ("db.example", 6543));
        assert!(back.is_credential_source() && back.is_retryable());
        assert_eq!(back.attempts(), 3);
        let text = back.to_string();
        assert!(
            text.contains("db.example:6543") && text.contains("token service down"),
            "{text}"
        );
    }

    #[test]
    fn several_hosts_ask_for_a_read_write_server() {
        let several: Config = "postgres://u@a:1,b:2/db".parse().unwrap();
        assert_eq!(
            for_writes(&several).get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let one: Config = "postgres://u@a:1/db".parse().unwrap();
        assert_eq!(
            for_writes(&one).get_target_session_attrs(),
            TargetSessionAttrs::Any
        );
        // Asked for explicitly, it is kept (even when it makes no sense for
        // a store that writes: the server then refuses the first write).
        let read_only: Config = "host=a,b user=u target_session_attrs=read-only"
            .parse()
            .unwrap();
        assert_eq!(
            for_writes(&read_only).get_target_session_attrs(),
            TargetSessionAttrs::ReadOnly
        );
    }

    #[tokio::test]
    async fn a_standby_is_a_retryable_read_only_failure() {
        let err = ConnectError::new(&config(), 1, Instant::now(), Cause::Standby);
        assert!(err.is_read_only() && err.is_retryable());
        assert!(!err.is_authentication() && err.sqlstate().is_none());
        let text = carried(&carry(err).await).unwrap().to_string();
        assert!(
            text.contains("db.example:6543") && text.contains("standby"),
            "{text}"
        );
    }

    /// A tokio-postgres error whose cause is `io` (as a failed connect's).
    async fn failed_with(io: std::io::Error) -> tokio_postgres::Error {
        let mut config = Config::new();
        config.user("-");
        match config
            .connect_raw(Failing(Some(io)), tokio_postgres::NoTls)
            .await
        {
            Err(e) => e,
            Ok(_) => unreachable!("a failing stream cannot connect"),
        }
    }

    #[tokio::test]
    async fn no_host_taking_writes_is_read_only_and_a_refused_socket_is_not() {
        use std::io::{Error as Io, ErrorKind};
        let writes = failed_with(Io::new(
            ErrorKind::PermissionDenied,
            "database does not allow writes",
        ))
        .await;
        let err = ConnectError::new(&config(), 1, Instant::now(), Cause::Database(writes));
        assert!(err.is_read_only() && err.is_retryable(), "{err}");
        assert!(err.to_string().contains("no host took writes"), "{err}");
        let socket = failed_with(Io::new(ErrorKind::PermissionDenied, "permission denied")).await;
        let err = ConnectError::new(&config(), 1, Instant::now(), Cause::Database(socket));
        assert!(!err.is_read_only(), "{err}");
    }

    #[test]
    fn endpoints_name_every_host() {
        let config: Config = "host=a,b port=1,2 user=u".parse().unwrap();
        assert_eq!(endpoints(&config), "a:1,b:2");
        let config: Config = "host=a,b port=7 user=u".parse().unwrap();
        assert_eq!(endpoints(&config), "a:7,b:7");
        assert_eq!(first_endpoint(&config), ("a".to_string(), 7));
    }
}
