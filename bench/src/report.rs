//! Result rows, the printed table and the JSON file.

use serde_json::{Map, Value, json};

use crate::measure::Stats;

/// The unit of a row, which also says which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds per operation (lower is better).
    Micros,
    /// Gigabytes (10^9 bytes) per second (higher is better).
    GigabytesPerSec,
    /// Millions of operations per second (higher is better).
    MillionsPerSec,
    /// Requests per second (higher is better).
    RequestsPerSec,
    /// Thousands of operations per second (higher is better).
    ThousandsPerSec,
    /// Operations per second (higher is better).
    PerSec,
}

impl Unit {
    /// The label printed and written to JSON.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::GigabytesPerSec => "GB/s",
            Unit::MillionsPerSec => "M/s",
            Unit::RequestsPerSec => "req/s",
            Unit::ThousandsPerSec => "k/s",
            Unit::PerSec => "/s",
        }
    }

    /// True when a larger figure is better.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Unit::GigabytesPerSec | Unit::MillionsPerSec | Unit::RequestsPerSec | Unit::ThousandsPerSec | Unit::PerSec
        )
    }
}

/// The physical baseline of a row, measured in the same run.
#[derive(Debug, Clone)]
pub struct Floor {
    /// What was measured, in a few words.
    pub name: String,
    /// The samples.
    pub stats: Stats,
}

/// One line of the table and one entry of the JSON `rows`.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload name, `group` or `group/variant`.
    pub workload: String,
    /// Unit of all three figures.
    pub unit: Unit,
    /// multiproc's samples.
    pub multiproc: Stats,
    /// CPython's samples.
    pub cpython: Stats,
    /// The physical floor, if the row has one.
    pub floor: Option<Floor>,
    /// Extra JSON fields for this row (methods chosen, reference figures…).
    pub extra: Map<String, Value>,
}

impl Row {
    /// A row without floor or extras.
    pub fn new(workload: impl Into<String>, unit: Unit, multiproc: Stats, cpython: Stats) -> Row {
        Row { workload: workload.into(), unit, multiproc, cpython, floor: None, extra: Map::new() }
    }

    /// Sets the floor.
    pub fn with_floor(mut self, name: impl Into<String>, stats: Stats) -> Row {
        self.floor = Some(Floor { name: name.into(), stats });
        self
    }

    /// Adds an extra JSON field.
    pub fn with_extra(mut self, key: &str, value: Value) -> Row {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// multiproc ÷ CPython (a plain quotient of the two figures).
    pub fn ratio(&self) -> f64 {
        self.multiproc.value() / self.cpython.value()
    }

    /// multiproc ÷ floor.
    pub fn ratio_to_floor(&self) -> Option<f64> {
        self.floor.as_ref().map(|f| self.multiproc.value() / f.stats.value())
    }

    /// How many times better multiproc is than CPython, whichever the direction.
    pub fn speedup_vs_cpython(&self) -> f64 {
        if self.unit.higher_is_better() { self.ratio() } else { 1.0 / self.ratio() }
    }

    /// The row as JSON: the required fields first, then the extras.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("workload".into(), json!(self.workload));
        m.insert("unit".into(), json!(self.unit.label()));
        m.insert("higher_is_better".into(), json!(self.unit.higher_is_better()));
        m.insert("multiproc".into(), json!(self.multiproc.value()));
        m.insert("cpython".into(), json!(self.cpython.value()));
        m.insert("floor".into(), json!(self.floor.as_ref().map(|f| f.stats.value())));
        m.insert("floor_name".into(), json!(self.floor.as_ref().map(|f| f.name.clone())));
        m.insert("ratio".into(), json!(self.ratio()));
        m.insert("ratio_to_floor".into(), json!(self.ratio_to_floor()));
        m.insert("speedup_vs_cpython".into(), json!(self.speedup_vs_cpython()));
        m.insert(
            "stats".into(),
            json!({
                "multiproc": self.multiproc,
                "cpython": self.cpython,
                "floor": self.floor.as_ref().map(|f| &f.stats),
            }),
        );
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// A figure with about three significant digits.
pub fn fmt_figure(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn fmt_ratio(x: f64) -> String {
    if x >= 10.0 { format!("{x:.1}×") } else { format!("{x:.2}×") }
}

/// The table, one line per row, columns aligned.
pub fn table(rows: &[Row]) -> String {
    let header = ["workload", "unit", "multiproc", "cpython", "ratio", "floor", "ratio to floor", "floor is"];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let arrow = if r.unit.higher_is_better() { "↑" } else { "↓" };
        cells.push(vec![
            r.workload.clone(),
            format!("{} {arrow}", r.unit.label()),
            fmt_figure(r.multiproc.value()),
            fmt_figure(r.cpython.value()),
            fmt_ratio(r.ratio()),
            r.floor.as_ref().map_or("-".into(), |f| fmt_figure(f.stats.value())),
            r.ratio_to_floor().map_or("-".into(), fmt_ratio),
            r.floor.as_ref().map_or("-".into(), |f| f.name.clone()),
        ]);
    }
    let columns = header.len();
    let widths: Vec<usize> =
        (0..columns).map(|c| cells.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            // Text columns align left, figures right; the last column is not padded.
            if c == 0 || c == 1 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else if c == columns - 1 {
                line.push_str(cell);
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
            if c + 1 < columns {
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (columns - 1)));
            out.push('\n');
        }
    }
    out.push_str(
        "ratio = multiproc ÷ cpython, ratio to floor = multiproc ÷ floor (↓ lower is better, ↑ higher is better)\n",
    );
    out
}

#[cfg(test)]
mod test {
    use super::*;

    fn stats(x: f64) -> Stats {
        Stats::of(vec![x])
    }

    #[test]
    fn json_row_has_the_required_fields() {
        let row = Row::new("pipe_rtt", Unit::Micros, stats(10.0), stats(40.0)).with_floor("raw", stats(8.0));
        let v = row.to_json();
        assert_eq!(v["workload"], "pipe_rtt");
        assert_eq!(v["unit"], "µs");
        assert_eq!(v["higher_is_better"], false);
        assert_eq!(v["multiproc"], 10.0);
        assert_eq!(v["cpython"], 40.0);
        assert_eq!(v["floor"], 8.0);
        assert_eq!(v["floor_name"], "raw");
        assert_eq!(v["speedup_vs_cpython"], 4.0);
        let bare = Row::new("x", Unit::GigabytesPerSec, stats(6.0), stats(2.0)).to_json();
        assert!(bare["floor"].is_null() && bare["floor_name"].is_null());
        assert_eq!(bare["higher_is_better"], true);
        assert_eq!(bare["speedup_vs_cpython"], 3.0);
    }

    #[test]
    fn table_lists_every_row() {
        let rows = vec![
            Row::new("a", Unit::Micros, stats(1.0), stats(2.0)),
            Row::new("b", Unit::GigabytesPerSec, stats(3.0), stats(1.5)).with_floor("memcpy", stats(12.0)),
        ];
        let t = table(&rows);
        assert!(t.contains("0.50×") && t.contains("2.00×") && t.contains("0.25×") && t.contains("memcpy"));
    }
}
