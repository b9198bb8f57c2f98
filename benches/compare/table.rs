//! Output: one markdown table per section, and the formatting helpers its cells use.

use std::time::Duration;

use crate::MIB;

pub(crate) struct Table {
    pub(crate) title: String,
    head: [&'static str; 4],
    rows: Vec<[String; 4]>,
    notes: Vec<String>,
}

impl Table {
    pub(crate) fn new(title: impl Into<String>, head: [&'static str; 4]) -> Self {
        Self {
            title: title.into(),
            head,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, measure: impl Into<String>, a: String, b: String, ratio: String) {
        self.rows.push([measure.into(), a, b, ratio]);
    }

    /// p50 and p99 rows, ratio b/a.
    pub(crate) fn latency(&mut self, what: &str, a: &mut [Duration], b: &mut [Duration]) {
        for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
            let (x, y) = (pct(a, p), pct(b, p));
            self.row(
                format!("{what} {name}"),
                lat(x),
                lat(y),
                ratio(y.as_secs_f64(), x.as_secs_f64()),
            );
        }
    }

    /// A MiB/s row, ratio b/a.
    pub(crate) fn rate(&mut self, what: &str, a: f64, b: f64) {
        self.row(
            format!("{what} MiB/s"),
            format!("{a:.1}"),
            format!("{b:.1}"),
            ratio(b, a),
        );
    }

    pub(crate) fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub(crate) fn print(&self) {
        let mut w = [0usize; 4];
        for r in std::iter::once(&self.head.map(str::to_owned)).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        println!("\n## {}\n", self.title);
        if self.rows.is_empty() {
            for n in &self.notes {
                println!("{n}");
            }
            return;
        }
        let line = |r: &[String; 4]| {
            println!(
                "| {:<a$} | {:>b$} | {:>c$} | {:>d$} |",
                r[0],
                r[1],
                r[2],
                r[3],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3]
            );
        };
        line(&self.head.map(str::to_owned));
        println!(
            "|{}|{}:|{}:|{}:|",
            "-".repeat(w[0] + 2),
            "-".repeat(w[1] + 1),
            "-".repeat(w[2] + 1),
            "-".repeat(w[3] + 1)
        );
        for r in &self.rows {
            line(r);
        }
        for n in &self.notes {
            println!("\n{n}");
        }
    }
}

pub(crate) fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) fn lat(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

pub(crate) fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 {
        format!("{:.2}", num / den)
    } else {
        "-".into()
    }
}

pub(crate) fn mibs(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

pub(crate) fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

pub(crate) fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}
