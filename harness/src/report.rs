//! Side-by-side tables of measured figures (heap and torii, with the ratio torii/heap).

use std::fmt::Write;

/// How a figure is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A plain count, e.g. rows.
    Count,
    /// Bytes, printed as B / kB / MB / GB.
    Bytes,
    /// Seconds.
    Seconds,
    /// Rows per second.
    RowsPerSec,
    /// A plain number with two decimals (e.g. WAL bytes per row).
    Number,
}

/// A figure with thousands separators.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Format a value in a unit.
pub fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => thousands(v.round().max(0.0) as u64),
        Unit::Bytes => {
            let units = ["B", "kB", "MB", "GB", "TB"];
            let mut x = v;
            let mut i = 0;
            while x >= 1024.0 && i + 1 < units.len() {
                x /= 1024.0;
                i += 1;
            }
            if i == 0 {
                format!("{x:.0} {}", units[i])
            } else {
                format!("{x:.1} {}", units[i])
            }
        }
        Unit::Seconds => {
            if v < 1.0 {
                format!("{:.1} ms", v * 1000.0)
            } else {
                format!("{v:.2} s")
            }
        }
        Unit::RowsPerSec => format!("{} rows/s", thousands(v.round().max(0.0) as u64)),
        Unit::Number => format!("{v:.2}"),
    }
}

struct Line {
    label: String,
    left: Option<f64>,
    right: Option<f64>,
    unit: Unit,
}

/// A table of figures, one line per metric: `label | left | right | right/left`.
pub struct SideBySide {
    title: String,
    left: String,
    right: String,
    lines: Vec<Line>,
}

impl SideBySide {
    pub fn new(title: &str, left: &str, right: &str) -> SideBySide {
        SideBySide {
            title: title.into(),
            left: left.into(),
            right: right.into(),
            lines: Vec::new(),
        }
    }

    /// Add a metric; `None` prints as `-`.
    pub fn add(&mut self, label: &str, left: Option<f64>, right: Option<f64>, unit: Unit) {
        self.lines.push(Line {
            label: label.into(),
            left,
            right,
            unit,
        });
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let ratio_head = format!("{}/{}", self.right, self.left);
        let cells: Vec<[String; 4]> = self
            .lines
            .iter()
            .map(|l| {
                let f = |v: Option<f64>| v.map(|v| format_value(v, l.unit)).unwrap_or("-".into());
                let ratio = match (l.left, l.right) {
                    (Some(a), Some(b)) if a != 0.0 => format!("{:.2}", b / a),
                    _ => "-".into(),
                };
                [l.label.clone(), f(l.left), f(l.right), ratio]
            })
            .collect();
        let head = [
            String::new(),
            self.left.clone(),
            self.right.clone(),
            ratio_head,
        ];
        let mut w = [0usize; 4];
        for row in cells.iter().chain(std::iter::once(&head)) {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "{}", self.title);
        }
        let pad = |s: &str, n: usize, right: bool| {
            let len = s.chars().count();
            let fill = " ".repeat(n.saturating_sub(len));
            if right {
                format!("{fill}{s}")
            } else {
                format!("{s}{fill}")
            }
        };
        let mut line = |r: &[String; 4]| {
            let _ = writeln!(
                out,
                "  {}   {}   {}   {}",
                pad(&r[0], w[0], false),
                pad(&r[1], w[1], true),
                pad(&r[2], w[2], true),
                pad(&r[3], w[3], true)
            );
        };
        line(&head);
        let rule = [
            "-".repeat(w[0]),
            "-".repeat(w[1]),
            "-".repeat(w[2]),
            "-".repeat(w[3]),
        ];
        line(&rule);
        for c in &cells {
            line(c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
        assert_eq!(format_value(2048.0, Unit::Bytes), "2.0 kB");
        assert_eq!(format_value(0.25, Unit::Seconds), "250.0 ms");
        let mut t = SideBySide::new("t", "heap", "torii");
        t.add("rows", Some(10.0), Some(10.0), Unit::Count);
        t.add("size", Some(100.0), Some(150.0), Unit::Bytes);
        let s = t.render();
        assert!(s.contains("torii/heap"), "{s}");
        assert!(s.contains("1.50"), "{s}");
    }
}
