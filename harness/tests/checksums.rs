//! torii's CRC32C page checksums: a flipped byte on disk is caught on read (SQLSTATE XX001,
//! naming relation, block and checksums) and by `torii.verify`; clean tables verify clean.
//!
//! With `TORII_TEST_AM` set to another AM (a self-test of this file), the cluster gets
//! PostgreSQL's own data checksums instead, and only what those also give is checked (SQLSTATE,
//! relation and block named); `torii.verify` and the wording are torii's.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};

use torii_harness::testing::{am, cluster_with_db_options, is_torii, verify, DB};
use torii_harness::{err, sql, Result};

/// Whether `text` names block `blkno`: "block" followed (within a few characters) by the number
/// as a separate token, e.g. "block 1", "block: 1", "block number 1", "blkno 1".
fn names_block(text: &str, blkno: u32) -> bool {
    let lower = text.to_lowercase();
    let want = blkno.to_string();
    for key in ["block", "blkno", "blk"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(key) {
            let start = from + i + key.len();
            let window: String = lower[start..].chars().take(16).collect();
            let mut tokens = window
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|t| !t.is_empty());
            // allow one word in between ("block number 1")
            let t1 = tokens.next();
            let t2 = tokens.next();
            if t1 == Some(want.as_str())
                || (t1.is_some_and(|t| t.chars().all(|c| c.is_ascii_alphabetic()))
                    && t2 == Some(want.as_str()))
            {
                return true;
            }
            from = start;
        }
    }
    false
}

#[test]
fn names_block_parses_messages() {
    assert!(names_block(
        "invalid page in block 1 of relation base/5/16384",
        1
    ));
    assert!(names_block(
        "torii: checksum mismatch in block: 1 of \"t\"",
        1
    ));
    assert!(names_block("Block number 1", 1));
    assert!(!names_block("block 10 of relation", 1));
    assert!(!names_block("block 0", 1));
}

#[test]
fn flipped_byte_is_detected() -> Result<()> {
    let initdb_args: &[&str] = if is_torii() {
        &[]
    } else {
        &["--data-checksums"]
    };
    let (c, mut cl) = cluster_with_db_options("checksums", initdb_args, &[])?;
    cl.batch_execute(&format!(
        "CREATE TABLE t_crc_victim (id int, v text) USING {am}; \
         INSERT INTO t_crc_victim SELECT g, md5(g::text) FROM generate_series(1, 5000) g; \
         CREATE TABLE t_clean (id int, v text) USING {am}; \
         INSERT INTO t_clean SELECT g, repeat('c', g % 200) FROM generate_series(1, 5000) g",
        am = am()
    ))?;
    // Clean tables verify clean.
    assert_eq!(verify(&mut cl, "t_crc_victim")?, vec![]);
    assert_eq!(verify(&mut cl, "t_clean")?, vec![]);
    let block_size: i32 = sql::scalar(&mut cl, "SELECT current_setting('block_size')::int")?;
    let bs = block_size as u64;
    let relfilenode: String =
        sql::scalar(&mut cl, "SELECT pg_relation_filenode('t_crc_victim')::text")?;
    let pages: i64 = sql::scalar(
        &mut cl,
        "SELECT pg_relation_size('t_crc_victim') / current_setting('block_size')::int",
    )?;
    assert!(pages >= 3, "t_crc_victim has only {pages} pages");
    let path = c.relation_path(&mut cl, "t_crc_victim")?;
    cl.batch_execute("CHECKPOINT")?;
    drop(cl);
    c.stop()?;

    // Flip one byte in the middle of block 1's tuple area (between pd_upper and pd_special of the
    // standard page header).
    let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
    let mut page = vec![0u8; bs as usize];
    f.seek(SeekFrom::Start(bs))?;
    f.read_exact(&mut page)?;
    let u16_at = |o: usize| u16::from_le_bytes([page[o], page[o + 1]]) as u64;
    let (lower, upper, special) = (u16_at(12), u16_at(14), u16_at(16));
    assert!(
        24 <= lower && lower <= upper && upper < special && special <= bs,
        "block 1 does not look like a page with tuples: lower {lower} upper {upper} special {special}"
    );
    let offset = bs + (upper + special) / 2;
    f.seek(SeekFrom::Start(offset))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&[b[0] ^ 0xff])?;
    f.sync_all()?;
    drop(f);

    c.start()?;
    let mut cl = c.connect(DB)?;
    let e = match cl.batch_execute("SELECT count(*), sum(length(v)) FROM t_crc_victim") {
        Ok(()) => return Err(err("reading a corrupted page did not fail")),
        Err(e) => e,
    };
    let text = sql::describe(&e);
    eprintln!("reading the corrupted table: {text}");
    assert_eq!(sql::sqlstate(&e).as_deref(), Some("XX001"), "{text}");
    assert!(
        text.contains("t_crc_victim") || text.contains(&relfilenode),
        "error does not name the relation: {text}"
    );
    assert!(names_block(&text, 1), "error does not name block 1: {text}");
    // An ERROR, not a crash: the session and the server go on.
    assert_eq!(sql::scalar::<i32>(&mut cl, "SELECT 1")?, 1);
    if !is_torii() {
        return c.assert_no_crash();
    }
    let lower_text = text.to_lowercase();
    assert!(
        (lower_text.contains("expected") && lower_text.contains("found"))
            || lower_text.contains("checksum"),
        "error does not mention the checksums: {text}"
    );

    let problems = verify(&mut cl, "t_crc_victim")?;
    assert_eq!(problems.len(), 1, "torii.verify: {problems:?}");
    assert_eq!(problems[0].0, 1, "torii.verify: {problems:?}");
    assert!(!problems[0].1.is_empty());
    // The other table is untouched.
    assert_eq!(verify(&mut cl, "t_clean")?, vec![]);
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM t_clean")?,
        5000
    );
    c.assert_no_crash()
}
