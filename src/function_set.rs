//! A build's stored procedures as a versioned set (docs/decisions/0004).
//!
//! Every function a build defines is installed under its own name plus a
//! suffix derived from the checksum of all the build's function files:
//! `fetch_work_item__<tag>`. Two builds with different SQL therefore install
//! two sets side by side in the store's schema, and each process calls only
//! its own set, so a rolling upgrade never changes a function under a
//! running process and an older process never replaces a newer one's
//! functions. The SQL files are written with plain names
//! (`__SCHEMA__.now_ms()`); the installer renames the set's own functions,
//! at their definitions and at every call, when it renders a file. Table
//! names are left alone.

use crate::error::Error;
use crate::schema::{hex, SchemaName};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

/// Function files in the order they are created (common helpers first).
const EMBEDDED: &[(&str, &str)] = &[
    ("common", include_str!("../sql/functions/common.sql")),
    ("stats", include_str!("../sql/functions/stats.sql")),
    (
        "orchestrator_queue",
        include_str!("../sql/functions/orchestrator_queue.sql"),
    ),
    (
        "worker_queue",
        include_str!("../sql/functions/worker_queue.sql"),
    ),
    ("sessions", include_str!("../sql/functions/sessions.sql")),
    ("history", include_str!("../sql/functions/history.sql")),
    ("kv_status", include_str!("../sql/functions/kv_status.sql")),
    (
        "management",
        include_str!("../sql/functions/management.sql"),
    ),
    ("inspect", include_str!("../sql/functions/inspect.sql")),
    ("listing", include_str!("../sql/functions/listing.sql")),
    ("retention", include_str!("../sql/functions/retention.sql")),
];

/// Hex digits of the set checksum in the suffix: 64 bits, so that two
/// different builds never collide, short enough for 63-byte identifiers.
const TAG_LEN: usize = 16;

/// One build's function files, their tag and the names they define.
#[derive(Debug)]
pub(crate) struct FunctionSet {
    tag: String,
    files: Vec<(String, String)>,
    /// Plain names of the functions the files define.
    names: BTreeSet<String>,
}

