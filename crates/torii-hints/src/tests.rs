use super::*;

fn ok(text: &str) -> Vec<HintKind> {
    let p = parse_hints(text);
    assert!(
        p.errors.is_empty(),
        "unexpected errors for {text:?}: {:?}",
        p.errors
    );
    p.hints.into_iter().map(|h| h.kind).collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn scan_hints() {
    assert_eq!(
        ok("SeqScan(t)"),
        vec![HintKind::Scan {
            method: ScanMethod::SeqScan,
            negated: false,
            rel: "t".into(),
            indexes: vec![]
        }]
    );
    assert_eq!(
        ok("IndexScan(t t_a_idx t_b_idx)"),
        vec![HintKind::Scan {
            method: ScanMethod::IndexScan,
            negated: false,
            rel: "t".into(),
            indexes: s(&["t_a_idx", "t_b_idx"])
        }]
    );
    for (kw, m, neg) in [
        ("IndexOnlyScan", ScanMethod::IndexOnlyScan, false),
        ("BitmapScan", ScanMethod::BitmapScan, false),
        ("TidScan", ScanMethod::TidScan, false),
        ("NoSeqScan", ScanMethod::SeqScan, true),
        ("NoIndexScan", ScanMethod::IndexScan, true),
        ("NoIndexOnlyScan", ScanMethod::IndexOnlyScan, true),
        ("NoBitmapScan", ScanMethod::BitmapScan, true),
        ("NoTidScan", ScanMethod::TidScan, true),
        ("noseqscan", ScanMethod::SeqScan, true),
        ("SEQSCAN", ScanMethod::SeqScan, false),
    ] {
        let k = ok(&format!("{kw}(x)"));
        assert_eq!(
            k,
            vec![HintKind::Scan {
                method: m,
                negated: neg,
                rel: "x".into(),
                indexes: vec![]
            }],
            "{kw}"
        );
    }
}

#[test]
fn scan_hint_errors_are_not_fatal() {
    let p = parse_hints("SeqScan(a b) IndexScan(c)");
    assert_eq!(p.errors.len(), 1);
    assert!(!p.errors[0].fatal);
    assert_eq!(p.errors[0].text, "SeqScan(a b)");
    assert_eq!(p.errors[0].span.start, 10);
    assert_eq!(p.hints.len(), 1);
    assert_eq!(p.hints[0].text, "IndexScan(c)");

    let p = parse_hints("SeqScan() NoIndexScan(t i)");
    assert_eq!(p.errors.len(), 2);
    assert!(p.hints.is_empty());
}

#[test]
fn join_hints() {
    assert_eq!(
        ok("NestLoop(a b) HashJoin(a b c) MergeJoin(x y)"),
        vec![
            HintKind::Join {
                method: JoinMethod::NestLoop,
                negated: false,
                rels: s(&["a", "b"])
            },
            HintKind::Join {
                method: JoinMethod::HashJoin,
                negated: false,
                rels: s(&["a", "b", "c"])
            },
            HintKind::Join {
                method: JoinMethod::MergeJoin,
                negated: false,
                rels: s(&["x", "y"])
            },
        ]
    );
    assert_eq!(
        ok("NoNestLoop(a b) NoHashJoin(a b) NoMergeJoin(a b)")
            .iter()
            .map(|k| matches!(k, HintKind::Join { negated: true, .. }))
            .collect::<Vec<_>>(),
        vec![true, true, true]
    );
    let p = parse_hints("NestLoop(a) HashJoin(a a)");
    assert_eq!(p.errors.len(), 2);
    assert!(p.errors.iter().all(|e| !e.fatal));
}

#[test]
fn leading_forms() {
    assert_eq!(
        ok("Leading(a b c)"),
        vec![HintKind::Leading(Leading::Order(s(&["a", "b", "c"])))]
    );
    let t = ok("Leading(((a b) c))");
    let expect = LeadingTree::Join(
        Box::new(LeadingTree::Join(
            Box::new(LeadingTree::Rel("a".into())),
            Box::new(LeadingTree::Rel("b".into())),
        )),
        Box::new(LeadingTree::Rel("c".into())),
    );
    assert_eq!(t, vec![HintKind::Leading(Leading::Tree(expect))]);
    let t = ok("Leading(((a b) (c d)))");
    if let HintKind::Leading(l) = &t[0] {
        assert_eq!(l.rels(), s(&["a", "b", "c", "d"]));
    } else {
        panic!()
    }
    // a single pair
    assert!(matches!(
        &ok("Leading((a b))")[0],
        HintKind::Leading(Leading::Tree(_))
    ));
    for bad in [
        "Leading((a b c))",
        "Leading(a)",
        "Leading()",
        "Leading(((a b) a))",
        "Leading(a b a)",
        "Leading(a (b c))",
    ] {
        let p = parse_hints(bad);
        assert_eq!(p.errors.len(), 1, "{bad}");
        assert!(!p.errors[0].fatal, "{bad}");
        assert!(p.hints.is_empty(), "{bad}");
    }
}

#[test]
fn rows_hints() {
    for (t, c) in [
        ("Rows(a b #10)", RowsCorrection::Absolute(10.0)),
        ("Rows(a b +10)", RowsCorrection::Add(10.0)),
        ("Rows(a b -10)", RowsCorrection::Sub(10.0)),
        ("Rows(a b *2.5)", RowsCorrection::Mul(2.5)),
    ] {
        assert_eq!(
            ok(t),
            vec![HintKind::Rows {
                rels: s(&["a", "b"]),
                correction: c
            }]
        );
    }
    assert_eq!(RowsCorrection::Absolute(10.0).apply(5.0), 10.0);
    assert_eq!(RowsCorrection::Add(10.0).apply(5.0), 15.0);
    assert_eq!(RowsCorrection::Sub(10.0).apply(5.0), 1.0);
    assert_eq!(RowsCorrection::Mul(3.0).apply(5.0), 15.0);
    for bad in [
        "Rows(a b)",
        "Rows(a #1)",
        "Rows(a b 10)",
        "Rows(a b #x)",
        "Rows(a b #-1)",
        "Rows()",
    ] {
        let p = parse_hints(bad);
        assert_eq!(p.errors.len(), 1, "{bad}");
        assert!(p.hints.is_empty());
    }
}

#[test]
fn parallel_and_set() {
    assert_eq!(
        ok("Parallel(t 4) Parallel(u 2 hard) Parallel(v 0 soft)"),
        vec![
            HintKind::Parallel {
                rel: "t".into(),
                workers: 4,
                hard: false
            },
            HintKind::Parallel {
                rel: "u".into(),
                workers: 2,
                hard: true
            },
            HintKind::Parallel {
                rel: "v".into(),
                workers: 0,
                hard: false
            },
        ]
    );
    for bad in [
        "Parallel(t)",
        "Parallel(t x)",
        "Parallel(t 2 medium)",
        "Parallel(t -1)",
    ] {
        let p = parse_hints(bad);
        assert_eq!(p.errors.len(), 1, "{bad}");
    }
    assert_eq!(
        ok("Set(random_page_cost 2.0) Set(work_mem \"64MB\")"),
        vec![
            HintKind::Set {
                name: "random_page_cost".into(),
                value: "2.0".into()
            },
            HintKind::Set {
                name: "work_mem".into(),
                value: "64MB".into()
            },
        ]
    );
    assert_eq!(parse_hints("Set(a)").errors.len(), 1);
}

#[test]
fn quoted_names() {
    assert_eq!(
        ok(r#"SeqScan("My Table") IndexScan("a""b" "Idx 1")"#),
        vec![
            HintKind::Scan {
                method: ScanMethod::SeqScan,
                negated: false,
                rel: "My Table".into(),
                indexes: vec![]
            },
            HintKind::Scan {
                method: ScanMethod::IndexScan,
                negated: false,
                rel: "a\"b".into(),
                indexes: vec!["Idx 1".into()]
            },
        ]
    );
    let p = parse_hints("SeqScan(\"abc");
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].fatal);
}

