//! The four output formats of a [`Report`].

use std::fmt::Write;

use serde_json::{Value, json};

use super::{Format, Kind, Report, Violation};

pub(crate) fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Human => human(report),
        Format::Json => {
            let mut out = serde_json::to_string_pretty(&to_json(report)).unwrap_or_default();
            out.push('\n');
            out
        }
        Format::Github => github(report),
        Format::Sarif => {
            let mut out = serde_json::to_string_pretty(&sarif(report)).unwrap_or_default();
            out.push('\n');
            out
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

/// rustc-style: the message, ` --> file:line:col`, the line with a caret under the name, the fix; then a summary.
fn human(report: &Report) -> String {
    let mut out = String::new();
    for v in &report.violations {
        let gutter = v.line.to_string().len();
        let pad = " ".repeat(gutter);
        let before: String = v.line_text.chars().take(v.column.saturating_sub(1)).collect();
        let indent = before.replace('\t', "    ").chars().count();
        let _ = writeln!(out, "error[migrate-check]: {}", v.message);
        let _ = writeln!(out, "{pad}--> {}:{}:{}", v.file, v.line, v.column);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{} | {}", v.line, v.line_text.replace('\t', "    ").trim_end());
        let _ = writeln!(out, "{pad} | {}{}", " ".repeat(indent), "^".repeat(v.width.max(1)));
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{pad} = help: {}", v.help);
        out.push('\n');
    }
    for allowed in &report.allowed {
        let _ = writeln!(
            out,
            "note[migrate-check]: {} in `{}` allowed: {}",
            plural(allowed.violations.len(), "violation"),
            allowed.package,
            allowed.reason
        );
    }
    let checked = plural(report.packages_checked, "checked package");
    if report.violations.is_empty() {
        let _ = writeln!(out, "migrate-check: ok: {checked}, none depends on or imports `{}`", report.deprecated);
    } else {
        let counts: Vec<String> = Kind::ALL
            .iter()
            .map(|kind| (kind, report.violations.iter().filter(|v| v.kind == *kind).count()))
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{n} {}", kind.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "error: migrate-check found {} in {checked} ({}); move them from `{}` to `{}`",
            plural(report.violations.len(), "violation"),
            counts.join(", "),
            report.deprecated,
            report.replacement
        );
    }
    out
}

fn violation_json(v: &Violation) -> Value {
    json!({
        "package": v.package,
        "kind": v.kind.as_str(),
        "dependency_kind": v.dependency_kind,
        "target": v.target,
        "optional": v.optional,
        "rename": v.rename,
        "via": v.via,
        "file": v.file,
        "line": v.line,
        "column": v.column,
        "message": v.message,
        "help": v.help,
    })
}

fn to_json(report: &Report) -> Value {
    json!({
        "deprecated": report.deprecated,
        "replacement": report.replacement,
        "packages_checked": report.packages_checked,
        "violations": report.violations.iter().map(violation_json).collect::<Vec<_>>(),
        "allowed": report.allowed.iter().map(|a| json!({
            "package": a.package,
            "reason": a.reason,
            "violations": a.violations.iter().map(violation_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// GitHub workflow commands: one `::error` line per violation (allowed ones are not reported).
fn github(report: &Report) -> String {
    let escape_data = |s: &str| s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let escape_property = |s: &str| escape_data(s).replace(':', "%3A").replace(',', "%2C");
    let mut out = String::new();
    for v in &report.violations {
        let _ = writeln!(
            out,
            "::error file={},line={},col={},title={}::{}",
            escape_property(&v.file),
            v.line,
            v.column,
            escape_property(&format!("migrate-check {}", v.kind.as_str())),
            escape_data(&format!("{}\nhelp: {}", v.message, v.help))
        );
    }
    out
}

const RULES: [(Kind, &str, &str); 4] = [
    (
        Kind::Dependency,
        "DeprecatedDependency",
        "A member's Cargo.toml declares the deprecated package (any table, renamed, inherited or optional).",
    ),
    (
        Kind::Transitive,
        "TransitiveDeprecatedDependency",
        "A member reaches the deprecated package through other packages.",
    ),
    (Kind::Source, "DeprecatedCratePath", "A member's Rust source names the deprecated crate as the root of a path."),
    (Kind::StaleAllow, "StaleAllowEntry", "An allow entry names a package that has no violation or is not a member."),
];

/// SARIF 2.1.0 with one rule per kind; allowed violations are results with an external suppression.
fn sarif(report: &Report) -> Value {
    let rule_index = |kind: Kind| RULES.iter().position(|(k, _, _)| *k == kind).unwrap_or(0);
    let result = |v: &Violation, reason: Option<&str>| {
        let mut result = json!({
            "ruleId": v.kind.as_str(),
            "ruleIndex": rule_index(v.kind),
            "level": "error",
            "message": { "text": format!("{}\nhelp: {}", v.message, v.help) },
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": { "uri": v.file, "uriBaseId": "%SRCROOT%" },
                    "region": { "startLine": v.line, "startColumn": v.column },
                }
            }],
            "properties": { "package": v.package },
        });
        if let Some(reason) = reason {
            result["suppressions"] = json!([{ "kind": "external", "justification": reason }]);
        }
        result
    };
    let mut results: Vec<Value> = report.violations.iter().map(|v| result(v, None)).collect();
    for allowed in &report.allowed {
        results.extend(allowed.violations.iter().map(|v| result(v, Some(&allowed.reason))));
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "migrate-check",
                "rules": RULES.iter().map(|(kind, name, text)| json!({
                    "id": kind.as_str(),
                    "name": name,
                    "shortDescription": { "text": text },
                    "help": { "text": match kind {
                        Kind::StaleAllow => "Remove the entry from `allow` in [workspace.metadata.migrate-check].".to_owned(),
                        _ => format!("Depend on and import `{}` instead of `{}`.", report.replacement, report.deprecated),
                    } },
                    "defaultConfiguration": { "level": "error" },
                })).collect::<Vec<_>>(),
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}