/// The embedded function files, as (file name, SQL) pairs: for tests that
/// install a modified copy as "another build".
pub fn embedded_function_files() -> Vec<(String, String)> {
    EMBEDDED
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

impl FunctionSet {
    /// This build's set.
    pub(crate) fn embedded() -> Arc<FunctionSet> {
        static SET: OnceLock<Arc<FunctionSet>> = OnceLock::new();
        SET.get_or_init(|| {
            Arc::new(
                FunctionSet::from_files(embedded_function_files())
                    .expect("the embedded function files define functions"),
            )
        })
        .clone()
    }

    /// The set of `files` (name, SQL), in creation order.
    pub(crate) fn from_files(files: Vec<(String, String)>) -> Result<FunctionSet, Error> {
        let mut digest = Sha256::new();
        let mut names = BTreeSet::new();
        for (name, sql) in &files {
            digest.update(name.as_bytes());
            digest.update([0]);
            digest.update(sql.as_bytes());
            digest.update([0]);
            names.extend(defined_names(sql));
        }
        if names.is_empty() {
            return Err(Error::Config("function files define no function".into()));
        }
        let tag = hex(&digest.finalize())[..TAG_LEN].to_string();
        Ok(FunctionSet { tag, files, names })
    }

    /// The set's tag: the suffix of its function names.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// The installed name of the set's function `name`.
    pub(crate) fn function(&self, name: &str) -> String {
        format!("{name}__{}", self.tag)
    }

    /// Installed names of all the set's functions.
    pub(crate) fn installed_names(&self) -> Vec<String> {
        self.names.iter().map(|n| self.function(n)).collect()
    }

    /// The files, each rendered for `schema` with the set's names.
    pub(crate) fn rendered(&self, schema: &SchemaName) -> Vec<(&str, String)> {
        self.files
            .iter()
            .map(|(name, sql)| (name.as_str(), schema.render(&self.rename(sql))))
            .collect()
    }

    /// `sql` with every `__SCHEMA__.<name>(` of a function of this set
    /// renamed to its installed name. Anything else (tables, other
    /// schemas' functions) is left as it is.
    fn rename(&self, sql: &str) -> String {
        const PREFIX: &str = "__SCHEMA__.";
        let mut out = String::with_capacity(sql.len() + 64);
        let mut rest = sql;
        while let Some(at) = rest.find(PREFIX) {
            let after = &rest[at + PREFIX.len()..];
            let ident_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let ident = &after[..ident_len];
            out.push_str(&rest[..at + PREFIX.len()]);
            out.push_str(ident);
            if self.names.contains(ident) && after[ident_len..].trim_start().starts_with('(') {
                out.push_str("__");
                out.push_str(&self.tag);
            }
            rest = &after[ident_len..];
        }
        out.push_str(rest);
        out
    }
}

/// Names after `CREATE [OR REPLACE] FUNCTION __SCHEMA__.` in `sql`.
fn defined_names(sql: &str) -> Vec<String> {
    let upper = sql.to_ascii_uppercase();
    let mut names = Vec::new();
    for marker in [
        "CREATE FUNCTION __SCHEMA__.",
        "CREATE OR REPLACE FUNCTION __SCHEMA__.",
    ] {
        let mut from = 0;
        while let Some(at) = upper[from..].find(marker) {
            let start = from + at + marker.len();
            let len = sql[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(sql.len() - start);
            names.push(sql[start..start + len].to_string());
            from = start + len;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_names_fit_in_an_identifier() {
        let set = FunctionSet::embedded();
        for name in set.installed_names() {
            assert!(name.len() <= 63, "{name} is longer than 63 bytes");
        }
        assert!(set.names.contains("fetch_work_item"));
        assert!(set.names.contains("now_ms"));
    }

    #[test]
    fn only_the_sets_function_calls_are_renamed() {
        let files = vec![(
            "f".to_string(),
            "CREATE FUNCTION __SCHEMA__.now_ms() RETURNS BIGINT LANGUAGE sql AS $$ SELECT 1 $$;\n\
             CREATE FUNCTION __SCHEMA__.g(p BIGINT) RETURNS BIGINT LANGUAGE sql AS $$\n\
             INSERT INTO __SCHEMA__.now_ms_log (x) VALUES (__SCHEMA__.now_ms ());\n\
             SELECT __SCHEMA__.now_ms() + count(*) FROM __SCHEMA__.g_table $$;"
                .to_string(),
        )];
        let set = FunctionSet::from_files(files).unwrap();
        // `@` stands for the tag.
        let named = |text: &str| text.replace('@', set.tag());
        let out = set.rename(&set.files[0].1);
        assert!(out.contains(&named("CREATE FUNCTION __SCHEMA__.now_ms__@()")));
        assert!(out.contains(&named("CREATE FUNCTION __SCHEMA__.g__@(p BIGINT)")));
        assert!(out.contains(&named("VALUES (__SCHEMA__.now_ms__@ ())")));
        assert!(out.contains(&named("SELECT __SCHEMA__.now_ms__@() + count(*)")));
        // Tables keep their names, even one followed by a column list.
        assert!(out.contains("INSERT INTO __SCHEMA__.now_ms_log (x)"));
        assert!(out.contains("FROM __SCHEMA__.g_table $$"));
    }

    #[test]
    fn a_different_file_is_a_different_set() {
        let mut files = embedded_function_files();
        let a = FunctionSet::from_files(files.clone()).unwrap();
        files[0].1.push_str("\n-- changed\n");
        let b = FunctionSet::from_files(files).unwrap();
        assert_ne!(a.tag(), b.tag());
        assert_eq!(a.tag(), FunctionSet::embedded().tag());
    }
}
