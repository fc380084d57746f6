//! Helpers on a `postgres::Client`.

use postgres::{Client, SimpleQueryMessage};

use crate::{err, Result};

/// A row as text, as `psql` would print it (`None` is NULL).
pub type TextRow = Vec<Option<String>>;

/// Quote an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote an SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// First column of the first row (error if there is no row).
pub fn scalar<T>(client: &mut Client, sql: &str) -> Result<T>
where
    T: for<'a> postgres::types::FromSql<'a>,
{
    let rows = client.query(sql, &[])?;
    let row = rows
        .first()
        .ok_or_else(|| err(format!("query returned no rows: {sql}")))?;
    Ok(row.try_get(0)?)
}

/// All rows of the last statement of `sql`, every value as text (simple query protocol, so any
/// type works and values are byte-identical to what psql shows).
pub fn rows_text(client: &mut Client, sql: &str) -> Result<Vec<TextRow>> {
    let mut out = Vec::new();
    for m in client.simple_query(sql)? {
        match m {
            SimpleQueryMessage::Row(r) => {
                out.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(_) => {}
            _ => {}
        }
    }
    Ok(out)
}

/// The first column of every row as text (NULL shown as `NULL`).
pub fn column_text(client: &mut Client, sql: &str) -> Result<Vec<String>> {
    Ok(rows_text(client, sql)?
        .into_iter()
        .map(|r| {
            r.into_iter()
                .next()
                .flatten()
                .unwrap_or_else(|| "NULL".into())
        })
        .collect())
}

/// Run a query and return its result as one text block (rows joined by newlines, columns by
/// `|`, NULL as `NULL`), convenient for comparing two tables' answers.
pub fn result_text(client: &mut Client, sql: &str) -> Result<String> {
    Ok(rows_text(client, sql)?
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `EXPLAIN <sql>` (text format) as one string.
pub fn explain(client: &mut Client, sql: &str) -> Result<String> {
    Ok(column_text(client, &format!("EXPLAIN {sql}"))?.join("\n"))
}

/// The planner's row estimate of the top plan node of `sql`.
pub fn estimated_rows(client: &mut Client, sql: &str) -> Result<f64> {
    let plan = explain(client, sql)?;
    let i = plan
        .find("rows=")
        .ok_or_else(|| err(format!("no rows= in plan:\n{plan}")))?;
    let num: String = plan[i + 5..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Ok(num.parse()?)
}

/// Errors that may carry a PostgreSQL server error: `postgres::Error` and the harness's boxed
/// [`crate::Error`].
pub trait PgErrorRef {
    fn pg_error(&self) -> Option<&postgres::Error>;
    fn text(&self) -> String;
}

impl PgErrorRef for postgres::Error {
    fn pg_error(&self) -> Option<&postgres::Error> {
        Some(self)
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl PgErrorRef for crate::Error {
    fn pg_error(&self) -> Option<&postgres::Error> {
        self.downcast_ref::<postgres::Error>()
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

/// The SQLSTATE of a server error (None for client-side or connection errors).
pub fn sqlstate(e: &impl PgErrorRef) -> Option<String> {
    e.pg_error()
        .and_then(|e| e.code())
        .map(|c| c.code().to_string())
}

/// The server's error as a single line `SQLSTATE: message (DETAIL: ...) [HINT: ...]`, or the
/// client error.
pub fn describe(e: &impl PgErrorRef) -> String {
    match e.pg_error().and_then(|e| e.as_db_error()) {
        Some(db) => {
            let mut s = format!("{}: {}", db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (DETAIL: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" [HINT: {h}]"));
            }
            s
        }
        None => e.text(),
    }
}

/// Run `sql` expecting it to fail with SQLSTATE `code`; error otherwise.
pub fn expect_sqlstate(client: &mut Client, sql: &str, code: &str) -> Result<postgres::Error> {
    match client.batch_execute(sql) {
        Ok(()) => Err(err(format!(
            "expected SQLSTATE {code}, but it succeeded: {sql}"
        ))),
        Err(e) if sqlstate(&e).as_deref() == Some(code) => Ok(e),
        Err(e) => Err(err(format!(
            "expected SQLSTATE {code}, got {} for: {sql}",
            describe(&e)
        ))),
    }
}

/// Size of a relation's main fork in bytes.
pub fn relation_size(client: &mut Client, rel: &str) -> Result<i64> {
    let row = client.query_one("SELECT pg_relation_size($1::text::regclass)", &[&rel])?;
    Ok(row.get(0))
}

/// Current WAL insert position as a text LSN.
pub fn current_wal_lsn(client: &mut Client) -> Result<String> {
    scalar(client, "SELECT pg_current_wal_insert_lsn()::text")
}

/// Bytes of WAL between two text LSNs.
pub fn wal_bytes_between(client: &mut Client, from: &str, to: &str) -> Result<i64> {
    let row = client.query_one(
        "SELECT pg_wal_lsn_diff($2::text::pg_lsn, $1::text::pg_lsn)::bigint",
        &[&from, &to],
    )?;
    Ok(row.get(0))
}
