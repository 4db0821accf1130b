//! One diagnostic type for everything the tool reports (violations, configuration and parse errors, and the findings
//! of other tools built on this library), and its four renderers: human (rustc-style), JSON, GitHub workflow commands
//! and SARIF 2.1.0.
//!
//! A [`Diagnostic`] knows nothing of the report it belongs to: the check's report adds its own fields around it (see
//! `docs/migrate-check.md`), and a tool lists its [`Rule`]s once for SARIF.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde_json::{Value, json};

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something that fails the check (or made it impossible).
    Error,
    /// Worth a look; does not fail the check.
    Warning,
    /// Information only.
    Note,
}

impl Severity {
    /// The lowercase word rustc, GitHub and SARIF use for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// One finding or error, located in a file when it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// A short kebab-case identifier of what went wrong (`dependency`, `config`, `missing-deprecated`); the SARIF rule
    /// id.
    pub code: &'static str,
    /// How serious it is.
    pub severity: Severity,
    /// What is wrong, in one line.
    pub message: String,
    /// The file, relative to the workspace root with `/` separators where it is inside it.
    pub file: Option<String>,
    /// 1-based line in `file`.
    pub line: Option<usize>,
    /// 1-based column in `line`, in characters.
    pub column: Option<usize>,
    /// How many characters the caret underlines (at least 1).
    pub width: usize,
    /// The text of `line`, for the human renderer.
    pub source_line: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with `code` and `message`, not located yet.
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            file: None,
            line: None,
            column: None,
            width: 1,
            source_line: None,
            help: None,
        }
    }

    /// Locates the diagnostic in `file` (no line).
    #[must_use]
    pub fn in_file(mut self, file: impl Into<String>) -> Diagnostic {
        self.file = Some(file.into());
        self
    }

    /// Locates the diagnostic at `line` and `column` (1-based) of `file`.
    #[must_use]
    pub fn at(mut self, file: impl Into<String>, line: usize, column: Option<usize>) -> Diagnostic {
        self.file = Some(file.into());
        self.line = Some(line);
        self.column = column;
        self
    }

    /// Adds the source line and the width of the caret under the column.
    #[must_use]
    pub fn with_source(mut self, source_line: impl Into<String>, width: usize) -> Diagnostic {
        self.source_line = Some(source_line.into());
        self.width = width.max(1);
        self
    }

    /// Adds what to do about it.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Puts `context` in front of the message (`context: message`), for a caller that knows what was being done.
    #[must_use]
    pub fn with_context(mut self, context: &str) -> Diagnostic {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// `file:line:column` with the parts that are known, or `None` without a file.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        Some(match (self.line, self.column) {
            (Some(line), Some(column)) => format!("{file}:{line}:{column}"),
            (Some(line), None) => format!("{file}:{line}"),
            _ => file.clone(),
        })
    }
}

/// One line: `error: file:line:column: message` (and `; help` when there is one). This is how a reason the check
/// could not run is printed on stderr.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity.as_str())?;
        if let Some(location) = self.location() {
            write!(f, "{location}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "; {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// An output format of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// rustc-style diagnostics with the source line, a caret and the help, then a summary.
    #[default]
    Human,
    /// One JSON object.
    Json,
    /// GitHub Actions workflow commands (`::error file=..,line=..::message`).
    Github,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "human" => Ok(Format::Human),
            "json" => Ok(Format::Json),
            "github" => Ok(Format::Github),
            "sarif" => Ok(Format::Sarif),
            other => Err(format!("unknown format `{other}` (expected human, json, github or sarif)")),
        }
    }
}

/// rustc-style: `error[code]: message`, ` --> file:line:col`, the source line with a caret under the column, and
/// `= help: ...`; a blank line ends it. Parts that are unknown are left out.
pub fn human(diagnostic: &Diagnostic) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}[{}]: {}", diagnostic.severity.as_str(), diagnostic.code, diagnostic.message);
    let gutter = diagnostic.line.map_or(0, |line| line.to_string().len());
    let pad = " ".repeat(gutter);
    if let Some(location) = diagnostic.location() {
        let _ = writeln!(out, "{pad}--> {location}");
    }
    if let (Some(line), Some(text)) = (diagnostic.line, &diagnostic.source_line) {
        let column = diagnostic.column.unwrap_or(1);
        let before: String = text.chars().take(column.saturating_sub(1)).collect();
        let indent = before.replace('\t', "    ").chars().count();
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{line} | {}", text.replace('\t', "    ").trim_end());
        let _ = writeln!(out, "{pad} | {}{}", " ".repeat(indent), "^".repeat(diagnostic.width.max(1)));
        let _ = writeln!(out, "{pad} |");
    }
    if let Some(help) = &diagnostic.help {
        let _ = writeln!(out, "{pad} = help: {help}");
    }
    out.push('\n');
    out
}

