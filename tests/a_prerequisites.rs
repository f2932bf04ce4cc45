//! The programs the test suite starts, checked before anything else runs:
//! `cargo test` runs test binaries in name order and stops at the first that
//! fails, so a machine without one of them fails here within seconds, with
//! the command that installs it, instead of after minutes of other tests.
//! (Hence the name: it sorts first.) Each binary that needs a program still
//! checks it itself, once, and fails every test at once without it.

#[allow(dead_code)]
mod common;
#[path = "common/pgbouncer.rs"]
mod pgbouncer;

use common::server::find_program;

#[test]
fn postgresql_server_tools_are_installed() {
    if std::env::var_os("DATABASE_URL").is_some() {
        return; // the tests use that server and start none of their own
    }
    if let Err(e) = common::server::pg_bin_dir() {
        panic!("{e}");
    }
}

#[test]
fn pgbouncer_is_installed() {
    if let Err(e) = pgbouncer::binary() {
        panic!("tests/pgbouncer.rs puts PgBouncer in front of the test server: {e}");
    }
}

#[test]
fn chromium_is_installed() {
    let found = find_program(
        "chromium",
        "CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        "apt-get install chromium",
    );
    if let Err(e) = found {
        panic!("tests/browser.rs opens the dashboard in headless Chromium: {e}");
    }
}

#[test]
fn openssl_is_installed() {
    if let Err(e) = find_program("openssl", "OPENSSL", &[], "apt-get install openssl") {
        panic!("tests/tls.rs makes its certificates with openssl: {e}");
    }
}
