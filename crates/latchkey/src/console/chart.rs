//! The API Logs chart: requests per hour (or per day, over more than two
//! days) split by outcome, drawn on the server as SVG from the hourly
//! counts (`log_hours`). Numbers only: the template writes the shapes,
//! with classes from the stylesheet (the CSP allows no inline style).

use latchkey_store::console::{HourCount, hour_of};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Drawing size (the SVG scales to its box).
pub const WIDTH: i64 = 720;
pub const HEIGHT: i64 = 170;
const LEFT: i64 = 44;
const RIGHT: i64 = 18;
const TOP: i64 = 8;
const BOTTOM: i64 = 24;
/// Distinct classes for refusal codes; beyond these, "other refusals".
const REFUSED_CLASSES: usize = 5;

pub struct Seg {
    pub y: i64,
    pub h: i64,
    pub class: &'static str,
    pub title: String,
}

pub struct Bar {
    pub x: i64,
    pub w: i64,
    pub segs: Vec<Seg>,
}

pub struct Tick {
    pub pos: i64,
    pub label: String,
}

pub struct Series {
    pub class: &'static str,
    pub label: String,
    pub total: i64,
}

pub struct DataRow {
    pub time: String,
    pub counts: Vec<i64>,
    pub total: i64,
}

pub struct Chart {
    pub width: i64,
    pub height: i64,
    pub left: i64,
    /// Where the plot ends on the right.
    pub right: i64,
    pub plot_bottom: i64,
    pub bars: Vec<Bar>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub series: Vec<Series>,
    pub total: i64,
    /// `hour` or `day`.
    pub unit: &'static str,
    /// The data as a table (for screen readers and for reading exactly).
    pub rows: Vec<DataRow>,
}

/// What a code counts as: valid, rate limited (or out of credits), or a
/// refusal.
fn family(code: &str) -> u8 {
    match code {
        "VALID" => 0,
        "RATE_LIMITED" | "USAGE_EXCEEDED" => 1,
        _ => 2,
    }
}

fn label_time(ms: i64, unit: i64) -> String {
    let t = crate::views::rfc3339(ms);
    if unit == DAY {
        t.get(5..10).unwrap_or("").to_owned()
    } else {
        t.get(11..16).unwrap_or("").to_owned()
    }
}

/// A round step for `max` over about four ticks.
fn step(max: i64) -> i64 {
    let raw = (max.max(4) + 3) / 4;
    let mut p = 1;
    while p * 10 <= raw {
        p *= 10;
    }
    [1, 2, 5, 10]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10 * p)
}