#[test]
fn syntax_errors_stop_parsing_but_keep_earlier_hints() {
    let p = parse_hints("SeqScan(a) Bogus(b) IndexScan(c)");
    assert_eq!(p.hints.len(), 1);
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].fatal);
    assert_eq!(p.errors[0].span, Span::new(11, 16));
    assert!(p.errors[0].message.contains("Bogus"));

    let p = parse_hints("SeqScan(a) HashJoin(a b");
    assert_eq!(p.hints.len(), 1);
    assert!(p.errors[0].fatal);
    assert_eq!(p.errors[0].span.start, 23);

    let p = parse_hints("SeqScan(a) HashJoin a b)");
    assert_eq!(p.hints.len(), 1);
    assert!(p.errors[0].message.contains("opening parenthesis"));

    let p = parse_hints("SeqScan(a) ; NestLoop(a b)");
    assert_eq!(p.hints.len(), 1);
    assert_eq!(p.errors[0].span.start, 11);
}

#[test]
fn unsupported_keywords_do_not_stop_parsing() {
    let p = parse_hints("IndexScanRegexp(t ^t_.*) SeqScan(u)");
    assert_eq!(p.hints.len(), 1);
    assert_eq!(p.errors.len(), 1);
    assert!(!p.errors[0].fatal);
}

