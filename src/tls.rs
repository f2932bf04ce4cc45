//! TLS that follows the connection URL's `sslmode`, as libpq does.
//!
//! | sslmode | behaviour |
//! |---|---|
//! | `disable` | plain TCP |
//! | `prefer` (default) | TLS if the server offers it, without verifying the certificate |
//! | `require` | TLS or fail, without verifying the certificate |
//! | `verify-ca` | TLS, certificate must chain to a trusted root |
//! | `verify-full` | as `verify-ca`, and the host name must match |
//!
//! Trusted roots are the system's, plus `sslrootcert=<file.pem>` if given.
//! tokio-postgres itself knows only disable/prefer/require, so the two
//! verifying modes and `sslrootcert` are taken out of the URL here.

use crate::Error;
use postgres_native_tls::MakeTlsConnector;

/// A parsed connection URL and the TLS connector it asks for.
pub(crate) struct ConnectSpec {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeTlsConnector,
}

/// Parses `url` (a `postgres://` URL or a key=value string).
pub(crate) fn parse(url: &str) -> Result<ConnectSpec, Error> {
    let mut verify = Verify::None;
    let mut root_cert = None;
    let cleaned = rewrite_params(url, |key, value| match (key, value) {
        ("sslmode", "verify-full") => {
            verify = Verify::Full;
            Some("sslmode=require".to_string())
        }
        ("sslmode", "verify-ca") => {
            verify = Verify::Ca;
            Some("sslmode=require".to_string())
        }
        ("sslrootcert", path) => {
            root_cert = Some(path.to_string());
            None
        }
        _ => Some(format!("{key}={value}")),
    });
    let config: tokio_postgres::Config = cleaned
        .parse()
        .map_err(|e| Error::Config(format!("invalid connection URL: {e}")))?;

    let mut builder = native_tls::TlsConnector::builder();
    match verify {
        Verify::None => {
            builder.danger_accept_invalid_certs(true);
            builder.danger_accept_invalid_hostnames(true);
        }
        Verify::Ca => {
            builder.danger_accept_invalid_hostnames(true);
        }
        Verify::Full => {}
    }
    if let Some(path) = root_cert {
        let pem = std::fs::read(&path)
            .map_err(|e| Error::Config(format!("cannot read sslrootcert {path}: {e}")))?;
        let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
            Error::Config(format!("sslrootcert {path} is not a PEM certificate: {e}"))
        })?;
        builder.add_root_certificate(cert);
    }
    let connector = builder
        .build()
        .map_err(|e| Error::Config(format!("cannot set up TLS: {e}")))?;
    Ok(ConnectSpec {
        config,
        tls: MakeTlsConnector::new(connector),
    })
}

enum Verify {
    None,
    Ca,
    Full,
}

/// Rewrites the query parameters of a URL (`?a=b&c=d`) with `f`, which
/// returns the replacement `key=value` or `None` to drop it. Key=value
/// connection strings (no `://`) are rewritten word by word.
fn rewrite_params(url: &str, mut f: impl FnMut(&str, &str) -> Option<String>) -> String {
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else {
            return url.to_string();
        };
        let kept: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                f(k, v)
            })
            .collect();
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        url.split_whitespace()
            .filter_map(|p| match p.split_once('=') {
                Some((k, v)) => f(k, v),
                None => Some(p.to_string()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_are_rewritten_for_tokio_postgres() {
        let out = rewrite_params(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/x.pem&application_name=a",
            |k, v| match (k, v) {
                ("sslmode", "verify-full") => Some("sslmode=require".into()),
                ("sslrootcert", _) => None,
                _ => Some(format!("{k}={v}")),
            },
        );
        assert_eq!(out, "postgres://u@h/db?sslmode=require&application_name=a");
    }

    #[test]
    fn several_hosts_keep_every_host_and_the_session_attrs() {
        let spec = parse(
            "postgres://u@a:5432,b:5433/db?sslmode=verify-full&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(spec.config.get_hosts().len(), 2);
        assert_eq!(spec.config.get_ports(), &[5432, 5433]);
        assert_eq!(
            spec.config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        let spec = parse("host=a,b port=5432 user=u sslmode=verify-ca").unwrap();
        assert_eq!(spec.config.get_hosts().len(), 2);
    }

    #[test]
    fn parses_plain_and_verifying_urls() {
        assert!(parse("postgres://u@localhost/db").is_ok());
        assert!(parse("postgres://u@localhost/db?sslmode=verify-full").is_ok());
        assert!(parse("host=localhost user=u sslmode=verify-ca").is_ok());
        assert!(matches!(
            parse("postgres://u@h/db?sslmode=bogus"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            parse("postgres://u@h/db?sslrootcert=/nonexistent.pem"),
            Err(Error::Config(_))
        ));
    }
}
