//! A [`Report`] in the four output formats, through the renderers of [`crate::diag`].

use std::fmt::Write;

use serde_json::{Value, json};

use crate::diag::{self, Format};
use crate::{Kind, Report, TOOL, Violation};

/// The report in `format`, as the text for stdout.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Human => human(report),
        Format::Json => json_report(report),
        Format::Github => report.violations.iter().map(|v| diag::github(&v.diagnostic, TOOL.name)).collect(),
        Format::Sarif => diag::pretty(&sarif(report)),
    }
}

/// The report in `format`, written to `out` as it is rendered: a JSON report of thousands of violations is written
/// in parts, never held whole (which a report of megabytes made the check wait for). Stops at the first error.
pub(crate) fn write_report(report: &Report, format: Format, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let mut w =
                JsonWriter { out: String::with_capacity(64 * 1024), empty: Vec::new(), sink: Some(out), failed: None };
            json_into(&mut w, report);
            w.flush()
        }
        _ => out.write_all(render(report, format).as_bytes()),
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

/// The JSON report, written directly (a report can hold tens of thousands of violations: building a
/// `serde_json::Value` tree for it was a sixth of the check's time). The output is what `serde_json`'s pretty printer
/// writes for the same object, key for key; a test holds the two together.
fn json_report(report: &Report) -> String {
    let capacity = 256 + report.violations.len() * 512;
    let mut w = JsonWriter { out: String::with_capacity(capacity), empty: Vec::new(), sink: None, failed: None };
    json_into(&mut w, report);
    w.out
}

/// The JSON report, into `w`.
fn json_into(w: &mut JsonWriter<'_>, report: &Report) {
    w.open('{');
    w.field("deprecated", &report.deprecated.as_str());
    w.field("replacement", &report.replacement.as_str());
    w.field("packages_checked", &report.packages_checked);
    w.field("deprecated_found", &report.deprecated_found);
    w.key("violations");
    w.violations(&report.violations);
    w.key("allowed");
    w.open('[');
    for allowed in &report.allowed {
        w.item();
        w.open('{');
        w.field("package", &allowed.package.as_str());
        w.field("reason", &allowed.reason.as_str());
        w.key("violations");
        w.violations(&allowed.violations);
        w.close('}');
    }
    w.close(']');
    w.close('}');
    w.out.push('\n');
}

/// A JSON value [`JsonWriter::field`] can write.
trait JsonValue {
    fn write(&self, w: &mut JsonWriter);
}

impl JsonValue for &str {
    fn write(&self, w: &mut JsonWriter) {
        // serde_json escapes `"`, `\` and control characters; most strings have none.
        // Without a short cut, so that the check runs over whole words at a time.
        let needs_escape = self.bytes().fold(false, |found, b| found | (b < 0x20) | (b == b'"') | (b == b'\\'));
        if !needs_escape {
            w.out.push('"');
            w.out.push_str(self);
            w.out.push('"');
        } else {
            w.out.push_str(&serde_json::to_string(self).unwrap_or_default());
        }
    }
}

impl JsonValue for usize {
    fn write(&self, w: &mut JsonWriter) {
        use std::fmt::Write;
        let _ = write!(w.out, "{self}");
    }
}

impl JsonValue for bool {
    fn write(&self, w: &mut JsonWriter) {
        w.out.push_str(if *self { "true" } else { "false" });
    }
}

impl<T: JsonValue> JsonValue for Option<T> {
    fn write(&self, w: &mut JsonWriter) {
        match self {
            Some(value) => value.write(w),
            None => w.out.push_str("null"),
        }
    }
}

impl JsonValue for &[String] {
    fn write(&self, w: &mut JsonWriter) {
        w.open('[');
        for item in *self {
            w.item();
            item.as_str().write(w);
        }
        w.close(']');
    }
}

/// Pretty JSON as `serde_json` writes it: two spaces a level, `"key": value`, `[]` and `{}` when empty.
struct JsonWriter<'s> {
    out: String,
    /// One entry per open object or array: whether nothing is in it yet.
    empty: Vec<bool>,
    /// Where the text goes as it is written, if anywhere: `out` is then a buffer, passed on at each part.
    sink: Option<&'s mut dyn std::io::Write>,
    /// The sink's first error: nothing is written after it.
    failed: Option<std::io::Error>,
}

