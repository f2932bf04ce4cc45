//! Credentials that rotate, against a private server that makes one role log
//! in with a password (scram-sha-256): a workload keeps running while the
//! password changes twice and every connection is forced to reopen, and a
//! password the server refuses is retried, then reported with the SQLSTATE,
//! host and port.

#[allow(dead_code)]
mod common;

use common::server::TempServer;
use duroxide::providers::Provider;
use duroxide::runtime::Runtime;
use duroxide::{Client, EventKind, OrchestrationStatus};
use duroxide_postgres::{BoxError, Error, PostgresOptions, PostgresProvider};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROLE: &str = "rotating_app";

/// A private server on which `ROLE` (password `first`) must log in with a
/// password over TCP; `postgres` is still trusted. Returns the server and a
/// connection of `postgres`.
async fn password_server() -> (TempServer, tokio_postgres::Client) {
    let server = TempServer::start();
    server.set_hba(
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    );
    let admin = common::client_at(&server.url()).await;
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {ROLE} LOGIN PASSWORD 'first';
             GRANT CREATE ON DATABASE postgres TO {ROLE};"
        ))
        .await
        .unwrap();
    // The premise: without its password the role is refused.
    let url = role_url(&server, None);
    let err = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .err()
        .expect("the role needs a password");
    assert!(format!("{err:?}").contains("password"), "{err:?}");
    (server, admin)
}

/// The role's URL on `server`, with `password` if given.
fn role_url(server: &TempServer, password: Option<&str>) -> String {
    let auth = match password {
        Some(p) => format!("{ROLE}:{p}"),
        None => ROLE.to_string(),
    };
    format!("postgres://{auth}@127.0.0.1:{}/postgres", server.port())
}

/// A stand-in for a token service: hands out the current password and
/// records every call.
#[derive(Default)]
struct Vault {
    current: Mutex<String>,
    handed_out: Mutex<Vec<String>>,
}

impl Vault {
    fn new(password: &str) -> Arc<Self> {
        let vault = Arc::new(Vault::default());
        vault.set(password);
        vault
    }

    fn set(&self, password: &str) {
        *self.current.lock().unwrap() = password.to_string();
    }

    /// The passwords handed out, in order.
    fn calls(&self) -> Vec<String> {
        self.handed_out.lock().unwrap().clone()
    }

    fn options(self: &Arc<Self>) -> PostgresOptions {
        let vault = self.clone();
        PostgresOptions::new().password_source(move || {
            let vault = vault.clone();
            async move {
                let password = vault.current.lock().unwrap().clone();
                vault.handed_out.lock().unwrap().push(password.clone());
                Ok::<_, BoxError>(password)
            }
        })
    }
}

/// Backend pids of `ROLE`.
/// Waits until every backend of the role has exited (`pg_terminate_backend`
/// only signals them), so that the store's next call needs a new login.
/// Each look also ends the role's backends still there: a login whose
/// password exchange began before the rotation can finish after the first
/// `pg_terminate_backend` listed the role's backends, and would stay.
async fn role_backends_gone(admin: &tokio_postgres::Client) {
    common::wait::until("the role's terminated backends exited", || async {
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&ROLE],
            )
            .await
            .unwrap()
            .is_empty()
    })
    .await;
}

async fn role_backends(admin: &tokio_postgres::Client) -> HashSet<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = $1",
            &[&ROLE],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Changes the role's password, checks that open connections keep working,