/// The fields every JSON rendering of a diagnostic has: `code`, `severity`, `message`, `file`, `line`, `column`,
/// `help` (unknown ones are `null`).
pub fn json(diagnostic: &Diagnostic) -> Value {
    json!({
        "code": diagnostic.code,
        "severity": diagnostic.severity.as_str(),
        "message": diagnostic.message,
        "file": diagnostic.file,
        "line": diagnostic.line,
        "column": diagnostic.column,
        "help": diagnostic.help,
    })
}

/// One GitHub workflow command: `::error file=..,line=..,col=..,title=<tool> <code>::message` (with the help on a
/// second line of the message), escaped as the runner expects.
pub fn github(diagnostic: &Diagnostic, tool: &str) -> String {
    let escape_data = |s: &str| s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let escape_property = |s: &str| escape_data(s).replace(':', "%3A").replace(',', "%2C");
    let mut properties = Vec::new();
    if let Some(file) = &diagnostic.file {
        properties.push(format!("file={}", escape_property(file)));
    }
    if let Some(line) = diagnostic.line {
        properties.push(format!("line={line}"));
    }
    if let Some(column) = diagnostic.column {
        properties.push(format!("col={column}"));
    }
    properties.push(format!("title={}", escape_property(&format!("{tool} {}", diagnostic.code))));
    let mut message = diagnostic.message.clone();
    if let Some(help) = &diagnostic.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    format!("::{} {}::{}\n", diagnostic.severity.as_str(), properties.join(","), escape_data(&message))
}

/// The tool that produced a SARIF log.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// Its name, such as `migrate-check`.
    pub name: &'static str,
    /// Its version (SemVer).
    pub version: &'static str,
    /// Where its documentation lives.
    pub information_uri: &'static str,
}

/// A kind of finding a tool reports, described once in a SARIF log.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The [`Diagnostic::code`] of its findings.
    pub id: &'static str,
    /// A PascalCase name.
    pub name: &'static str,
    /// One sentence: what it finds.
    pub description: &'static str,
    /// What to do about a finding.
    pub help: String,
    /// Where the rule is documented, if anywhere.
    pub help_uri: Option<String>,
}

/// One SARIF result: a diagnostic, suppressed with a justification when it was allowed on purpose, with extra
/// properties (a JSON object, or `Value::Null` for none).
#[derive(Debug, Clone, Copy)]
pub struct SarifResult<'a> {
    /// The finding.
    pub diagnostic: &'a Diagnostic,
    /// Why it is allowed, when it is.
    pub suppression: Option<&'a str>,
    /// Extra properties, such as the package it belongs to.
    pub properties: &'a Value,
}

