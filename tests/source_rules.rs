//! Rules about the source itself, checked on every test run.
//!
//! 1. No value from a user is ever spliced into SQL: the only SQL text built
//!    with `format!` interpolates the validated, quoted schema name (and
//!    things derived from it or from the catalog), a function name from this
//!    crate, `$n` placeholders or an integer setting. Everything else travels
//!    as a bind parameter.
//! 2. Leases never depend on the process clock: `src/` does not read the
//!    wall clock at all (the database's `now_ms()` decides every lease), so a
//!    worker whose clock is skewed can neither steal a live lease nor keep a
//!    dead one.

use std::path::Path;

const SQL_WORDS: &[&str] = &[
    "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "DROP ", "CREATE ", "LISTEN ", "NOTIFY ", "-c ",
];

/// Placeholders allowed inside SQL built with `format!`, and why they are safe.
const ALLOWED: &[(&str, &str)] = &[
    (
        "q",
        "SchemaName::quoted(): a validated plain identifier in quotes",
    ),
    ("quoted", "SchemaName::quoted(), stored on the provider"),
    (
        "function",
        "a &'static str naming one of this crate's SQL functions, with its set's hex tag",
    ),
    ("params", "`$1, $2, ...` placeholders"),
    (
        "invocation",
        "SqlFn::invocation_as(): a function and parameter names from this crate's descriptors, `$n` placeholders",
    ),
    (
        "signature",
        "pg_proc.oid::regprocedure text: quoted by the catalog itself",
    ),
    (
        "channel",
        "derived from a SHA-256 of the schema name: hex digits",
    ),
    ("ms", "an integer number of milliseconds"),
    (
        "payload",
        "peers::Message::payload(): a queue letter and an integer or `*`, or hello/here, built \
         from enums, and the sender id (hex digits)",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 5, "sources not found");
    files
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// The first string literal after each `format!(` in `text`.
fn format_literals(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("format!(") {
        let rest = &text[at + "format!(".len()..];
        let Some(open) = rest.find('"') else { continue };
        let body = &rest[open + 1..];
        let mut literal = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    literal.push(c);
                    literal.extend(chars.next());
                }
                '"' => break,
                _ => literal.push(c),
            }
        }
        let line = text[..at].lines().count() + 1;
        out.push((line, literal));
    }
    out
}

fn placeholders(literal: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = literal.replace("{{", "").replace("}}", "");
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        names.push(inner.split(':').next().unwrap_or("").to_string());
        rest = rest[open + close + 1..].to_string();
    }
    names
}

#[test]
fn sql_text_only_interpolates_validated_identifiers() {
    let mut sql_sites = 0;
    let mut violations = Vec::new();
    for (file, text) in sources() {
        for (line, literal) in format_literals(&text) {
            if !SQL_WORDS.iter().any(|w| literal.contains(w)) {
                continue;
            }
            sql_sites += 1;
            for name in placeholders(&literal) {
                if !ALLOWED.iter().any(|(allowed, _)| *allowed == name) {
                    violations.push(format!("{file}:{line}: {{{name}}} in {literal:?}"));
                }
            }
        }
    }
    assert!(
        sql_sites >= 5,
        "the scan found too few SQL sites ({sql_sites}); is it still working?"
    );
    assert!(
        violations.is_empty(),
        "SQL built with values that are not validated identifiers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scan_catches_a_spliced_value() {
    let bad = r#"let sql = format!("SELECT * FROM t WHERE id = '{instance}'");"#;
    let found = format_literals(bad);
    assert_eq!(placeholders(&found[0].1), vec!["instance".to_string()]);
    assert!(!ALLOWED.iter().any(|(a, _)| *a == "instance"));
}

#[test]
fn leases_never_read_the_process_clock() {
    // The provider library only; the command-line tools in src/bin decide no lease.
    for (file, text) in sources()
        .into_iter()
        .filter(|(f, _)| !f.contains("/src/bin/"))
    {
        for forbidden in ["SystemTime", "chrono::", "Utc::now", "Local::now"] {
            assert!(
                !text.contains(forbidden),
                "{file} reads the wall clock ({forbidden}); leases must use the database clock"
            );
        }
    }
    // Every lease comparison in SQL uses the database clock.
    let sql_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/functions");
    for entry in std::fs::read_dir(sql_dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for forbidden in ["now()", "current_timestamp", "p_now"] {
            assert!(
                !text.to_lowercase().contains(forbidden),
                "SQL uses {forbidden}"
            );
        }
    }
}