impl JsonWriter<'_> {
    /// Passes what is buffered on to the sink, if there is one (else it stays: the buffer is the output). After an
    /// error, what is written is dropped.
    fn pass_on(&mut self) {
        let text = std::mem::take(&mut self.out);
        let passed = self.pass_on_text(&text).is_ok();
        self.out = text;
        if passed {
            self.out.clear();
        }
    }

    /// Passes `text` on to the sink: `Ok(())` once it is there or dropped after an earlier error, `Err(())` without a
    /// sink. The first error is kept for [`JsonWriter::flush`].
    fn pass_on_text(&mut self, text: &str) -> Result<(), ()> {
        let Some(sink) = self.sink.as_mut() else { return Err(()) };
        if self.failed.is_none()
            && let Err(err) = sink.write_all(text.as_bytes())
        {
            self.failed = Some(err);
        }
        Ok(())
    }

    /// The end: passes the rest on; the first error met, if any.
    fn flush(&mut self) -> std::io::Result<()> {
        self.pass_on();
        match (self.failed.take(), self.sink.as_mut()) {
            (Some(err), _) => Err(err),
            (None, Some(sink)) => sink.flush(),
            (None, None) => Ok(()),
        }
    }

    fn open(&mut self, bracket: char) {
        self.out.push(bracket);
        self.empty.push(true);
    }

    fn close(&mut self, bracket: char) {
        if self.empty.pop() == Some(false) {
            self.newline();
        }
        self.out.push(bracket);
    }

    fn newline(&mut self) {
        const INDENT: &str = "                ";
        self.out.push('\n');
        let width = 2 * self.empty.len();
        if width <= INDENT.len() {
            self.out.push_str(&INDENT[..width]);
        } else {
            self.out.extend(std::iter::repeat_n(' ', width));
        }
    }

    /// Starts the next array element or object entry.
    fn item(&mut self) {
        if let Some(empty) = self.empty.last_mut() {
            if !*empty {
                self.out.push(',');
            }
            *empty = false;
        }
        self.newline();
    }

    /// `key` is one of the report's own keys: plain ASCII, nothing to escape.
    fn key(&mut self, key: &str) {
        self.item();
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\": ");
    }

    fn field(&mut self, key: &str, value: &impl JsonValue) {
        self.key(key);
        value.write(self);
    }

    /// An array of violations, each with its kind's fields, then where and what. Thousands are written on all cores:
    /// this writer writes the first part itself while each other core writes one of the others into a writer that
    /// starts where this one is, and the parts are then appended in order (so only they are copied, and this
    /// writer's buffer fills while the others are written).
    fn violations(&mut self, violations: &[Violation]) {
        self.open('[');
        const PART: usize = 1024;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let parts = threads.min(violations.len().div_ceil(PART)).max(1);
        let part_len = violations.len().div_ceil(parts);
        let mut parts = violations.chunks(part_len.max(1));
        let first = parts.next().unwrap_or_default();
        let others: Vec<&[Violation]> = parts.collect();
        let continued = {
            let mut empty = self.empty.clone();
            if let Some(last) = empty.last_mut() {
                *last = false;
            }
            empty
        };
        std::thread::scope(|scope| {
            let workers: Vec<_> = others
                .iter()
                .map(|part| {
                    let empty = continued.clone();
                    scope.spawn(move || {
                        let mut w = JsonWriter {
                            out: String::with_capacity(part.len() * 512),
                            empty,
                            sink: None,
                            failed: None,
                        };
                        for v in *part {
                            w.violation(v);
                        }
                        w.out
                    })
                })
                .collect();
            for v in first {
                self.violation(v);
                // With a sink, the buffer is passed on every 64 KiB.
                if self.out.len() >= 64 * 1024 {
                    self.pass_on();
                }
            }
            for worker in workers {
                let text = worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                // With a sink, each part is passed on as it is; else the parts are joined.
                self.pass_on();
                if self.pass_on_text(&text).is_err() {
                    self.out.push_str(&text);
                }
            }
        });
        if !violations.is_empty()
            && let Some(empty) = self.empty.last_mut()
        {
            *empty = false;
        }
        self.close(']');
    }

    fn violation(&mut self, v: &Violation) {
        let d = &v.diagnostic;
        self.item();
        self.open('{');
        self.field("package", &v.package.as_str());
        self.field("kind", &v.kind.as_str());
        self.field("dependency_kind", &v.dependency_kind);
        self.field("target", &v.target.as_deref());
        self.field("optional", &v.optional);
        self.field("rename", &v.rename.as_deref());
        self.field("via", &v.via.as_deref());
        self.field("file", &d.file.as_deref());
        self.field("line", &d.line);
        self.field("column", &d.column);
        // Present (and true) on doctest occurrences only.
        if v.doctest {
            self.field("doctest", &true);
        }
        self.field("message", &d.message.as_str());
        self.field("help", &d.help.as_deref());
        self.close('}');
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diagnostic;
    use crate::{Allowed, Kind};

    /// The report written directly is what serde_json's pretty printer writes for the same object.
    #[test]
    fn the_json_writer_writes_what_serde_json_writes() {
        let violation = |kind: Kind, via: Option<Vec<String>>, doctest: bool| Violation {
            package: "a\"b".to_owned(),
            kind,
            dependency_kind: Some("dev"),
            target: Some("cfg(unix)".to_owned()),
            optional: Some(true),
            rename: None,
            via,
            doctest,
            diagnostic: Diagnostic::error(kind.as_str(), "tab\there, é and \\ and \u{1}")
                .at("crates/a/Cargo.toml", 3, Some(7))
                .with_help("do this"),
        };
        let report = Report {
            deprecated: "old".to_owned(),
            replacement: "new".to_owned(),
            packages_checked: 3,
            deprecated_found: false,
            violations: vec![
                violation(Kind::Transitive, Some(vec!["a".to_owned(), "b".to_owned()]), false),
                violation(Kind::Source, None, true),
                violation(Kind::Transitive, Some(Vec::new()), false),
            ],
            allowed: vec![
                Allowed { package: "c".to_owned(), reason: "why".to_owned(), violations: Vec::new() },
                Allowed {
                    package: "d".to_owned(),
                    reason: "because".to_owned(),
                    violations: vec![violation(Kind::Dependency, None, false)],
                },
            ],
        };
        assert_eq!(json_report(&report), diag::pretty(&to_json(&report)));
        // Enough violations to be written in chunks on all cores, in the array and in an allowed entry.
        let many: Vec<Violation> = (0..2500)
            .map(|k| violation([Kind::Source, Kind::Dependency, Kind::Transitive][k % 3], None, k % 7 == 0))
            .collect();
        let allowed = vec![Allowed { package: "e".to_owned(), reason: "r".to_owned(), violations: many.clone() }];
        let large = Report { violations: many, allowed, ..report.clone() };
        assert_eq!(json_report(&large), diag::pretty(&to_json(&large)));
        let empty = Report { violations: Vec::new(), allowed: Vec::new(), ..report.clone() };
        assert_eq!(json_report(&empty), diag::pretty(&to_json(&empty)));

        // Written to a sink as it is rendered: the same bytes, in every format.
        for report in [&report, &large, &empty] {
            for format in [Format::Json, Format::Human, Format::Github, Format::Sarif] {
                let mut written = Vec::new();
                write_report(report, format, &mut written).expect("a Vec takes everything");
                assert_eq!(String::from_utf8(written).expect("UTF-8"), render(report, format));
            }
        }
        // A sink that fails (a closed pipe) ends the writing with its error, after nothing more than it took.
        struct Closed(usize);
        impl std::io::Write for Closed {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for room in [0, 100, 70_000, 1_000_000] {
            let mut sink = Closed(room);
            let err = write_report(&large, Format::Json, &mut sink).expect_err("the pipe closed");
            assert_eq!((err.kind(), sink.0), (std::io::ErrorKind::BrokenPipe, 0));
        }
    }

    /// The same object through `serde_json::Value`.
    fn to_json(report: &Report) -> Value {
        let violation = |v: &Violation| {
            let d = &v.diagnostic;
            let mut value = json!({
                "package": v.package, "kind": v.kind.as_str(), "dependency_kind": v.dependency_kind,
                "target": v.target, "optional": v.optional, "rename": v.rename, "via": v.via,
                "file": d.file, "line": d.line, "column": d.column,
            });
            if v.doctest {
                value["doctest"] = json!(true);
            }
            value["message"] = json!(d.message);
            value["help"] = json!(d.help);
            value
        };
        json!({
            "deprecated": report.deprecated,
            "replacement": report.replacement,
            "packages_checked": report.packages_checked,
            "deprecated_found": report.deprecated_found,
            "violations": report.violations.iter().map(violation).collect::<Vec<_>>(),
            "allowed": report.allowed.iter().map(|a| json!({
                "package": a.package,
                "reason": a.reason,
                "violations": a.violations.iter().map(violation).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}
