//! Plain-text rendering: tables that fit [`WIDTH`] columns, times in UTC.

/// The terminal width every table fits in.
pub const WIDTH: usize = 100;

/// A table: a header row and rows of cells, rendered with two spaces between
/// columns. When it is wider than [`WIDTH`], the widest columns are cut
/// (an ellipsis marks a cut cell) until it fits.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| len(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(len(cell));
            }
        }
        let budget = WIDTH.saturating_sub(2 * n.saturating_sub(1));
        while widths.iter().sum::<usize>() > budget {
            let (widest, w) = widths
                .iter()
                .enumerate()
                .max_by_key(|(_, w)| **w)
                .map(|(i, w)| (i, *w))
                .unwrap_or((0, 0));
            if w <= 4 {
                break;
            }
            widths[widest] = w - 1;
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let text: Vec<String> = (0..n)
                .map(|i| {
                    let cell = cells.get(i).map(String::as_str).unwrap_or("");
                    pad(&cut(cell, widths[i]), widths[i])
                })
                .collect();
            out.push_str(text.join("  ").trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for row in &self.rows {
            line(row);
        }
        out
    }
}

fn len(s: &str) -> usize {
    s.chars().count()
}

/// `s` on one line, at most `max` characters.
pub fn cut(s: &str, max: usize) -> String {
    duroxide_postgres::inspect::shorten(s, max)
}

fn pad(s: &str, width: usize) -> String {
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len(s))));
    out
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// An optional time, `-` when absent.
pub fn opt_time(ms: Option<i64>) -> String {
    ms.map(time).unwrap_or_else(|| "-".to_string())
}

/// `text` wrapped at word boundaries to [`WIDTH`] columns, continuation
/// lines indented by `indent` spaces.
pub fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let word = cut(word, WIDTH - indent);
        if !line.is_empty() && len(&line) + 1 + len(&word) > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
        } else if !line.is_empty() && !line.ends_with(' ') {
            line.push(' ');
        }
        line.push_str(&word);
    }
    out.push_str(&line);
    out
}

/// Bytes as `12 kB`, `3.4 MB`, ...
/// [`time`] to the millisecond: `2026-12-01 00:50:47.123`.
pub fn time_ms(ms: i64) -> String {
    format!("{}.{:03}", time(ms), ms.rem_euclid(1000))
}

/// A duration to the millisecond: `17 ms`, `1.250 s`, then as `human_ms`.
pub fn span_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.3} s", ms as f64 / 1000.0),
        _ => duroxide_postgres::inspect::human_ms(ms),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(time_ms(1_700_000_000_007), "2023-11-14 22:13:20.007");
        assert_eq!(span_ms(17), "17 ms");
        assert_eq!(span_ms(1_250), "1.250 s");
    }

    #[test]
    fn long_lines_wrap() {
        let text = "word ".repeat(60);
        let wrapped = wrap(&text, 4);
        assert!(wrapped.lines().count() > 2);
        for line in wrapped.lines() {
            assert!(line.chars().count() <= WIDTH, "{line}");
        }
        assert_eq!(wrapped.split_whitespace().count(), 60);
    }

    #[test]
    fn wide_tables_fit() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x".repeat(80), "y".repeat(80)]);
        for line in t.render().lines() {
            assert!(line.chars().count() <= WIDTH, "{line}");
        }
    }
}