/// ends them all so that the store must open new ones, and makes a call while
/// the vault still hands out the old password; then the vault catches up.
/// Returns the calls made to the vault meanwhile, and when (database clock,
/// seconds since the epoch) the connections were ended.
async fn rotate(
    admin: &tokio_postgres::Client,
    store: &Arc<PostgresProvider>,
    vault: &Arc<Vault>,
    password: &str,
) -> (Vec<String>, f64) {
    let before = vault.calls().len();
    let open = role_backends(admin).await;
    assert!(!open.is_empty(), "the store has connections open");
    admin
        .batch_execute(&format!("ALTER ROLE {ROLE} PASSWORD '{password}'"))
        .await
        .unwrap();
    // Connections made before the rotation are not touched.
    store
        .read("no-such-instance")
        .await
        .expect("a call after the rotation");
    let still_open = role_backends(admin).await;
    assert!(
        open.is_subset(&still_open),
        "connections opened before the rotation stay open: {open:?} vs {still_open:?}"
    );

    // Every connection of the role goes; the store must log in again.
    let ended: f64 = admin
        .query_one(
            "SELECT extract(epoch FROM clock_timestamp())::float8
             FROM (SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE usename = $1) AS ended",
            &[&ROLE],
        )
        .await
        .unwrap()
        .get(0);
    role_backends_gone(admin).await;
    // The vault learns the new password a little after the database did.
    let catch_up = {
        let (vault, password) = (vault.clone(), password.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            vault.set(&password);
        })
    };
    store
        .read("no-such-instance")
        .await
        .expect("a call that needs a new connection while the vault catches up");
    catch_up.await.unwrap();
    (vault.calls()[before..].to_vec(), ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workload_survives_two_password_rotations() {
    let (server, admin) = password_server().await;
    let vault = Vault::new("first");
    let store = Arc::new(
        PostgresProvider::connect(&role_url(&server, None), vault.options().schema("rotating"))
            .await
            .expect("connect with the vault's password"),
    );

    let (activities, orchestrations) = common::twice_registries(Duration::from_millis(50));
    let rt = Runtime::start_with_store(store.clone(), activities, orchestrations).await;
    let client = Client::new(store.clone());

    const BATCH: usize = 15;
    let mut rotations = Vec::new();
    let mut last_rotation = 0.0;
    for (batch, next) in [Some("second"), Some("third"), None]
        .into_iter()
        .enumerate()
    {
        for i in batch * BATCH..(batch + 1) * BATCH {
            client
                .start_orchestration(&format!("rot-{i}"), "Twice", &i.to_string())
                .await
                .expect("start");
        }
        if let Some(password) = next {
            // With the batch in flight: one of its orchestrations runs.
            let (client, ids) = (&client, batch * BATCH..(batch + 1) * BATCH);
            common::wait::until("an orchestration of the batch runs", || {
                let ids = ids.clone();
                async move {
                    for i in ids {
                        if let Ok(OrchestrationStatus::Running { .. }) =
                            client.get_orchestration_status(&format!("rot-{i}")).await
                        {
                            return true;
                        }
                    }
                    false
                }
            })
            .await;
            let (calls, ended) = rotate(&admin, &store, &vault, password).await;
            rotations.push((password, calls));
            last_rotation = ended;
        }
    }

    for i in 0..3 * BATCH {
        let id = format!("rot-{i}");
        match client
            .wait_for_orchestration(&id, Duration::from_secs(30))
            .await
            .unwrap()
        {
            OrchestrationStatus::Completed { output, .. } => {
                assert_eq!(output, (i * 4).to_string(), "{id}")
            }
            other => panic!("{id}: {other:?}"),
        }
        let history = store.read(&id).await.unwrap();
        let count = |f: fn(&EventKind) -> bool| history.iter().filter(|e| f(&e.kind)).count();
        assert_eq!(
            count(|k| matches!(k, EventKind::OrchestrationCompleted { .. })),
            1,
            "{id} completed once"
        );
        assert_eq!(
            count(|k| matches!(k, EventKind::ActivityCompleted { .. })),
            2,
            "{id}: each activity result recorded once"
        );
    }
    // The LISTEN connection came back too, logged in after the last rotation.
    let listeners: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE usename = $1 AND query ~ '^(LISTEN|NOTIFY)'
               AND extract(epoch FROM backend_start)::float8 > $2",
            &[&ROLE, &last_rotation],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        listeners, 1,
        "one LISTEN connection, opened after the last rotation"
    );
    rt.shutdown(None).await;

    let mut old = "first";
    for (new, calls) in &rotations {
        // Refused with the old password, asked again, let in with the new.
        assert!(
            calls.iter().any(|p| p == old),
            "the store asked the vault while it still had {old}: {calls:?}"
        );
        assert!(
            calls.iter().any(|p| p == new),
            "the store asked the vault after it learnt {new}: {calls:?}"
        );
        old = new;
    }

    // Without the source, the password the store started with no longer
    // works: the rotations were real.
    let err = PostgresProvider::connect(
        &role_url(&server, Some("first")),
        PostgresOptions::new().schema("rotating"),
    )
    .await
    .expect_err("the first password was rotated away");
    assert!(
        matches!(&err, Error::Connect(e) if e.sqlstate() == Some("28P01")),
        "{err}"
    );
    drop(store);
    // A throwaway cluster: no shutdown checkpoint.
    server.stop("immediate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_retried_then_reported() {
    let (server, admin) = password_server().await;
    let port = server.port();

    // Refused at start-up: retried for the budget, asking every time.
    let vault = Vault::new("wrong");
    let err = PostgresProvider::connect(
        &role_url(&server, None),
        vault
            .options()
            .schema("refused")
            .credential_retry_budget(Duration::from_millis(1500)),
    )
    .await
    .expect_err("a wrong password is refused");
    let Error::Connect(connect) = &err else {
        panic!("not a connect error: {err:?}")
    };
    assert_eq!(connect.sqlstate(), Some("28P01"), "{err}");
    assert_eq!((connect.host(), connect.port()), ("127.0.0.1", port));
    assert!(connect.is_authentication() && !connect.is_credential_source());
    assert!(connect.attempts() > 2, "retried: {err}");
    assert_eq!(vault.calls().len() as u32, connect.attempts());
    let text = err.to_string();
    for part in [
        format!("127.0.0.1:{port}"),
        "28P01".to_string(),
        ROLE.to_string(),
    ] {
        assert!(text.contains(&part), "{part:?} in {text}");
    }

    // A failing source: reported at once, with its cause.
    let failing = PostgresOptions::new()
        .schema("refused")
        .password_source(|| async {
            let cause = std::io::Error::other("metadata service unreachable");
            Err::<String, BoxError>(format!("token refresh failed: {cause}").into())
        });
    let err = PostgresProvider::connect(&role_url(&server, None), failing)
        .await
        .expect_err("the source fails");
    let Error::Connect(connect) = &err else {
        panic!("not a connect error: {err:?}")
    };
    assert!(connect.is_credential_source() && connect.attempts() == 1);
    assert!(
        err.to_string().contains("metadata service unreachable"),
        "{err}"
    );

    // Refused for a running store's new connections: a provider call fails
    // once the budget is spent, saying where and why.
    let vault = Vault::new("first");
    let store = PostgresProvider::connect(
        &role_url(&server, None),
        vault
            .options()
            .schema("refused")
            .long_poll(false)
            .client_retry_budget(Duration::ZERO)
            .credential_retry_budget(Duration::from_millis(800)),
    )
    .await
    .expect("connect");
    store
        .read("x")
        .await
        .expect("a call with the right password");
    admin
        .batch_execute(&format!("ALTER ROLE {ROLE} PASSWORD 'elsewhere'"))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&ROLE],
        )
        .await
        .unwrap();
    role_backends_gone(&admin).await;
    let asked = vault.calls().len();
    let err = store.read("x").await.expect_err("the password is refused");
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("28P01") && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
    assert!(vault.calls().len() > asked + 1, "retried: {text}");
    drop(store);
    // A throwaway cluster: no shutdown checkpoint.
    server.stop("immediate");
}
