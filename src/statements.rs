//! Splits a SQL file into its statements, so that the installer sends one
//! statement per query.
//!
//! Why not the whole file in one simple query: on a Citus coordinator, some
//! DDL (`CREATE INDEX`, `DROP INDEX`, some `ALTER TABLE` and renames) is
//! relayed to the other nodes that hold metadata as the client's *original
//! query string*, and that relay uses the extended protocol. A file sent as
//! one string reaches the workers as one multi-statement Parse, which they
//! refuse (SQLSTATE 42601, "cannot insert multiple commands into a prepared
//! statement"); sent through the simple protocol it would even run the
//! whole file again there. One statement per query keeps the relayed string
//! equal to the statement. On plain PostgreSQL the statements run in the same
//! order in the same transaction, so the result is the same.
//!
//! The splitter knows what our SQL files use: `--` and `/* */` comments,
//! `'…'` strings (with `''`), `"…"` identifiers and `$tag$…$tag$` bodies.
//! A `;` inside any of them does not end a statement.

/// The statements of `sql`, each without its final `;`, skipping pieces that
/// hold only whitespace and comments.
pub(crate) fn split(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut has_code = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2);
                continue;
            }
            b'\'' | b'"' => {
                has_code = true;
                i = skip_quoted(bytes, i);
                continue;
            }
            b'$' => {
                has_code = true;
                if let Some(tag_len) = dollar_tag(bytes, i) {
                    let tag = &sql[i..i + tag_len];
                    let body = i + tag_len;
                    i = sql[body..]
                        .find(tag)
                        .map_or(bytes.len(), |n| body + n + tag_len);
                    continue;
                }
            }
            b';' => {
                if has_code {
                    out.push(sql[start..i].trim());
                }
                start = i + 1;
                has_code = false;
            }
            c if !c.is_ascii_whitespace() => has_code = true,
            _ => {}
        }
        i += 1;
    }
    if has_code {
        out.push(sql[start..].trim());
    }
    out
}

/// The index just past the quoted text that starts at `at` (a doubled quote
/// stands for itself).
fn skip_quoted(bytes: &[u8], at: usize) -> usize {
    let quote = bytes[at];
    let mut i = at + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// The length of the dollar-quote tag (`$$`, `$body$`) starting at `at`, if
/// one starts there (`$1`, a parameter, is not one).
fn dollar_tag(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'$' => return Some(i - at + 1),
            c if c.is_ascii_alphabetic() || c == b'_' => {}
            c if c.is_ascii_digit() && i > at + 1 => {}
            _ => return None,
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_semicolons_outside_quotes_comments_and_bodies() {
        let sql = "-- a comment; not a statement\n\
                   CREATE TABLE t (a TEXT DEFAULT ';');\n\
                   /* block; comment */ CREATE INDEX \"i;x\" ON t (a);\n\
                   CREATE FUNCTION f(p INT) RETURNS INT LANGUAGE plpgsql AS $body$\n\
                   BEGIN RETURN $1; END $body$;\n\
                   CREATE FUNCTION g() RETURNS TEXT LANGUAGE sql AS $$ SELECT 'it''s;' $$;\n\
                   -- trailing comment\n";
        let statements = split(sql);
        assert_eq!(statements.len(), 4, "{statements:#?}");
        assert!(statements[0].ends_with("CREATE TABLE t (a TEXT DEFAULT ';')"));
        assert!(statements[1].ends_with("CREATE INDEX \"i;x\" ON t (a)"));
        assert!(statements[2].ends_with("BEGIN RETURN $1; END $body$"));
        assert!(statements[3].ends_with("SELECT 'it''s;' $$"));
    }

    #[test]
    fn every_embedded_file_splits_into_statements_that_cover_it() {
        for (name, sql) in crate::function_set::embedded_function_files() {
            let statements = split(&sql);
            let creates = statements
                .iter()
                .filter(|s| s.contains("CREATE FUNCTION") || s.contains("CREATE OR REPLACE"))
                .count();
            assert!(creates > 0, "{name}: no function found");
            // Each statement defines at most one function: a body never
            // swallowed the next definition.
            for s in &statements {
                assert!(
                    s.matches("CREATE FUNCTION").count() + s.matches("CREATE OR REPLACE").count()
                        <= 1,
                    "{name}: two definitions in one statement"
                );
            }
        }
    }
}
