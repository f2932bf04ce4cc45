//! Checked reads of result rows: a missing column or an unexpected type is
//! a permanent [`ProviderError`] naming the column, never a panic (a
//! dispatcher that panics on a renamed column would take the runtime down
//! with it).

use duroxide::providers::ProviderError;
use std::fmt::Display;
use tokio_postgres::row::RowIndex;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

/// Column `column` (a name or a position) of `row`, as `T`.
pub(crate) fn get<'a, T, I>(op: &str, row: &'a Row, column: I) -> Result<T, ProviderError>
where
    T: FromSql<'a>,
    I: RowIndex + Display,
{
    row.try_get(&column).map_err(|e| {
        ProviderError::permanent(
            op,
            format!(
                "cannot read column {column} as {}: {e} (does the schema match this build?)",
                std::any::type_name::<T>()
            ),
        )
    })
}

/// A non-negative count or id column (BIGINT) as `u64`; negatives read as 0.
pub(crate) fn count<I: RowIndex + Display>(
    op: &str,
    row: &Row,
    column: I,
) -> Result<u64, ProviderError> {
    Ok(get::<i64, I>(op, row, column)?.max(0) as u64)
}

/// A non-negative count column (INTEGER) as `u32`; negatives read as 0.
pub(crate) fn count32<I: RowIndex + Display>(
    op: &str,
    row: &Row,
    column: I,
) -> Result<u32, ProviderError> {
    Ok(get::<i32, I>(op, row, column)?.max(0) as u32)
}
