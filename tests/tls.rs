//! TLS by `sslmode`, against a private server with a self-signed CA:
//! `require` encrypts, `verify-full` verifies the chain and the host name,
//! and a certificate from the wrong CA is refused by the verifying modes.

#[allow(dead_code)]
mod common;

use common::server::{give_to_server, TempServer};
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `openssl` program (`OPENSSL`, else on `PATH`); the test looks for it
/// before it starts its server, so that without it it fails at once.
fn openssl_program() -> &'static PathBuf {
    static PROGRAM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PROGRAM.get_or_init(|| {
        common::server::find_program("openssl", "OPENSSL", &[], "apt-get install openssl")
    }) {
        Ok(path) => path,
        Err(msg) => panic!("{msg}"),
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let program = openssl_program();
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>.crt`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A server certificate for localhost / 127.0.0.1 signed by CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

async fn connect(url: &str, app: &str) -> Result<PostgresProvider, duroxide_postgres::Error> {
    PostgresProvider::connect(
        url,
        PostgresOptions::new()
            .schema("tls_store")
            .application_name(app)
            .long_poll(false),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_and_verify_full_work_and_a_wrong_ca_is_refused() {
    openssl_program();
    let server = TempServer::start();
    let certs = server.dir().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_ca(&certs, "good_ca");
    make_ca(&certs, "wrong_ca");
    make_server_cert(&certs, "good_ca");
    for file in ["server.crt", "server.key"] {
        let path = certs.join(file);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        give_to_server(&path);
    }
    give_to_server(&certs);

    let admin = common::client_at(&server.url()).await;
    // One statement per call: ALTER SYSTEM refuses to run in a batch.
    for statement in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}/server.crt'",
            certs.display()
        ),
        format!(
            "ALTER SYSTEM SET ssl_key_file = '{}/server.key'",
            certs.display()
        ),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.simple_query(&statement).await.unwrap();
    }

    let port = server.port();
    let base = format!("postgres://postgres@localhost:{port}/postgres");
    let good_ca = certs.join("good_ca.crt");
    let wrong_ca = certs.join("wrong_ca.crt");

    // require: encrypted (not verified).
    let store = connect(&format!("{base}?sslmode=require"), "tls-require")
        .await
        .expect("sslmode=require");
    store.read("nothing").await.expect("a call over TLS");
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'tls-require' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted > 0, "the provider's connections use TLS");

    // verify-full with the right CA: verified, host name checked.
    let store = connect(
        &format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            good_ca.display()
        ),
        "tls-verify",
    )
    .await
    .expect("sslmode=verify-full with the issuing CA");
    store
        .read("nothing")
        .await
        .expect("a call over verified TLS");

    // The wrong CA is refused by both verifying modes.
    for mode in ["verify-full", "verify-ca"] {
        let err = connect(
            &format!("{base}?sslmode={mode}&sslrootcert={}", wrong_ca.display()),
            "tls-wrong",
        )
        .await
        .expect_err("a certificate from another CA must be refused");
        assert!(
            matches!(err, duroxide_postgres::Error::Connect(_)),
            "{mode}: {err}"
        );
    }
}
