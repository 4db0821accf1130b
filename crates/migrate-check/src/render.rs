//! A [`Report`] in the four output formats, through the renderers of [`crate::diag`].

use std::fmt::Write;

use serde_json::{Value, json};

use crate::diag::{self, Format};
use crate::{Kind, Report, TOOL, Violation};

/// The report in `format`, as the text for stdout.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Human => human(report),
        Format::Json => diag::pretty(&to_json(report)),
        Format::Github => report.violations.iter().map(|v| diag::github(&v.diagnostic, TOOL.name)).collect(),
        Format::Sarif => diag::pretty(&sarif(report)),
    }
}

/// `1 violation`, `2 violations`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

/// Each violation rustc-style, a note per allowlisted member, then a one-line summary with the fix.
fn human(report: &Report) -> String {
    let mut out: String = report.violations.iter().map(|v| diag::human(&v.diagnostic)).collect();
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
        if !report.deprecated_found {
            let _ = writeln!(
                out,
                "note[migrate-check]: no package named `{}` is a member, a dependency or in Cargo.lock: if the \
                 migration is not finished, check the name",
                report.deprecated
            );
        }
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

/// A violation as the JSON report has it: the kind's fields, then the diagnostic's location, message and help.
fn violation_json(v: &Violation) -> Value {
    let d = &v.diagnostic;
    let mut value = json!({
        "package": v.package,
        "kind": v.kind.as_str(),
        "dependency_kind": v.dependency_kind,
        "target": v.target,
        "optional": v.optional,
        "rename": v.rename,
        "via": v.via,
        "file": d.file,
        "line": d.line,
        "column": d.column,
    });
    // Present (and true) on doctest occurrences only.
    if v.doctest {
        value["doctest"] = json!(true);
    }
    value["message"] = json!(d.message);
    value["help"] = json!(d.help);
    value
}

fn to_json(report: &Report) -> Value {
    json!({
        "deprecated": report.deprecated,
        "replacement": report.replacement,
        "packages_checked": report.packages_checked,
        "deprecated_found": report.deprecated_found,
        "violations": report.violations.iter().map(violation_json).collect::<Vec<_>>(),
        "allowed": report.allowed.iter().map(|a| json!({
            "package": a.package,
            "reason": a.reason,
            "violations": a.violations.iter().map(violation_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The SARIF rules of the check, one per violation kind.
pub(crate) fn rules(deprecated: &str, replacement: &str) -> Vec<diag::Rule> {
    Kind::ALL.iter().map(|kind| kind.rule(deprecated, replacement)).collect()
}

/// SARIF 2.1.0 with one rule per kind; allowed violations are results with an external suppression.
fn sarif(report: &Report) -> Value {
    let properties: Vec<Value> = report
        .violations
        .iter()
        .chain(report.allowed.iter().flat_map(|a| &a.violations))
        .map(|v| json!({ "package": v.package }))
        .collect();
    let mut results: Vec<diag::SarifResult<'_>> = Vec::new();
    let mut props = properties.iter();
    for v in &report.violations {
        let properties = props.next().expect("one per violation");
        results.push(diag::SarifResult { diagnostic: &v.diagnostic, suppression: None, properties });
    }
    for allowed in &report.allowed {
        for v in &allowed.violations {
            let properties = props.next().expect("one per violation");
            results.push(diag::SarifResult {
                diagnostic: &v.diagnostic,
                suppression: Some(&allowed.reason),
                properties,
            });
        }
    }
    diag::sarif(&TOOL, &rules(&report.deprecated, &report.replacement), &results, &[])
}
