//! Parser for torii planner hints.
//!
//! The syntax follows pg_hint_plan: hints live in the first block comment of
//! a statement when that comment starts with `/*+`, for example
//!
//! ```text
//! /*+ SeqScan(a) HashJoin(a b) Leading((a b) c) Rows(a b #100) */ SELECT ...
//! ```
//!
//! This crate is free of PostgreSQL dependencies: it turns text into a list
//! of [`Hint`]s with byte positions, and [`resolve`] decides which hints are
//! superseded by later ones. Applying the hints is done by the extension.
//!
//! Error handling follows pg_hint_plan: a *syntax* error (an unknown
//! keyword, a missing parenthesis, a stray character) stops parsing, and the
//! hints read before it still apply; a *semantic* error inside a well-formed
//! hint (wrong number of arguments, a bad number) only marks that hint as
//! erroneous and parsing goes on.

use std::fmt;

/// A byte range in the parsed text (`start..end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// Shift a span by `offset` bytes (to map comment positions onto the
    /// position in the whole query text).
    pub fn shifted(self, offset: usize) -> Span {
        Span::new(self.start + offset, self.end + offset)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanMethod {
    SeqScan,
    IndexScan,
    IndexOnlyScan,
    BitmapScan,
    TidScan,
}

impl ScanMethod {
    pub fn name(self) -> &'static str {
        match self {
            ScanMethod::SeqScan => "SeqScan",
            ScanMethod::IndexScan => "IndexScan",
            ScanMethod::IndexOnlyScan => "IndexOnlyScan",
            ScanMethod::BitmapScan => "BitmapScan",
            ScanMethod::TidScan => "TidScan",
        }
    }

    /// Whether the hint may name indexes after the relation.
    pub fn takes_indexes(self) -> bool {
        matches!(
            self,
            ScanMethod::IndexScan | ScanMethod::IndexOnlyScan | ScanMethod::BitmapScan
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinMethod {
    NestLoop,
    HashJoin,
    MergeJoin,
}

impl JoinMethod {
    pub fn name(self) -> &'static str {
        match self {
            JoinMethod::NestLoop => "NestLoop",
            JoinMethod::HashJoin => "HashJoin",
            JoinMethod::MergeJoin => "MergeJoin",
        }
    }
}

/// A join tree of a parenthesised `Leading` hint: `((a b) c)` fixes both the
/// order and which side is outer (left) and inner (right).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadingTree {
    Rel(String),
    Join(Box<LeadingTree>, Box<LeadingTree>),
}

impl LeadingTree {
    /// Relation names in left-to-right order.
    pub fn rels(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            LeadingTree::Rel(r) => out.push(r.clone()),
            LeadingTree::Join(l, r) => {
                l.collect(out);
                r.collect(out);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leading {
    /// `Leading(a b c)`: join order a, b, c; inner/outer left to the planner.
    Order(Vec<String>),
    /// `Leading(((a b) c))`: order and direction.
    Tree(LeadingTree),
}

impl Leading {
    pub fn rels(&self) -> Vec<String> {
        match self {
            Leading::Order(v) => v.clone(),
            Leading::Tree(t) => t.rels(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowsCorrection {
    /// `#n`
    Absolute(f64),
    /// `+n`
    Add(f64),
    /// `-n`
    Sub(f64),
    /// `*n`
    Mul(f64),
}

impl RowsCorrection {
    /// Apply the correction to an estimate; the result is at least 1 row
    /// (like the planner's clamp_row_est).
    pub fn apply(self, rows: f64) -> f64 {
        let r = match self {
            RowsCorrection::Absolute(n) => n,
            RowsCorrection::Add(n) => rows + n,
            RowsCorrection::Sub(n) => rows - n,
            RowsCorrection::Mul(n) => rows * n,
        };
        if r.is_nan() || r < 1.0 {
            1.0
        } else {
            r.round()
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum HintKind {
    /// `SeqScan(t)`, `IndexScan(t i1 i2)`, `NoIndexScan(t)`, ...
    Scan {
        method: ScanMethod,
        negated: bool,
        rel: String,
        indexes: Vec<String>,
    },
    /// `NestLoop(a b c)`, `NoHashJoin(a b)`, ...
    Join {
        method: JoinMethod,
        negated: bool,
        rels: Vec<String>,
    },
    Leading(Leading),
    Rows {
        rels: Vec<String>,
        correction: RowsCorrection,
    },
    Parallel {
        rel: String,
        workers: u32,
        hard: bool,
    },
    Set {
        name: String,
        value: String,
    },
}

/// One hint with its source text and position.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub kind: HintKind,
    /// The hint as written, e.g. `IndexScan(t t_pkey)`.
    pub text: String,
    pub span: Span,
}

impl Hint {
    /// The key two hints conflict on: a later hint with the same key
    /// supersedes an earlier one (pg_hint_plan's "duplication hint").
    pub fn conflict_key(&self) -> String {
        match &self.kind {
            HintKind::Scan { rel, .. } => format!("scan:{rel}"),
            HintKind::Join { rels, .. } => format!("join:{}", sorted_key(rels)),
            HintKind::Leading(_) => "leading".to_string(),
            HintKind::Rows { rels, .. } => format!("rows:{}", sorted_key(rels)),
            HintKind::Parallel { rel, .. } => format!("parallel:{rel}"),
            HintKind::Set { name, .. } => format!("set:{}", name.to_ascii_lowercase()),
        }
    }
}

fn sorted_key(rels: &[String]) -> String {
    let mut v: Vec<&str> = rels.iter().map(|s| s.as_str()).collect();
    v.sort_unstable();
    v.join(" ")
}

/// A parse error. `fatal` errors stopped parsing at `span.start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintError {
    pub message: String,
    pub span: Span,
    /// The offending hint text when the error belongs to one hint.
    pub text: String,
    pub fatal: bool,
}

impl fmt::Display for HintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at position {}", self.message, self.span.start + 1)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedHints {
    pub hints: Vec<Hint>,
    pub errors: Vec<HintError>,
}

/// Locate the hint block of a statement: the first block comment, if it
/// starts with `/*+`. Returns the byte offset of the hint text (just after
/// `/*+`) and the text up to the closing `*/`. String literals, quoted
/// identifiers, dollar quotes and `--` comments are skipped while looking.
pub fn find_hint_comment(query: &str) -> Option<(usize, &str)> {
    let b = query.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if i + 1 < b.len() && b[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' => {
                // $tag$ ... $tag$ (tag may be empty); a bare $1 is a parameter.
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j < b.len()
                    && b[j] == b'$'
                    && !b[i + 1..j].first().is_some_and(u8::is_ascii_digit)
                {
                    let tag = &query[i..=j];
                    match query[j + 1..].find(tag) {
                        Some(p) => i = j + 1 + p + tag.len(),
                        None => return None,
                    }
                } else {
                    i = j;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if b.get(i + 2) == Some(&b'+') {
                    let start = i + 3;
                    let end = query[start..].find("*/")? + start;
                    return Some((start, &query[start..end]));
                }
                return None;
            }
            _ => i += 1,
        }
    }
    None
}

/// Parse the hints of a statement's hint comment, with spans relative to the
/// whole query. Returns `None` when the statement has no hint comment.
pub fn parse_query(query: &str) -> Option<ParsedHints> {
    let (off, text) = find_hint_comment(query)?;
    let mut parsed = parse_hints(text);
    for h in &mut parsed.hints {
        h.span = h.span.shifted(off);
    }
    for e in &mut parsed.errors {
        e.span = e.span.shifted(off);
    }
    Some(parsed)
}

/// An argument token of a hint: a name/value or a parenthesised group.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Word(String, Span),
    Group(Vec<Arg>, Span),
}

impl Arg {
    fn span(&self) -> Span {
        match self {
            Arg::Word(_, s) | Arg::Group(_, s) => *s,
        }
    }
}

struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_space(&mut self) {
        while self.pos < self.b.len() && self.b[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn err(&self, at: usize, msg: impl Into<String>) -> HintError {
        let at = at.min(self.b.len());
        let end = (at + 1).min(self.b.len());
        // keep the span on a char boundary
        let end = if self.s.is_char_boundary(end) {
            end
        } else {
            next_boundary(self.s, end)
        };
        HintError {
            message: msg.into(),
            span: Span::new(at, end.max(at)),
            text: String::new(),
            fatal: true,
        }
    }

    /// A keyword: ASCII letters, digits and underscores.
    fn keyword(&mut self) -> Option<(String, Span)> {
        let start = self.pos;
        while self.pos < self.b.len()
            && (self.b[self.pos].is_ascii_alphanumeric() || self.b[self.pos] == b'_')
        {
            self.pos += 1;
        }
        if self.pos == start {
            None
        } else {
            Some((
                self.s[start..self.pos].to_string(),
                Span::new(start, self.pos),
            ))
        }
    }

    /// Arguments after an opening parenthesis, up to and including the
    /// matching closing one.
    fn args(&mut self, open: usize, depth: usize) -> Result<(Vec<Arg>, Span), HintError> {
        if depth > 64 {
            return Err(self.err(open, "parentheses nested too deeply"));
        }
        let mut out = Vec::new();
        loop {
            self.skip_space();
            if self.pos >= self.b.len() {
                return Err(self.err(self.pos, "closing parenthesis is necessary"));
            }
            match self.b[self.pos] {
                b')' => {
                    self.pos += 1;
                    return Ok((out, Span::new(open, self.pos)));
                }
                b'(' => {
                    let o = self.pos;
                    self.pos += 1;
                    let (inner, span) = self.args(o, depth + 1)?;
                    out.push(Arg::Group(inner, span));
                }
                b'"' => {
                    let start = self.pos;
                    self.pos += 1;
                    let mut v = String::new();
                    loop {
                        if self.pos >= self.b.len() {
                            return Err(self.err(start, "unterminated quoted identifier"));
                        }
                        if self.b[self.pos] == b'"' {
                            if self.b.get(self.pos + 1) == Some(&b'"') {
                                v.push('"');
                                self.pos += 2;
                                continue;
                            }
                            self.pos += 1;
                            break;
                        }
                        let ch = self.s[self.pos..].chars().next().unwrap_or('\0');
                        v.push(ch);
                        self.pos += ch.len_utf8().max(1);
                    }
                    if v.is_empty() {
                        return Err(self.err(start, "zero-length delimited identifier"));
                    }
                    out.push(Arg::Word(v, Span::new(start, self.pos)));
                }
                _ => {
                    let start = self.pos;
                    while self.pos < self.b.len() {
                        let c = self.b[self.pos];
                        if c.is_ascii_whitespace() || c == b'(' || c == b')' || c == b'"' {
                            break;
                        }
                        self.pos += 1;
                    }
                    // stop on a char boundary (non-ASCII bytes are all >= 0x80,
                    // so the loop above never splits a char)
                    out.push(Arg::Word(
                        self.s[start..self.pos].to_string(),
                        Span::new(start, self.pos),
                    ));
                }
            }
        }
    }
}

fn next_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

/// Keywords of pg_hint_plan that torii parses but does not implement: they
/// are reported as errors without stopping the parse.
const UNSUPPORTED: &[&str] = &[
    "IndexScanRegexp",
    "IndexOnlyScanRegexp",
    "BitmapScanRegexp",
    "Memoize",
    "NoMemoize",
];

/// Parse hint text (the inside of a `/*+ ... */` comment, or a stored hint
/// string). Spans are byte offsets into `text`.
pub fn parse_hints(text: &str) -> ParsedHints {
    let mut lx = Lexer {
        s: text,
        b: text.as_bytes(),
        pos: 0,
    };
    let mut out = ParsedHints::default();
    loop {
        lx.skip_space();
        while lx.pos < lx.b.len() && lx.b[lx.pos] == b',' {
            lx.pos += 1;
            lx.skip_space();
        }
        if lx.pos >= lx.b.len() {
            break;
        }
        let start = lx.pos;
        let Some((kw, kw_span)) = lx.keyword() else {
            out.errors.push(lx.err(start, "hint keyword expected"));
            break;
        };
        let kind_of = classify(&kw);
        if kind_of.is_none() && !UNSUPPORTED.iter().any(|u| u.eq_ignore_ascii_case(&kw)) {
            let mut e = lx.err(start, format!("unrecognized hint keyword \"{kw}\""));
            e.span = kw_span;
            out.errors.push(e);
            break;
        }
        lx.skip_space();
        if lx.pos >= lx.b.len() || lx.b[lx.pos] != b'(' {
            out.errors
                .push(lx.err(lx.pos, "opening parenthesis is necessary"));
            break;
        }
        let open = lx.pos;
        lx.pos += 1;
        let args = match lx.args(open, 0) {
            Ok((a, _)) => a,
            Err(e) => {
                out.errors.push(e);
                break;
            }
        };
        let span = Span::new(start, lx.pos);
        let hint_text = text[start..lx.pos].to_string();
        let result = match kind_of {
            Some(k) => build(k, &kw, &args, span),
            None => Err((format!("hint \"{kw}\" is not supported by torii"), kw_span)),
        };
        match result {
            Ok(kind) => out.hints.push(Hint {
                kind,
                text: hint_text,
                span,
            }),
            Err((message, espan)) => out.errors.push(HintError {
                message,
                span: espan,
                text: hint_text,
                fatal: false,
            }),
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum KwKind {
    Scan(ScanMethod, bool),
    Join(JoinMethod, bool),
    Leading,
    Rows,
    Parallel,
    Set,
}

fn classify(kw: &str) -> Option<KwKind> {
    const SCANS: [ScanMethod; 5] = [
        ScanMethod::SeqScan,
        ScanMethod::IndexScan,
        ScanMethod::IndexOnlyScan,
        ScanMethod::BitmapScan,
        ScanMethod::TidScan,
    ];
    const JOINS: [JoinMethod; 3] = [
        JoinMethod::NestLoop,
        JoinMethod::HashJoin,
        JoinMethod::MergeJoin,
    ];
    let (neg, base) = if kw.len() > 2 && kw[..2].eq_ignore_ascii_case("No") {
        (true, &kw[2..])
    } else {
        (false, kw)
    };
    for m in SCANS {
        if m.name().eq_ignore_ascii_case(kw) {
            return Some(KwKind::Scan(m, false));
        }
        if neg && m.name().eq_ignore_ascii_case(base) {
            return Some(KwKind::Scan(m, true));
        }
    }
    for m in JOINS {
        if m.name().eq_ignore_ascii_case(kw) {
            return Some(KwKind::Join(m, false));
        }
        if neg && m.name().eq_ignore_ascii_case(base) {
            return Some(KwKind::Join(m, true));
        }
    }
    if kw.eq_ignore_ascii_case("Leading") {
        return Some(KwKind::Leading);
    }
    if kw.eq_ignore_ascii_case("Rows") {
        return Some(KwKind::Rows);
    }
    if kw.eq_ignore_ascii_case("Parallel") {
        return Some(KwKind::Parallel);
    }
    if kw.eq_ignore_ascii_case("Set") {
        return Some(KwKind::Set);
    }
    None
}

type BuildResult = Result<HintKind, (String, Span)>;

fn words<'a>(kw: &str, args: &'a [Arg]) -> Result<Vec<(&'a str, Span)>, (String, Span)> {
    args.iter()
        .map(|a| match a {
            Arg::Word(w, s) => Ok((w.as_str(), *s)),
            Arg::Group(_, s) => Err((format!("{kw} hint does not accept parentheses here"), *s)),
        })
        .collect()
}

fn args_span(args: &[Arg]) -> Span {
    match (args.first(), args.last()) {
        (Some(f), Some(l)) => Span::new(f.span().start, l.span().end),
        _ => Span::new(0, 0),
    }
}

fn no_duplicates(kw: &str, rels: &[(&str, Span)]) -> Result<(), (String, Span)> {
    for (i, (r, s)) in rels.iter().enumerate() {
        if rels[..i].iter().any(|(p, _)| p == r) {
            return Err((
                format!("relation name \"{r}\" is duplicated in {kw} hint"),
                *s,
            ));
        }
    }
    Ok(())
}

fn build(k: KwKind, kw: &str, args: &[Arg], hint_span: Span) -> BuildResult {
    let all = if args.is_empty() {
        hint_span
    } else {
        args_span(args)
    };
    match k {
        KwKind::Scan(method, negated) => {
            let w = words(kw, args)?;
            let Some(((rel, _), rest)) = w.split_first() else {
                return Err((format!("{kw} hint requires a relation"), all));
            };
            if !rest.is_empty() && (negated || !method.takes_indexes()) {
                return Err((format!("{kw} hint accepts only one relation"), rest[0].1));
            }
            Ok(HintKind::Scan {
                method,
                negated,
                rel: rel.to_string(),
                indexes: rest.iter().map(|(i, _)| i.to_string()).collect(),
            })
        }
        KwKind::Join(method, negated) => {
            let w = words(kw, args)?;
            if w.len() < 2 {
                return Err((format!("{kw} hint requires at least two relations"), all));
            }
            no_duplicates(kw, &w)?;
            Ok(HintKind::Join {
                method,
                negated,
                rels: w.iter().map(|(r, _)| r.to_string()).collect(),
            })
        }
        KwKind::Leading => {
            if args.len() == 1 {
                if let Arg::Group(..) = &args[0] {
                    let tree = leading_tree(&args[0])?;
                    let rels = tree.rels();
                    let mut seen: Vec<&str> = Vec::new();
                    for r in &rels {
                        if seen.contains(&r.as_str()) {
                            return Err((
                                format!("relation name \"{r}\" is duplicated in Leading hint"),
                                all,
                            ));
                        }
                        seen.push(r);
                    }
                    return Ok(HintKind::Leading(Leading::Tree(tree)));
                }
            }
            let w = words(kw, args)?;
            if w.len() < 2 {
                return Err(("Leading hint requires at least two relations".into(), all));
            }
            no_duplicates(kw, &w)?;
            Ok(HintKind::Leading(Leading::Order(
                w.iter().map(|(r, _)| r.to_string()).collect(),
            )))
        }
        KwKind::Rows => {
            let w = words(kw, args)?;
            let Some(((last, lspan), rels)) = w.split_last() else {
                return Err(("Rows hint requires relations and a correction".into(), all));
            };
            if rels.len() < 2 {
                return Err(("Rows hint requires at least two relations".into(), all));
            }
            no_duplicates(kw, rels)?;
            let corr = parse_correction(last)
                .ok_or_else(|| (format!("invalid Rows correction \"{last}\""), *lspan))?;
            Ok(HintKind::Rows {
                rels: rels.iter().map(|(r, _)| r.to_string()).collect(),
                correction: corr,
            })
        }
        KwKind::Parallel => {
            let w = words(kw, args)?;
            if w.len() < 2 || w.len() > 3 {
                return Err((
                    "Parallel hint requires a relation, a number of workers and optionally soft or hard".into(),
                    all,
                ));
            }
            let workers: u32 = w[1]
                .0
                .parse()
                .ok()
                .filter(|n| *n <= 1024)
                .ok_or_else(|| (format!("invalid number of workers \"{}\"", w[1].0), w[1].1))?;
            let hard = match w.get(2) {
                None => false,
                Some((m, s)) => {
                    if m.eq_ignore_ascii_case("soft") {
                        false
                    } else if m.eq_ignore_ascii_case("hard") {
                        true
                    } else {
                        return Err((
                            format!("Parallel mode must be soft or hard, not \"{m}\""),
                            *s,
                        ));
                    }
                }
            };
            Ok(HintKind::Parallel {
                rel: w[0].0.to_string(),
                workers,
                hard,
            })
        }
        KwKind::Set => {
            let w = words(kw, args)?;
            if w.len() != 2 {
                return Err(("Set hint requires a parameter name and a value".into(), all));
            }
            Ok(HintKind::Set {
                name: w[0].0.to_string(),
                value: w[1].0.to_string(),
            })
        }
    }
}

fn leading_tree(a: &Arg) -> Result<LeadingTree, (String, Span)> {
    match a {
        Arg::Word(w, _) => Ok(LeadingTree::Rel(w.clone())),
        Arg::Group(items, span) => {
            if items.len() != 2 {
                return Err((
                    "Leading hint requires exactly two elements in each parenthesised pair".into(),
                    *span,
                ));
            }
            Ok(LeadingTree::Join(
                Box::new(leading_tree(&items[0])?),
                Box::new(leading_tree(&items[1])?),
            ))
        }
    }
}

fn parse_correction(s: &str) -> Option<RowsCorrection> {
    let mut chars = s.chars();
    let op = chars.next()?;
    let n: f64 = chars.as_str().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    match op {
        '#' => Some(RowsCorrection::Absolute(n)),
        '+' => Some(RowsCorrection::Add(n)),
        '-' => Some(RowsCorrection::Sub(n)),
        '*' => Some(RowsCorrection::Mul(n)),
        _ => None,
    }
}

/// Status of a hint after conflict resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Takes part in planning.
    Active,
    /// A later hint with the same target supersedes it.
    Duplicated,
}

/// For each hint, whether it is active or superseded by a later hint on the
/// same target (the last one wins, as in pg_hint_plan).
pub fn resolve(hints: &[Hint]) -> Vec<Resolution> {
    let keys: Vec<String> = hints.iter().map(Hint::conflict_key).collect();
    (0..hints.len())
        .map(|i| {
            if keys[i + 1..].contains(&keys[i]) {
                Resolution::Duplicated
            } else {
                Resolution::Active
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
