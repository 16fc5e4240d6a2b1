//! Rendering an engagement's findings into a report document: markdown, HTML (every piece of
//! user text escaped) or JSON. Findings come ordered most severe first, then by CVSS score.

use pwnbook_projections::engagements::EngagementRow;
use pwnbook_projections::findings::FindingRow;
use serde_json::{json, Value};

use crate::routes::findings::render as render_finding;
use crate::time::format_millis;

const SEVERITIES: &[&str] = &["critical", "high", "medium", "low", "info"];

pub struct Document<'a> {
    pub title: &'a str,
    pub engagement: &'a EngagementRow,
    pub findings: &'a [FindingRow],
    pub generated_at: i64,
}

/// `Content-Type` of each format's document.
pub fn content_type(format: &str) -> &'static str {
    match format {
        "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        _ => "text/markdown; charset=utf-8",
    }
}

pub fn render(format: &str, document: &Document<'_>) -> String {
    match format {
        "html" => html(document),
        "json" => json(document).to_string(),
        _ => markdown(document),
    }
}

fn counts(findings: &[FindingRow]) -> Vec<(&'static str, usize)> {
    SEVERITIES.iter().map(|s| (*s, findings.iter().filter(|f| f.severity == *s).count())).collect()
}

fn cvss_text(finding: &FindingRow) -> Option<String> {
    finding.cvss.as_ref().map(|c| format!("{:.1} (CVSS {}: {})", c.score, c.version, c.vector))
}

/// Titles go into headings and table cells: one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn markdown(d: &Document<'_>) -> String {
    let mut out = format!("# {}\n\n", one_line(d.title));
    out.push_str(&format!("Engagement: {}\n\n", one_line(&d.engagement.name)));
    if let Some(client) = &d.engagement.client_name {
        out.push_str(&format!("Client: {}\n\n", one_line(client)));
    }
    out.push_str(&format!(
        "Generated: {}\n\n## Summary\n\n| Severity | Findings |\n|---|---|\n",
        format_millis(d.generated_at)
    ));
    for (severity, count) in counts(d.findings) {
        out.push_str(&format!("| {severity} | {count} |\n"));
    }
    out.push_str("\n## Findings\n");
    for (i, f) in d.findings.iter().enumerate() {
        out.push_str(&format!("\n### {}. {}\n\n", i + 1, one_line(&f.title)));
        out.push_str(&format!("- Severity: {}\n- Status: {}\n", f.severity, f.status));
        if let Some(cvss) = cvss_text(f) {
            out.push_str(&format!("- CVSS: {cvss}\n"));
        }
        for (label, list) in [("CWE", &f.cwe), ("CVE", &f.cve), ("Affected targets", &f.affected_target_ids)]
        {
            if !list.is_empty() {
                out.push_str(&format!("- {label}: {}\n", list.join(", ")));
            }
        }
        for (label, text) in sections(f) {
            out.push_str(&format!("\n#### {label}\n\n{}\n", text.trim_end()));
        }
        if !f.references.is_empty() {
            out.push_str("\n#### References\n\n");
            for reference in &f.references {
                out.push_str(&format!("- <{reference}>\n"));
            }
        }
    }
    out
}

fn sections(f: &FindingRow) -> Vec<(&'static str, &str)> {
    [
        ("Description", &f.description),
        ("Impact", &f.impact),
        ("Steps to reproduce", &f.steps_to_reproduce),
        ("Remediation", &f.remediation),
    ]
    .into_iter()
    .filter_map(|(label, text)| text.as_deref().filter(|t| !t.trim().is_empty()).map(|t| (label, t)))
    .collect()
}

/// Escapes text for HTML element content and quoted attribute values.
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

fn html(d: &Document<'_>) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(d.title),
        escape(d.title)
    );
    out.push_str(&format!("<p>Engagement: {}</p>\n", escape(&d.engagement.name)));
    if let Some(client) = &d.engagement.client_name {
        out.push_str(&format!("<p>Client: {}</p>\n", escape(client)));
    }
    out.push_str(&format!(
        "<p>Generated: {}</p>\n<h2>Summary</h2>\n<table>\n<tr><th>Severity</th><th>Findings</th></tr>\n",
        format_millis(d.generated_at)
    ));
    for (severity, count) in counts(d.findings) {
        out.push_str(&format!("<tr><td>{severity}</td><td>{count}</td></tr>\n"));
    }
    out.push_str("</table>\n<h2>Findings</h2>\n");
    for (i, f) in d.findings.iter().enumerate() {
        out.push_str(&format!("<section>\n<h3>{}. {}</h3>\n<ul>\n", i + 1, escape(&f.title)));
        out.push_str(&format!(
            "<li>Severity: {}</li>\n<li>Status: {}</li>\n",
            escape(&f.severity),
            escape(&f.status)
        ));
        if let Some(cvss) = cvss_text(f) {
            out.push_str(&format!("<li>CVSS: {}</li>\n", escape(&cvss)));
        }
        for (label, list) in [("CWE", &f.cwe), ("CVE", &f.cve), ("Affected targets", &f.affected_target_ids)]
        {
            if !list.is_empty() {
                out.push_str(&format!("<li>{label}: {}</li>\n", escape(&list.join(", "))));
            }
        }
        out.push_str("</ul>\n");
        for (label, text) in sections(f) {
            out.push_str(&format!("<h4>{label}</h4>\n<pre>{}</pre>\n", escape(text)));
        }
        if !f.references.is_empty() {
            out.push_str("<h4>References</h4>\n<ul>\n");
            for reference in &f.references {
                let reference = escape(reference);
                out.push_str(&format!("<li><a href=\"{reference}\">{reference}</a></li>\n"));
            }
            out.push_str("</ul>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn json(d: &Document<'_>) -> Value {
    let summary: serde_json::Map<String, Value> =
        counts(d.findings).into_iter().map(|(s, n)| (s.to_owned(), json!(n))).collect();
    json!({
        "title": d.title,
        "engagement": {"id": d.engagement.id, "name": d.engagement.name, "clientName": d.engagement.client_name},
        "generatedAt": format_millis(d.generated_at),
        "summary": summary,
        "findings": d.findings.iter().map(render_finding).collect::<Vec<_>>(),
    })
}