/// The chart of `counts` over `[since, until)`.
pub fn build(counts: &[HourCount], since: i64, until: i64) -> Chart {
    let unit = if until - since > 2 * DAY { DAY } else { HOUR };
    let start = if unit == DAY {
        since - since.rem_euclid(DAY)
    } else {
        hour_of(since)
    };
    let n = usize::try_from(((until - start) + unit - 1) / unit)
        .unwrap_or(1)
        .clamp(1, 24 * 62);
    // Series: valid, rate limited, then refusal codes by total, the
    // smallest beyond the classes merged.
    let mut refused: Vec<(String, i64)> = Vec::new();
    let mut valid_total = 0;
    let mut limited_total = 0;
    for c in counts {
        match family(&c.code) {
            0 => valid_total += c.n,
            1 => limited_total += c.n,
            _ => match refused.iter_mut().find(|(k, _)| *k == c.code) {
                Some((_, t)) => *t += c.n,
                None => refused.push((c.code.clone(), c.n)),
            },
        }
    }
    refused.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    const CLASSES: [&str; REFUSED_CLASSES] = ["s-r0", "s-r1", "s-r2", "s-r3", "s-r4"];
    let mut series = vec![
        Series {
            class: "s-valid",
            label: "Valid".into(),
            total: valid_total,
        },
        Series {
            class: "s-limited",
            label: "Rate limited".into(),
            total: limited_total,
        },
    ];
    let mut other = 0;
    for (i, (code, total)) in refused.iter().enumerate() {
        match CLASSES.get(i) {
            Some(class) if i + 1 < REFUSED_CLASSES || refused.len() == REFUSED_CLASSES => series
                .push(Series {
                    class,
                    label: code.clone(),
                    total: *total,
                }),
            _ => other += total,
        }
    }
    if other > 0 {
        series.push(Series {
            class: "s-r4",
            label: "Other refusals".into(),
            total: other,
        });
    }
    let series_of = |code: &str| -> usize {
        match family(code) {
            0 => 0,
            1 => 1,
            _ => series
                .iter()
                .position(|s| s.label == code)
                .unwrap_or(series.len().saturating_sub(1)),
        }
    };
    let mut grid = vec![vec![0i64; series.len()]; n];
    for c in counts {
        let i = usize::try_from((c.hour - start).div_euclid(unit)).unwrap_or(usize::MAX);
        if let Some(row) = grid.get_mut(i)
            && let Some(cell) = row.get_mut(series_of(&c.code))
        {
            *cell += c.n;
        }
    }
    let max = grid
        .iter()
        .map(|r| r.iter().sum::<i64>())
        .max()
        .unwrap_or(0);
    let step = step(max);
    let top_value = (max.max(1) + step - 1) / step * step;
    let plot_bottom = HEIGHT - BOTTOM;
    let plot_h = plot_bottom - TOP;
    let slot = (WIDTH - LEFT - RIGHT) as f64 / n as f64;
    let bar_w = ((slot * 0.75).floor() as i64).max(1);
    let mut bars = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    let unit_name = if unit == DAY { "day" } else { "hour" };
    for (i, cells) in grid.iter().enumerate() {
        let t0 = start + i as i64 * unit;
        let x = LEFT + (i as f64 * slot + (slot - bar_w as f64) / 2.0).round() as i64;
        let mut y = plot_bottom;
        let mut segs = Vec::new();
        for (s, v) in series.iter().zip(cells) {
            if *v == 0 {
                continue;
            }
            let h = ((*v as f64 / top_value as f64) * plot_h as f64).round() as i64;
            let h = h.max(1);
            y -= h;
            segs.push(Seg {
                y,
                h,
                class: s.class,
                title: format!(
                    "{} ({unit_name} from {}): {} {}",
                    s.label,
                    super::when(t0),
                    v,
                    if *v == 1 { "request" } else { "requests" }
                ),
            });
        }
        bars.push(Bar { x, w: bar_w, segs });
        rows.push(DataRow {
            time: super::when(t0),
            counts: cells.clone(),
            total: cells.iter().sum(),
        });
    }
    let y_ticks = (0..=top_value / step)
        .map(|k| {
            let v = k * step;
            Tick {
                pos: plot_bottom - (v as f64 / top_value as f64 * plot_h as f64).round() as i64,
                label: v.to_string(),
            }
        })
        .collect();
    let every = (n / 6).max(1);
    let x_ticks = (0..n)
        .step_by(every)
        .map(|i| Tick {
            pos: LEFT + (i as f64 * slot + slot / 2.0).round() as i64,
            label: label_time(start + i as i64 * unit, unit),
        })
        .collect();
    let total = series.iter().map(|s| s.total).sum();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        right: WIDTH - RIGHT,
        plot_bottom,
        bars,
        y_ticks,
        x_ticks,
        series,
        total,
        unit: unit_name,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(hour: i64, code: &str, n: i64) -> HourCount {
        HourCount {
            hour,
            code: code.into(),
            n,
        }
    }

    #[test]
    fn bars_stack_by_outcome_per_hour() {
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00Z
        let c = build(
            &[
                hc(t0, "VALID", 6),
                hc(t0, "KEY_REVOKED", 2),
                hc(t0 + HOUR, "RATE_LIMITED", 1),
                hc(t0 + 2 * HOUR, "INSUFFICIENT_SCOPE", 3),
            ],
            t0,
            t0 + 24 * HOUR,
        );
        assert_eq!(c.unit, "hour");
        assert_eq!(c.bars.len(), 24);
        assert_eq!(c.total, 12);
        let labels: Vec<&str> = c.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            ["Valid", "Rate limited", "INSUFFICIENT_SCOPE", "KEY_REVOKED"]
        );
        let first = &c.bars[0];
        assert_eq!(first.segs.len(), 2);
        assert_eq!(first.segs[0].class, "s-valid");
        assert!(first.segs[1].title.contains("KEY_REVOKED"));
        assert!(first.segs[1].y < first.segs[0].y, "stacked upwards");
        assert_eq!(c.rows[0].counts, [6, 0, 0, 2]);
        assert_eq!(c.rows[1].counts, [0, 1, 0, 0]);
        assert!(c.bars[3].segs.is_empty());
        assert_eq!(c.y_ticks.first().map(|t| t.label.as_str()), Some("0"));
        assert!(
            c.y_ticks
                .iter()
                .all(|t| t.pos >= TOP && t.pos <= c.plot_bottom)
        );
    }

    #[test]
    fn long_ranges_go_by_day_and_steps_are_round() {
        let t0 = 1_767_225_600_000;
        let c = build(&[hc(t0 + 30 * HOUR, "VALID", 5)], t0, t0 + 7 * DAY);
        assert_eq!(c.unit, "day");
        assert_eq!(c.bars.len(), 7);
        assert_eq!(c.rows[1].total, 5);
        assert_eq!(step(7), 2);
        assert_eq!(step(100), 50);
        assert_eq!(step(0), 1);
        assert_eq!(step(1234), 500);
        let empty = build(&[], t0, t0 + HOUR);
        assert_eq!(empty.total, 0);
        assert_eq!(empty.bars.len(), 1);
    }

    #[test]
    fn many_refusal_codes_share_the_last_colour() {
        let t0 = 1_767_225_600_000;
        let codes = [
            "KEY_REVOKED",
            "KEY_EXPIRED",
            "INSUFFICIENT_SCOPE",
            "FORBIDDEN_IP",
            "WRONG_ENVIRONMENT",
            "TOKEN_EXPIRED",
        ];
        let counts: Vec<HourCount> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| hc(t0, c, 10 - i as i64))
            .collect();
        let c = build(&counts, t0, t0 + HOUR);
        let labels: Vec<&str> = c.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels.len(), 7);
        assert_eq!(labels.last(), Some(&"Other refusals"));
        assert_eq!(c.series.last().map(|s| s.total), Some(5 + 6));
        assert_eq!(c.rows[0].total, counts.iter().map(|h| h.n).sum::<i64>());
    }
}
