//! Running behind a transaction pooler (PgBouncer, `pool_mode =
//! transaction`): what the connection set-up does differently. Each
//! transaction may run on another server connection, so nothing may live in
//! a server session: statements are sent unnamed (`run_statement`), no
//! start-up options are sent (`PostgresOptions::startup_statement_timeout`),
//! and LISTEN, which is session state, goes over a direct connection or not
//! at all (then idle fetches poll with a backoff, `wakeups.rs`).

use crate::credentials::Connector;
use crate::error::Error;
use crate::options::PostgresOptions;
use crate::tls::{self, ConnectSpec};

/// Where the LISTEN connection of long polling goes.
pub(super) enum Listen {
    /// To the database URL (direct connections).
    DatabaseUrl,
    /// To `listen_url`.
    Direct(Box<ConnectSpec>),
    /// Nowhere: long polling is off, or the URL is a transaction pooler and
    /// no `listen_url` was given.
    None,
}

impl Listen {
    /// Checks the listening options (before anything connects).
    pub(super) fn of(options: &PostgresOptions) -> Result<Self, Error> {
        match (&options.listen_url, options.long_poll) {
            (Some(_), false) => Err(Error::Config(
                "listen_url is the LISTEN connection of long polling, which is off".into(),
            )),
            (Some(url), true) => Ok(Listen::Direct(Box::new(tls::parse(url).map_err(
                |e| match e {
                    Error::Config(msg) => Error::Config(format!("listen_url: {msg}")),
                    other => other,
                },
            )?))),
            (None, true) if !options.transaction_pooler => Ok(Listen::DatabaseUrl),
            (None, _) => Ok(Listen::None),
        }
    }

    /// The configuration of the LISTEN connection and what opens it, if
    /// there is one; `config` and `connector` are the pool's (a `listen_url`
    /// keeps the pool's credentials source, with its own TLS set-up).
    pub(super) fn connection(
        self,
        config: tokio_postgres::Config,
        connector: Connector,
        options: &PostgresOptions,
    ) -> Option<(tokio_postgres::Config, Connector)> {
        match self {
            Listen::DatabaseUrl => Some((config, connector)),
            Listen::Direct(spec) => {
                let ConnectSpec { mut config, tls } = *spec;
                config.application_name(&options.application_name);
                if config.get_connect_timeout().is_none() {
                    config.connect_timeout(options.acquire_timeout);
                }
                Some((config, connector.with_tls(tls)))
            }
            Listen::None => None,
        }
    }
}

/// Behind a pooler the statement timeout is the server's: warn when the
/// server has none, since the provider's default (60 s) does not apply.
pub(super) async fn check_server_timeout(client: &tokio_postgres::Client) -> Result<(), Error> {
    let row = client
        .query_typed_one("SELECT current_setting('statement_timeout')", &[])
        .await?;
    let setting: String = row.get(0);
    if setting == "0" {
        tracing::warn!(target: "duroxide_postgres",
            "behind a transaction pooler the server's statement_timeout applies, and it is 0 \
             (none): a hung statement holds its server connection indefinitely; set it on the \
             role (ALTER ROLE ... SET statement_timeout = '60s')");
    }
    Ok(())
}