#[test]
fn separators_and_whitespace() {
    assert_eq!(ok("  \n\tSeqScan ( a ) ,IndexScan(b)\n").len(), 2);
    assert_eq!(ok("").len(), 0);
    assert_eq!(ok("   ").len(), 0);
}

#[test]
fn spans_are_exact() {
    let text = "SeqScan(a)  HashJoin(a b)";
    let p = parse_hints(text);
    assert_eq!(
        &text[p.hints[1].span.start..p.hints[1].span.end],
        "HashJoin(a b)"
    );
}

#[test]
fn finds_leading_comment() {
    let q = "/*+ SeqScan(t) */ SELECT * FROM t";
    let (off, text) = find_hint_comment(q).unwrap();
    assert_eq!(off, 3);
    assert_eq!(text, " SeqScan(t) ");
    let p = parse_query(q).unwrap();
    assert_eq!(&q[p.hints[0].span.start..p.hints[0].span.end], "SeqScan(t)");

    let q = "EXPLAIN (COSTS OFF) /*+ IndexScan(t) */ SELECT 1";
    assert_eq!(find_hint_comment(q).unwrap().1, " IndexScan(t) ");
    // only the first block comment counts
    assert!(find_hint_comment("/* plain */ /*+ SeqScan(t) */ SELECT 1").is_none());
    // comment-like text in literals and line comments is skipped
    assert_eq!(
        find_hint_comment("-- /* x\nSELECT '/*' , \"/*\", $$/*$$ /*+ SeqScan(t) */")
            .unwrap()
            .1,
        " SeqScan(t) "
    );
    assert_eq!(
        find_hint_comment("SELECT $1 /*+ SeqScan(t) */").unwrap().1,
        " SeqScan(t) "
    );
    assert!(find_hint_comment("SELECT 1").is_none());
    assert!(find_hint_comment("/*+ SeqScan(t) ").is_none());
    assert!(find_hint_comment("SELECT 'unterminated").is_none());
}

#[test]
fn errors_in_query_positions() {
    let q = "/*+ SeqScan(t) Foo(x) */ SELECT 1";
    let p = parse_query(q).unwrap();
    assert_eq!(p.errors[0].span.start, q.find("Foo").unwrap());
    assert_eq!(
        p.errors[0].to_string(),
        format!(
            "unrecognized hint keyword \"Foo\" at position {}",
            q.find("Foo").unwrap() + 1
        )
    );
}

#[test]
fn resolve_last_wins() {
    let p = parse_hints(
        "SeqScan(a) IndexScan(a) HashJoin(a b) NestLoop(b a) Leading(a b) Leading(b a) Set(x 1) Set(X 2) Rows(a b #1) Parallel(a 2)",
    );
    assert!(p.errors.is_empty());
    use Resolution::*;
    assert_eq!(
        resolve(&p.hints),
        vec![
            Duplicated, Active, Duplicated, Active, Duplicated, Active, Duplicated, Active, Active,
            Active
        ]
    );
}

