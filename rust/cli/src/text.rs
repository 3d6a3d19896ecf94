//! The Python CLI's text conventions, byte for byte: json.dumps of strings (with and without
//! ensure_ascii), Go's %v of JSON values as sampan.cli.format.to_text prints them, docker's
//! human durations (sampan.units.human_duration) and Go's tabwriter with docker's settings
//! (sampan.cli.format.tabulate).

use serde_json::Value;
use std::fmt::Write;

/// A JSON string as Python's json.dumps writes it; `ascii`: ensure_ascii (its default).
pub fn json_str(out: &mut String, s: &str, ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c if !ascii && c as u32 >= 0x20 => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Go's %v of a JSON value (sampan.cli.format.to_text) for the scalars ps shows.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => (if *b { "true" } else { "false" }).into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

pub fn human_duration(seconds: f64) -> String {
    let s = seconds.trunc() as i64;
    if s < 1 {
        return "Less than a second".into();
    }
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = s / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (seconds / 3600.0 + 0.5).trunc() as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", (seconds / 3600.0).trunc() as i64 / 24 / 365)
}

/// Go's text/tabwriter (tab-terminated cells, left-aligned, padded with spaces; minwidth 10,
/// padding 3), widths counted in characters as the Python CLI counts them.
pub fn tabulate(text: &str) -> String {
    let raw: Vec<&str> = text.split('\n').collect();
    let trailing = raw[raw.len() - 1];
    let rows: Vec<Vec<&str>> = raw[..raw.len() - 1]
        .iter()
        .map(|l| l.split('\t').collect())
        .collect();
    let mut tw = Tab {
        rows: &rows,
        widths: Vec::new(),
        out: String::new(),
    };
    tw.format(0, rows.len());
    tw.out.push_str(trailing);
    tw.out
}

struct Tab<'a> {
    rows: &'a [Vec<&'a str>],
    widths: Vec<usize>,
    out: String,
}

impl Tab<'_> {
    fn write(&mut self, line0: usize, line1: usize) {
        for line in &self.rows[line0..line1] {
            for (j, cell) in line.iter().enumerate() {
                self.out.push_str(cell);
                if j < self.widths.len() && j + 1 < line.len() {
                    let n = cell.chars().count();
                    for _ in n..self.widths[j] {
                        self.out.push(' ');
                    }
                }
            }
            self.out.push('\n');
        }
    }

    fn format(&mut self, mut line0: usize, line1: usize) {
        let column = self.widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.rows[this].len() {
                this += 1;
                continue;
            }
            self.write(line0, this);
            line0 = this;
            let mut width = 10;
            while this < line1 && column + 1 < self.rows[this].len() {
                width = width.max(self.rows[this][column].chars().count() + 3);
                this += 1;
            }
            self.widths.push(width);
            self.format(line0, this);
            self.widths.pop();
            line0 = this;
        }
        self.write(line0, line1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings() {
        let mut s = String::new();
        json_str(&mut s, "a\"\\\n\u{1}é😀\u{7f}", true);
        assert_eq!(s, r#""a\"\\\n\u0001\u00e9\ud83d\ude00\u007f""#);
        s.clear();
        json_str(&mut s, "a\u{1}é\u{7f}", false);
        assert_eq!(s, "\"a\\u0001é\u{7f}\"");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0.5), "Less than a second");
        assert_eq!(human_duration(59.9), "59 seconds");
        assert_eq!(human_duration(90.0), "About a minute");
        assert_eq!(human_duration(5400.0), "2 hours");
        assert_eq!(human_duration(3.0 * 86400.0), "3 days");
    }

    #[test]
    fn table() {
        let t = tabulate("A\tBB\tC\nlonger cell\tx\ty\n");
        assert_eq!(t, "A             BB        C\nlonger cell   x         y\n");
    }
}
