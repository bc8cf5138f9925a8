//! The report document.

use std::fmt::Write;

use crate::chart::Chart;

/// One run's (or one swarm's) report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub title: String,
    pub passed: bool,
    /// Every failed check, as the oracle or the run said it.
    pub failures: Vec<String>,
    /// (name, value) pairs shown under the verdict: seed, replay command, duration, …
    pub facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

/// A part of the report, in order.
#[derive(Debug, Clone)]
pub enum Section {
    Heading(String),
    Chart(Chart),
    /// A table: header cells, then rows.
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// Preformatted text (a plan, a trace).
    Text {
        title: String,
        text: String,
    },
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#1d232b;max-width:960px;margin:0 auto;padding:16px}\
h1{font-size:20px}h2{font-size:16px;margin-top:24px}\
.verdict{padding:10px 14px;border-radius:6px;font-weight:700;font-size:16px}\
.pass{background:#e6f4ea;color:#137333}.fail{background:#fce8e6;color:#c5221f}\
ul.failures li{font-family:ui-monospace,monospace;font-size:12px;color:#c5221f}\
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{text-align:left;padding:3px 10px;border-bottom:1px solid #eceef1}\
td.fact{color:#56606b}code,pre{font-family:ui-monospace,monospace;font-size:12px}\
pre{background:#f6f7f9;padding:8px;overflow-x:auto}figure{margin:10px 0}figcaption{font-weight:600;margin-bottom:2px}\
.legend{font-size:12px;color:#56606b}.shade{background:#fbe3b4;padding:0 6px}";

impl Report {
    pub fn new(title: impl Into<String>, passed: bool) -> Report {
        Report { title: title.into(), passed, ..Report::default() }
    }

    pub fn fact(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Report {
        self.facts.push((name.to_owned(), value.to_string()));
        self
    }

    /// The whole document.
    pub fn to_html(&self) -> String {
        let mut out = String::new();
        let title = escape(&self.title);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
        );
        let (class, word) = if self.passed { ("pass", "PASS") } else { ("fail", "FAIL") };
        let _ = writeln!(out, "<div class=\"verdict {class}\" id=\"verdict\">{word}</div>");
        if !self.failures.is_empty() {
            out.push_str("<ul class=\"failures\" id=\"failures\">\n");
            for failure in &self.failures {
                let _ = writeln!(out, "<li>{}</li>", escape(failure));
            }
            out.push_str("</ul>\n");
        }
        out.push_str("<table id=\"facts\">\n");
        for (name, value) in &self.facts {
            let _ = writeln!(
                out,
                "<tr><td class=\"fact\">{}</td><td><code>{}</code></td></tr>",
                escape(name),
                escape(value)
            );
        }
        out.push_str("</table>\n");
        if self.sections.iter().any(|s| matches!(s, Section::Chart(Chart::Timeline { .. }))) {
            out.push_str(
                "<p class=\"legend\"><span class=\"shade\">shaded</span>: a fault's window; \
                 thin grey lines: a client caught up again after the last fault healed.</p>\n",
            );
        }
        for section in &self.sections {
            match section {
                Section::Heading(text) => {
                    let _ = writeln!(out, "<h2>{}</h2>", escape(text));
                }
                Section::Chart(chart) => {
                    let _ = writeln!(
                        out,
                        "<figure class=\"chart\"><figcaption>{}</figcaption>{}</figure>",
                        escape(chart.title()),
                        chart.to_svg()
                    );
                }
                Section::Table { header, rows } => {
                    out.push_str("<table>\n<tr>");
                    for cell in header {
                        let _ = write!(out, "<th>{}</th>", escape(cell));
                    }
                    out.push_str("</tr>\n");
                    for row in rows {
                        out.push_str("<tr>");
                        for cell in row {
                            let _ = write!(out, "<td>{}</td>", escape(cell));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</table>\n");
                }
                Section::Text { title, text } => {
                    let _ = writeln!(out, "<h2>{}</h2><pre>{}</pre>", escape(title), escape(text));
                }
            }
        }
        out.push_str("</body></html>\n");
        out
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::Series;

    #[test]
    fn a_failed_report_leads_with_its_failures_escaped() {
        let mut report = Report::new("plan <x>", false);
        report.failures.push("client-0: event 1-2 <lost>".into());
        report.fact("seed", 7);
        report.sections.push(Section::Chart(Chart::Timeline {
            title: "streams".into(),
            y_label: "n".into(),
            span: 1.0,
            series: vec![Series::new("", vec![(0.0, 1.0), (1.0, 2.0)])],
            windows: vec![],
            marks: vec![],
        }));
        let html = report.to_html();
        assert!(html.contains("<div class=\"verdict fail\" id=\"verdict\">FAIL</div>"));
        assert!(html.contains("client-0: event 1-2 &lt;lost&gt;"));
        assert!(html.contains("<title>plan &lt;x&gt;</title>"));
        assert!(html.contains("<figcaption>streams</figcaption><svg"));
        assert!(!html.contains("<script"), "a report needs no JavaScript");
        assert!(html.find("id=\"failures\"") < html.find("id=\"facts\""), "failures come first");
    }
}
