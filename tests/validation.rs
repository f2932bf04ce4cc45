//! Provider validation suite for the PostgreSQL provider.
//!
//! Runs every public validation function exported by
//! `duroxide::provider_validations` (duroxide 0.1.32, feature `provider-test`)
//! against a PostgreSQL-backed `common::PgFactory` on a direct connection:
//! 235 tests and a count check, listed in `common/validation_suite.rs`
//! (shared with `pgbouncer.rs`, which runs the same list through PgBouncer).

// `common` is shared with other test binaries; not every helper is used here.
#[allow(dead_code)]
mod common;

use common::PgFactory;
use duroxide::provider_validations::ProviderFactory;

/// Long polling on, direct connection (the default configuration).
fn long_poll_factory() -> PgFactory {
    PgFactory::long_poll()
}

/// Long polling off, direct connection.
fn short_poll_factory() -> PgFactory {
    PgFactory::short_poll()
}

include!("common/validation_suite.rs");
