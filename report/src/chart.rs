//! Charts as SVG text: a time series (lines, with fault windows shaded and points in
//! time marked) or a histogram (bars over value buckets).

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One line of a time-series chart: (seconds from the run's start, value).
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points }
    }
}

/// What a chart shows.
#[derive(Debug, Clone)]
pub enum Chart {
    /// Lines over time; `windows` (start, end) are shaded, `marks` (times) drawn as thin
    /// vertical lines; the x axis runs from 0 to `span` seconds at least
    /// (so every chart of one run shares its axis).
    Timeline {
        title: String,
        y_label: String,
        span: f64,
        series: Vec<Series>,
        windows: Vec<(f64, f64)>,
        marks: Vec<f64>,
    },
    /// Bars: (bucket start, bucket end, count).
    Histogram { title: String, x_label: String, bars: Vec<(f64, f64, u64)> },
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 240;
const LINE_COLOURS: [RGBColor; 6] = [
    RGBColor(35, 89, 196),
    RGBColor(197, 34, 31),
    RGBColor(19, 115, 51),
    RGBColor(176, 96, 0),
    RGBColor(120, 60, 170),
    RGBColor(0, 130, 140),
];
const WINDOW_SHADE: RGBColor = RGBColor(250, 210, 120);
const MARK_COLOUR: RGBColor = RGBColor(120, 120, 120);

impl Chart {
    pub fn title(&self) -> &str {
        match self {
            Chart::Timeline { title, .. } | Chart::Histogram { title, .. } => title,
        }
    }

    /// The chart as an `<svg>` element.
    pub fn to_svg(&self) -> String {
        let mut svg = String::new();
        let drawn = {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            match self {
                Chart::Timeline { series, windows, marks, y_label, span, .. } => {
                    draw_timeline(&root, series, windows, marks, y_label, *span)
                }
                Chart::Histogram { bars, x_label, .. } => draw_histogram(&root, bars, x_label),
            }
            .and_then(|()| root.present().map_err(|e| e.to_string()))
        };
        match drawn {
            Ok(()) => svg,
            Err(error) => format!("<p class=\"chart-error\">chart not drawn: {}</p>", crate::html::escape(&error)),
        }
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_timeline(
    root: &Area<'_>,
    series: &[Series],
    windows: &[(f64, f64)],
    marks: &[f64],
    y_label: &str,
    span: f64,
) -> Result<(), String> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let x_end = points.clone().map(|p| p.0).chain(windows.iter().map(|w| w.1)).fold(span.max(1.0), f64::max);
    let y_end = points.map(|p| p.1).fold(0.0, f64::max);
    let y_end = if y_end <= 0.0 { 1.0 } else { y_end * 1.1 };
    let mut chart = axes(root, x_end, y_end, 64)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .y_desc(y_label)
        .y_label_formatter(&|v| compact(*v))
        .light_line_style(RGBColor(238, 240, 243))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(windows.iter().map(|(from, to)| {
            let to = if to > from { *to } else { from + x_end / 400.0 };
            Rectangle::new([(*from, 0.0), (to, y_end)], WINDOW_SHADE.mix(0.35).filled())
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(marks.iter().map(|at| PathElement::new(vec![(*at, 0.0), (*at, y_end)], MARK_COLOUR.mix(0.7))))
        .map_err(|e| e.to_string())?;
    for (n, line) in series.iter().enumerate() {
        let colour = LINE_COLOURS[n % LINE_COLOURS.len()];
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), colour.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    if series.len() > 1 || series.first().is_some_and(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

type Axes<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A white area with axes from 0 to `x_end` and to `y_end`, room for the y labels.
fn axes<'a, 'b>(root: &'a Area<'b>, x_end: f64, y_end: f64, y_labels: u32) -> Result<Axes<'a, 'b>, String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    ChartBuilder::on(root)
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(y_labels)
        .build_cartesian_2d(0.0..x_end, 0.0..y_end)
        .map_err(|e| e.to_string())
}

fn draw_histogram(root: &Area<'_>, bars: &[(f64, f64, u64)], x_label: &str) -> Result<(), String> {
    let x_end = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let y_end = bars.iter().map(|b| b.2).max().unwrap_or(0).max(1) as f64 * 1.1;
    let mut chart = axes(root, x_end, y_end, 48)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("count")
        .light_line_style(RGBColor(238, 240, 243))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().map(|(from, to, count)| {
            Rectangle::new([(*from, 0.0), (*to, *count as f64)], LINE_COLOURS[0].mix(0.8).filled())
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// 1234567 → "1.2M", 2048 → "2.0k", 0.25 → "0.25".
fn compact(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e9 {
        format!("{:.1}G", value / 1e9)
    } else if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 10.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Equal-width buckets over `values` (at most `buckets`), for a histogram.
pub fn buckets(values: &[f64], buckets: usize) -> Vec<(f64, f64, u64)> {
    let max = values.iter().copied().fold(0.0, f64::max);
    // All zero (every client caught up at once): narrow bars at zero, not a wide axis.
    let width = if max <= 0.0 { 0.01 } else { max / buckets.max(1) as f64 };
    let mut bars: Vec<(f64, f64, u64)> =
        (0..buckets.max(1)).map(|i| (i as f64 * width, (i + 1) as f64 * width, 0)).collect();
    for value in values {
        let i = ((value / width) as usize).min(bars.len() - 1);
        bars[i].2 += 1;
    }
    bars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_draws_its_lines_windows_and_legend() {
        let chart = Chart::Timeline {
            title: "streams".into(),
            y_label: "streams".into(),
            span: 10.0,
            series: vec![Series::new("streams", vec![(0.0, 1.0), (5.0, 3.0)]), Series::new("conns", vec![(0.0, 2.0)])],
            windows: vec![(1.0, 2.0)],
            marks: vec![4.0],
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("<polyline"), "a line is drawn");
        assert!(svg.contains("streams") && svg.contains("conns"), "the legend names both lines");
        assert!(svg.contains("seconds from the start"));
    }

    #[test]
    fn buckets_count_every_value_once() {
        let bars = buckets(&[0.1, 0.5, 0.9, 1.0], 2);
        assert_eq!(bars.iter().map(|b| b.2).sum::<u64>(), 4);
        assert_eq!(bars[0].2, 1);
        assert_eq!(bars[1].2, 3);
        assert_eq!(compact(1_234_567.0), "1.2M");
        assert_eq!(compact(0.25), "0.25");
    }
}
