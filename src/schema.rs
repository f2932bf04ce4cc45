//! Schema names: validation, quoting, and the templating of SQL source files.
//!
//! This is the one place where an identifier enters SQL text. A schema name
//! is accepted only if it is a plain identifier (ASCII letter or underscore,
//! then letters, digits or underscores; at most 63 bytes; not `pg_*`), so
//! quoting it cannot change the meaning of any statement. Every value a
//! caller passes at run time travels as a bind parameter.

use crate::Error;
use sha2::{Digest, Sha256};

/// The schema used by [`PostgresProvider::new`](crate::PostgresProvider::new).
pub const DEFAULT_SCHEMA: &str = "duroxide";

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A validated schema name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaName {
    name: String,
}

impl SchemaName {
    /// Validates `name`, refusing anything but a plain identifier.
    pub(crate) fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidSchemaName {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_IDENTIFIER_BYTES {
            return Err(invalid("it is longer than 63 bytes"));
        }
        let mut chars = name.chars();
        let first = chars.next().unwrap_or('0');
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(invalid("it must start with an ASCII letter or underscore"));
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(
                "only ASCII letters, digits and underscores are allowed",
            ));
        }
        if name.to_ascii_lowercase().starts_with("pg_") {
            return Err(invalid(
                "names starting with pg_ are reserved by PostgreSQL",
            ));
        }
        Ok(Self {
            name: name.to_string(),
        })
    }

    /// The name as given.
    pub(crate) fn as_str(&self) -> &str {
        &self.name
    }

    /// The name as a quoted SQL identifier. Safe because `parse` admits no quote.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.name)
    }

    /// The LISTEN/NOTIFY channel of this store: derived from the schema name
    /// so that stores in one database do not wake each other, and short
    /// enough for PostgreSQL's 63-byte channel names.
    pub(crate) fn channel(&self) -> String {
        let digest = Sha256::digest(self.name.as_bytes());
        format!("duroxide_pg_{}", &hex(&digest)[..16])
    }

    /// Instantiates a SQL source file for this schema.
    pub(crate) fn render(&self, sql: &str) -> String {
        sql.replace("__SCHEMA__", &self.quoted())
            .replace("__CHANNEL__", &self.channel())
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for ok in ["duroxide", "_x", "Tenant_42", &"a".repeat(63)] {
            assert_eq!(SchemaName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(64);
        for bad in [
            "",
            &long,
            "1abc",
            "a-b",
            "a.b",
            "a;drop table x",
            "a\"b",
            "a'b",
            "a b",
            "a$b",
            "é",
            "a\0b",
            "pg_catalog",
            "PG_x",
        ] {
            assert!(
                matches!(SchemaName::parse(bad), Err(Error::InvalidSchemaName { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn renders_schema_and_channel() {
        let s = SchemaName::parse("abc").unwrap();
        let sql = s.render("SELECT __SCHEMA__.f(); NOTIFY __CHANNEL__;");
        assert!(sql.starts_with("SELECT \"abc\".f();"));
        assert!(sql.contains(&s.channel()));
        assert!(s.channel().len() <= 63);
        assert_ne!(s.channel(), SchemaName::parse("abd").unwrap().channel());
    }
}