#[test]
fn unicode_is_handled() {
    let p = parse_hints("SeqScan(täble) IndexScan(\"ünï\" idx)");
    assert!(p.errors.is_empty());
    assert_eq!(p.hints.len(), 2);
    let p = parse_hints("SeqScan(a) ü(b)");
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].span.end <= "SeqScan(a) ü(b)".len());
}

/// A small deterministic PRNG (xorshift64*), so the fuzz test is repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "SeqScan",
    "IndexScan",
    "IndexOnlyScan",
    "BitmapScan",
    "TidScan",
    "NoSeqScan",
    "NestLoop",
    "HashJoin",
    "MergeJoin",
    "NoNestLoop",
    "Leading",
    "Rows",
    "Parallel",
    "Set",
    "Bogus",
    "IndexScanRegexp",
    "(",
    ")",
    "((",
    "))",
    " ",
    "\n",
    ",",
    "a",
    "b",
    "c",
    "t_idx",
    "\"q\"",
    "\"",
    "\"\"",
    "#10",
    "+3",
    "-2",
    "*0.5",
    "#",
    "4",
    "hard",
    "soft",
    "ü",
    "€",
    "/*",
    "*/",
    "'",
    "$$",
    "--",
    ";",
    "\t",
];

fn check(text: &str) {
    let p = parse_hints(text);
    for e in &p.errors {
        assert!(e.span.start <= e.span.end, "{text:?}: {e:?}");
        assert!(e.span.end <= text.len(), "{text:?}: {e:?}");
        assert!(
            e.span.start < text.len() || (text.is_empty() && e.span.start == 0) || e.fatal,
            "{text:?}: {e:?}"
        );
        assert!(e.span.start <= text.len(), "{text:?}: {e:?}");
        assert!(text.is_char_boundary(e.span.start) && text.is_char_boundary(e.span.end));
    }
    for h in &p.hints {
        assert!(h.span.end <= text.len());
        assert_eq!(&text[h.span.start..h.span.end], h.text);
    }
    // at most one fatal error, and it is the last one
    let fatal: Vec<_> = p.errors.iter().filter(|e| e.fatal).collect();
    assert!(fatal.len() <= 1);
    if let Some(f) = fatal.first() {
        assert_eq!(p.errors.last().unwrap(), *f);
    }
    let _ = resolve(&p.hints);
    let q = format!("/*+{text}*/ SELECT 1");
    if let Some(pq) = parse_query(&q) {
        for e in &pq.errors {
            assert!(e.span.end <= q.len());
        }
    }
    let _ = find_hint_comment(text);
}

#[test]
fn fuzz_random_token_soup() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..20_000 {
        let n = rng.below(24);
        let mut t = String::new();
        for _ in 0..n {
            t.push_str(PIECES[rng.below(PIECES.len())]);
            if rng.below(3) == 0 {
                t.push(' ');
            }
        }
        check(&t);
    }
}

#[test]
fn fuzz_mutated_valid_hints() {
    let seeds = [
        "SeqScan(a) IndexScan(b b_idx) HashJoin(a b) Leading(((a b) c)) Rows(a b #10) Parallel(a 2 hard) Set(work_mem \"1MB\")",
        "NoNestLoop(a b c) NoIndexScan(c) Leading(a b c) Rows(b c *2) BitmapScan(\"X y\" i1 i2)",
    ];
    let mut rng = Rng(42);
    for i in 0..20_000 {
        let mut bytes: Vec<u8> = seeds[i % seeds.len()].as_bytes().to_vec();
        for _ in 0..1 + rng.below(6) {
            let op = rng.below(4);
            let pos = rng.below(bytes.len() + 1);
            match op {
                0 if !bytes.is_empty() => {
                    bytes.remove(pos.min(bytes.len() - 1));
                }
                1 => {
                    let alphabet = b"()\"# ,x1+*-\xc3\xbc";
                    bytes.insert(pos, alphabet[rng.below(alphabet.len())])
                }
                2 if pos < bytes.len() => bytes[pos] = (rng.next() & 0xff) as u8,
                _ => bytes.truncate(pos),
            }
        }
        // only valid UTF-8 reaches the parser (PostgreSQL text is encoded)
        let t = String::from_utf8_lossy(&bytes).into_owned();
        check(&t);
    }
}