/// A SARIF 2.1.0 log of one run: `rules` in the driver, one result per finding, and `errors` (diagnostics that kept
/// the tool from finishing) as tool execution notifications, which also mark the run as not successful. Results'
/// files are relative to the analysed root (`uriBaseId` `%SRCROOT%`); errors' files are as the user named them.
pub fn sarif(tool: &Tool, rules: &[Rule], results: &[SarifResult<'_>], errors: &[Diagnostic]) -> Value {
    let level = |severity: Severity| severity.as_str();
    let message = |d: &Diagnostic| match &d.help {
        Some(help) => format!("{}\nhelp: {help}", d.message),
        None => d.message.clone(),
    };
    // Results name files relative to the analysed root (`%SRCROOT%`); errors name them as the user sees them.
    let location_of = |d: &Diagnostic, root_relative: bool| -> Value {
        let Some(file) = &d.file else { return json!([]) };
        let mut artifact = json!({ "uri": file });
        if root_relative {
            artifact["uriBaseId"] = json!("%SRCROOT%");
        }
        let mut location = json!({ "physicalLocation": { "artifactLocation": artifact } });
        if let Some(line) = d.line {
            let mut region = json!({ "startLine": line });
            if let Some(column) = d.column {
                region["startColumn"] = json!(column);
            }
            location["physicalLocation"]["region"] = region;
        }
        json!([location])
    };
    let results: Vec<Value> = results
        .iter()
        .map(|result| {
            let d = result.diagnostic;
            let mut value = json!({ "ruleId": d.code });
            if let Some(index) = rules.iter().position(|rule| rule.id == d.code) {
                value["ruleIndex"] = json!(index);
            }
            value["level"] = json!(level(d.severity));
            value["message"] = json!({ "text": message(d) });
            value["locations"] = location_of(d, true);
            if result.properties.is_object() {
                value["properties"] = result.properties.clone();
            }
            if let Some(reason) = result.suppression {
                value["suppressions"] = json!([{ "kind": "external", "justification": reason }]);
            }
            value
        })
        .collect();
    let notifications: Vec<Value> = errors
        .iter()
        .map(|d| {
            let mut value = json!({ "level": level(d.severity), "message": { "text": message(d) } });
            value["descriptor"] = json!({ "id": d.code });
            if d.file.is_some() {
                value["locations"] = location_of(d, false);
            }
            value
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": tool.name,
                "version": tool.version,
                "semanticVersion": tool.version,
                "informationUri": tool.information_uri,
                "rules": rules.iter().map(|rule| {
                    let mut value = json!({
                        "id": rule.id,
                        "name": rule.name,
                        "shortDescription": { "text": rule.description },
                        "fullDescription": { "text": rule.description },
                        "help": { "text": rule.help },
                        "defaultConfiguration": { "level": "error" },
                    });
                    if let Some(uri) = &rule.help_uri {
                        value["helpUri"] = json!(uri);
                    }
                    value
                }).collect::<Vec<_>>(),
            }},
            "invocations": [{
                "executionSuccessful": errors.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

/// Renders a diagnostic that kept a tool from finishing in `format`, as the text for stdout: nothing for human (the
/// one line on stderr is [`Diagnostic`]'s `Display`), `{"error": {..}}` for JSON, one workflow command for GitHub, a
/// SARIF log with no results and the error as a tool execution notification.
pub fn render_error(diagnostic: &Diagnostic, format: Format, tool: &Tool, rules: &[Rule]) -> String {
    match format {
        Format::Human => String::new(),
        Format::Json => pretty(&json!({ "error": json(diagnostic) })),
        Format::Github => github(diagnostic, tool.name),
        Format::Sarif => pretty(&sarif(tool, rules, &[], std::slice::from_ref(diagnostic))),
    }
}

/// Pretty-printed JSON with a final newline.
pub fn pretty(value: &Value) -> String {
    let mut out = serde_json::to_string_pretty(value).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn located() -> Diagnostic {
        Diagnostic::error("source", "uses `old`")
            .at("src/lib.rs", 3, Some(5))
            .with_source("use old::X;", 3)
            .with_help("use `new` instead")
    }

    #[test]
    fn human_is_rustc_style() {
        assert_eq!(
            human(&located()),
            "error[source]: uses `old`\n --> src/lib.rs:3:5\n  |\n3 | use old::X;\n  |     ^^^\n  |\n  = help: use `new` instead\n\n"
        );
        assert_eq!(human(&Diagnostic::error("io", "no such file")), "error[io]: no such file\n\n");
    }

    #[test]
    fn one_line_display_names_the_location() {
        assert_eq!(located().to_string(), "error: src/lib.rs:3:5: uses `old`; use `new` instead");
        assert_eq!(
            Diagnostic::error("io", "no such file").in_file("a/Cargo.toml").to_string(),
            "error: a/Cargo.toml: no such file"
        );
    }

    #[test]
    fn github_escapes_properties_and_data() {
        let d = Diagnostic::error("config", "bad: 100%").at("a,b.toml", 2, None);
        assert_eq!(github(&d, "tool"), "::error file=a%2Cb.toml,line=2,title=tool config::bad: 100%25\n");
    }

    #[test]
    fn sarif_errors_are_notifications() {
        let tool = Tool { name: "t", version: "1.0.0", information_uri: "https://example.invalid/t" };
        let log = sarif(&tool, &[], &[], &[located()]);
        let run = &log["runs"][0];
        assert_eq!(run["invocations"][0]["executionSuccessful"], false);
        assert_eq!(run["invocations"][0]["toolExecutionNotifications"][0]["descriptor"]["id"], "source");
        assert_eq!(run["tool"]["driver"]["version"], "1.0.0");
        assert_eq!(run["results"], json!([]));
    }
}
