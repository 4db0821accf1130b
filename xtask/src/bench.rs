//! `cargo xtask bench [--quick]`: the project's benchmarks, one combined table.
//!
//! Its own figures compare `migrate-check` (the release build, run as a process like the tools it is compared with)
//! on a generated N-member workspace against `cargo metadata --format-version 1 --no-deps --offline` on the same
//! workspace, and against `cargo deny check bans` when it is installed: manifest-only (`--no-source`) and with the
//! source scan, at N = 300 and N = 1,500, the three run in turn, the median of 15 (7 at N = 1,500) rounds after one
//! warm-up round. `--quick`: N = 20, one run. Then it runs the other benchmarks of the workspace when they exist and collects their figures, and the
//! gateway's load figures (the [`gateway`] module: the gateway and a bare server as processes, load from a third;
//! then, where `redis-server` is installed, the gateway with its event log in Redis beside the in-memory log).
//!
//! Every figure is also one machine-readable line on stdout:
//! `BENCH\t<figure>\t<measured>\t<ratio>\t<target>\t<yes|no>`. Other benchmarks print the same lines; to add
//! one, append it to [`EXTERNAL`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod gateway;

const HELP: &str = "\
cargo xtask bench: run the benchmarks and print one table of their figures

USAGE:
    cargo xtask bench [--quick] [--only GROUP]
    cargo xtask bench --generate DIR N
    cargo xtask bench --generate-realistic DIR N

OPTIONS:
    --quick             small sizes and one repetition (a smoke test of the benchmarks, not a measurement)
    --only GROUP        only one group of figures: migrate-check, core-registry, chat-gateway (all of the
                        gateway's, Redis included) or chat-gateway-redis (only the gateway with Redis)
    --generate DIR N    only write the generated N-member workspace to DIR (to time other tools on it)
    --generate-realistic DIR N
                        the same for the workspace of realistic size and shape (320 members in the benchmark)
    -h, --help          print this help

Figures: migrate-check (manifest-only and with sources) against `cargo metadata --no-deps` on generated
300- and 1,500-member workspaces, then `cargo bench -p core-registry --bench registry` and
`cargo run --release -p chat-gateway --example replay`, then the gateway (`chat-gateway serve`) beside a bare
tokio-tungstenite server (`gateway-bare`), each its own process, under load from `gateway-load` at 100, 1,000
and 10,000 users (closed loop, and paced) and with 10,000 idle connections, then (where redis-server is
installed) the gateway with `--event-log redis://...` beside itself with the in-memory log: the same load at
100 and 1,000 users, and one session's messages replayed and followed on its own node and on a second one.
Each figure is also printed as
`BENCH\\t<figure>\\t<measured>\\t<ratio>\\t<target>\\t<yes|no>` on stdout. The exit status is 1 if the
gateway lost, misordered or crossed an event between users.
";

/// The `--only` group of the gateway's figures with its event log in Redis alone (`chat-gateway` runs them too).
const REDIS_GROUP: &str = "chat-gateway-redis";

/// Another benchmark of the workspace: how to tell it exists, and the cargo arguments that run it.
struct External {
    name: &'static str,
    /// What `--only` calls it.
    group: &'static str,
    /// Files (relative to the project root) of which one must exist for the benchmark to exist.
    probes: &'static [&'static str],
    cargo_args: &'static [&'static str],
}

const EXTERNAL: [External; 2] = [
    External {
        name: "core-registry event delivery",
        group: "core-registry",
        probes: &["crates/core-registry/benches/registry.rs", "crates/core-registry/benches/registry/main.rs"],
        cargo_args: &["bench", "-p", "core-registry", "--bench", "registry", "--"],
    },
    External {
        name: "chat-gateway replay log",
        group: "chat-gateway",
        probes: &["crates/chat-gateway/examples/replay.rs"],
        cargo_args: &["run", "--release", "-p", "chat-gateway", "--example", "replay", "--"],
    },
];

/// One row of the final table.
struct Row {
    figure: String,
    measured: String,
    ratio: String,
    target: String,
    met: String,
}

impl Row {
    fn bench_line(&self) -> String {
        format!("BENCH\t{}\t{}\t{}\t{}\t{}", self.figure, self.measured, self.ratio, self.target, self.met)
    }

    fn skipped(figure: &str, why: String) -> Row {
        Row { figure: figure.to_owned(), measured: why, ratio: "-".into(), target: "-".into(), met: "-".into() }
    }
}

/// What the command line asks for.
enum Mode {
    /// `only`: the one group of figures to run (`migrate-check` or an external benchmark's name).
    Run {
        quick: bool,
        only: Option<String>,
    },
    Generate {
        dir: PathBuf,
        members: usize,
        realistic: bool,
    },
}

fn parse_args(args: &[String]) -> Result<Option<Mode>, String> {
    use lexopt::prelude::*;
    let mut quick = false;
    let mut only = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|err| err.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("quick") => quick = true,
            Long("only") => {
                let group = parser.value().map_err(
                    |_| "`--only` needs a group: migrate-check, core-registry, chat-gateway or chat-gateway-redis",
                )?;
                let group = group.to_string_lossy().into_owned();
                if group != "migrate-check"
                    && group != REDIS_GROUP
                    && !EXTERNAL.iter().any(|external| external.group == group)
                {
                    return Err(format!(
                        "no group of figures is named `{group}` (there are migrate-check, core-registry, chat-gateway, \
                         chat-gateway-redis)"
                    ));
                }
                only = Some(group);
            }
            Long(flag @ ("generate" | "generate-realistic")) => {
                let realistic = flag == "generate-realistic";
                let mut values = parser.values().map_err(|_| "`--generate DIR N` needs a directory and a number")?;
                let (Some(dir), Some(members), None) = (values.next(), values.next(), values.next()) else {
                    return Err("`--generate DIR N` needs a directory and a number of members".to_owned());
                };
                let members = members.to_string_lossy();
                let members = members
                    .parse()
                    .map_err(|_| format!("`--generate DIR N` needs a number of members, not `{members}`"))?;
                return Ok(Some(Mode::Generate { dir: PathBuf::from(dir), members, realistic }));
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Some(Mode::Run { quick, only }))
}

/// Runs the command with its arguments (after `bench`).
pub(crate) fn main(args: &[String]) -> ExitCode {
    let (quick, only) = match crate::parsed_or_exit(parse_args(args), HELP, "bench") {
        Ok(Mode::Run { quick, only }) => (quick, only),
        Ok(Mode::Generate { dir, members, realistic }) => {
            let written =
                if realistic { generate_realistic(&dir, members).map(|_| ()) } else { generate(&dir, members) };
            return match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: cannot generate the workspace in {}: {err}", dir.display());
                    ExitCode::from(2)
                }
            };
        }
        Err(exit) => return exit,
    };
    let mut rows = Vec::new();
    let runs = |group: &str| only.as_deref().is_none_or(|only| only == group);
    if runs("migrate-check")
        && let Err(message) = migrate_check_figures(quick, &mut rows)
    {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    for external in EXTERNAL.iter().filter(|external| runs(external.group)) {
        run_external(external, quick, &mut rows);
    }
    let mut events_ok = true;
    let parts = gateway::Parts { load: runs("chat-gateway"), redis: runs("chat-gateway") || runs(REDIS_GROUP) };
    if parts.load || parts.redis {
        let figures = target_dir().and_then(|target_dir| gateway::figures(quick, &target_dir, parts, &mut rows));
        match figures {
            Ok(passed) => events_ok = passed,
            Err(message) => {
                eprintln!("bench: chat-gateway load failed: {message}");
                rows.push(Row::skipped("chat-gateway load", format!("failed: {message}")));
            }
        }
    }
    print!("{}", table(&rows));
    if events_ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the gateway lost, misordered or crossed events between users (see the table)");
        ExitCode::FAILURE
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The target directory this binary was built in (`target/debug/xtask` -> `target`).
fn target_dir() -> Result<PathBuf, String> {
    let current = std::env::current_exe().map_err(|err| format!("cannot find the xtask binary: {err}"))?;
    Ok(current.parent().and_then(Path::parent).ok_or("unexpected location of the xtask binary")?.to_owned())
}

/// The release build of this binary: itself when built with optimisations, else built now.
fn release_xtask() -> Result<PathBuf, String> {
    let current = std::env::current_exe().map_err(|err| format!("cannot find the xtask binary: {err}"))?;
    if !cfg!(debug_assertions) {
        return Ok(current);
    }
    let target_dir = target_dir()?;
    let target_dir = target_dir.as_path();
    eprintln!("bench: building xtask with --release");
    let status = Command::new(cargo())
        .current_dir(crate::project_root())
        .args(["build", "--release", "--quiet", "-p", "xtask", "--target-dir"])
        .arg(target_dir)
        .status()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !status.success() {
        return Err("`cargo build --release -p xtask` failed".to_owned());
    }
    Ok(target_dir.join("release").join(current.file_name().unwrap_or_default()))
}

fn migrate_check_figures(quick: bool, rows: &mut Vec<Row>) -> Result<(), String> {
    let xtask = release_xtask()?;
    let sizes: &[(usize, usize)] = if quick { &[(20, 1)] } else { &[(300, 15), (1500, 7)] };
    let deny_installed = Command::new(cargo())
        .args(["deny", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    for &(members, repetitions) in sizes {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}-{members}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        generate(&dir, members).map_err(|err| format!("cannot generate the workspace in {}: {err}", dir.display()))?;
        let manifest = dir.join("Cargo.toml");
        let manifest = manifest.to_str().ok_or("temp dir is not UTF-8")?;
        let check = |extra: &[&str]| {
            let mut command = Command::new(&xtask);
            command.args(["migrate-check", "--manifest-path", manifest, "--format", "json"]).args(extra);
            command
        };
        let mut metadata = Command::new(cargo());
        metadata.args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path", manifest]);
        let result = (|| {
            // Alternating, so that a change in the machine's load meets all three alike.
            let (mut manifest_only, mut with_sources) = (check(&["--no-source"]), check(&[]));
            let times = alternating(
                &mut [(&mut manifest_only, Some(1)), (&mut with_sources, Some(1)), (&mut metadata, Some(0))],
                repetitions,
            )?;
            let (manifest_only, with_sources, metadata) = (times[0], times[1], times[2]);
            let n = format!("N={members}");
            rows.push(ratio_row(
                &format!("migrate-check manifest-only vs cargo metadata, {n}"),
                manifest_only,
                metadata,
                10.0,
            ));
            rows.push(ratio_row(
                &format!("migrate-check with sources vs cargo metadata, {n}"),
                with_sources,
                metadata,
                3.0,
            ));
            let deny_figure = format!("migrate-check with sources vs cargo deny check bans, {n}");
            if deny_installed {
                let mut deny = Command::new(cargo());
                deny.args(["deny", "--manifest-path", manifest, "--offline", "check", "bans"]);
                match median(deny, repetitions, None) {
                    Ok(deny) => rows.push(ratio_row(&deny_figure, with_sources, deny, 1.0)),
                    Err(why) => rows.push(Row::skipped(&deny_figure, format!("skipped: {why}"))),
                }
            } else {
                rows.push(Row::skipped(&deny_figure, "skipped: cargo-deny is not installed".to_owned()));
            }
            Ok::<(), String>(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        for row in &rows[rows.len() - 3..] {
            println!("{}", row.bench_line());
        }
    }
    realistic_figures(&xtask, quick, deny_installed, rows)
}

/// The full check on a workspace of realistic size and shape ([`generate_realistic`]) against `cargo metadata
/// --no-deps` and against `grep -rc` of the crate's name over the same files (the cost of reading them), alternating
/// the three, the median of the repetitions; and the peak memory of the check and of `cargo metadata`, where GNU
/// `time` is installed.
fn realistic_figures(xtask: &Path, quick: bool, deny_installed: bool, rows: &mut Vec<Row>) -> Result<(), String> {
    let (members, repetitions) = if quick { (12, 1) } else { (320, 15) };
    let dir = std::env::temp_dir().join(format!("xtask-bench-realistic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shape = generate_realistic(&dir, members)
        .map_err(|err| format!("cannot generate the workspace in {}: {err}", dir.display()))?;
    let manifest = dir.join("Cargo.toml");
    let mut check = Command::new(xtask);
    check.args(["migrate-check", "--format", "json", "--manifest-path"]).arg(&manifest);
    let mut metadata = Command::new(cargo());
    metadata.args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"]).arg(&manifest);
    let mut grep = Command::new("grep");
    grep.args(["-rc", "--include=*.rs", "registry_compat"]).arg(&dir);
    let mut deny = Command::new(cargo());
    deny.args(["deny", "--offline", "--manifest-path"]).arg(&manifest).args(["check", "bans"]);
    let first = rows.len();
    let result = (|| {
        let times =
            alternating(&mut [(&mut check, Some(1)), (&mut metadata, Some(0)), (&mut grep, None)], repetitions)?;
        let what = format!(
            "{} members, {} files, {:.1} MB, {}% naming it",
            members,
            shape.files,
            shape.bytes as f64 / 1e6,
            shape.naming_percent
        );
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let (ours, theirs, read) = (times[0], times[1], times[2]);
        rows.push(Row {
            figure: format!("migrate-check full check / cargo metadata, realistic ({what})"),
            measured: format!("{} vs {}", ms(ours), ms(theirs)),
            ratio: format!("{:.2}", ratio(ours, theirs)),
            target: "<= 1.0".to_owned(),
            met: if ratio(ours, theirs) <= 1.0 { "yes" } else { "no" }.to_owned(),
        });
        rows.push(Row {
            figure: "migrate-check full check / grep -rc NAME, realistic".to_owned(),
            measured: format!("{} vs {}", ms(ours), ms(read)),
            ratio: format!("{:.2}", ratio(ours, read)),
            target: "<= 2.0".to_owned(),
            met: if ratio(ours, read) <= 2.0 { "yes" } else { "no" }.to_owned(),
        });
        // Apart: a run of cargo deny (a quarter of a second on both cores) slows the run right after it.
        let deny_figure = "migrate-check full check vs cargo deny check bans (which reads no source), realistic";
        if deny_installed {
            let pair = alternating(&mut [(&mut check, Some(1)), (&mut deny, None)], repetitions)?;
            rows.push(ratio_row(deny_figure, pair[0], pair[1], 1.0));
        } else {
            rows.push(Row::skipped(deny_figure, "skipped: cargo-deny is not installed".to_owned()));
        }
        let memory = "peak memory: migrate-check / cargo metadata, realistic";
        match (peak_kib(&mut check), peak_kib(&mut metadata)) {
            (Some(ours), Some(theirs)) => rows.push(Row {
                figure: memory.to_owned(),
                measured: format!("{ours} KiB vs {theirs} KiB"),
                ratio: format!("{:.2}", ours as f64 / theirs.max(1) as f64),
                target: "<= 1.0".to_owned(),
                met: if ours <= theirs { "yes" } else { "no" }.to_owned(),
            }),
            _ => rows.push(Row::skipped(memory, "skipped: GNU time (/usr/bin/time) is not installed".to_owned())),
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    for row in &rows[first..] {
        println!("{}", row.bench_line());
    }
    Ok(())
}

/// Runs the commands in turn, `repetitions` rounds after one warm-up round (none for a single repetition), and returns
/// each one's median wall time. Each command must exit with its code, when one is given.
fn alternating(commands: &mut [(&mut Command, Option<i32>)], repetitions: usize) -> Result<Vec<Duration>, String> {
    let warm_up = usize::from(repetitions > 1);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); commands.len()];
    for round in 0..warm_up + repetitions {
        for (k, (command, expected)) in commands.iter_mut().enumerate() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
            let start = Instant::now();
            let status = command.status().map_err(|err| format!("cannot run {command:?}: {err}"))?;
            let elapsed = start.elapsed();
            if expected.is_some_and(|code| status.code() != Some(code)) {
                return Err(format!("{command:?} exited with {status}"));
            }
            if round >= warm_up {
                times[k].push(elapsed);
            }
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect())
}

/// The peak resident memory of one run of `command`, in KiB, measured by GNU `time`, if it is installed.
fn peak_kib(command: &mut Command) -> Option<u64> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        return None;
    }
    let output = Command::new(time)
        .args(["-f", "%M"])
        .arg(command.get_program())
        .args(command.get_args())
        .stdout(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stderr).lines().last()?.trim().parse().ok()
}

/// What [`generate_realistic`] wrote.
struct Shape {
    files: usize,
    bytes: usize,
    naming_percent: usize,
}

/// Writes a workspace of realistic size and shape below `dir`: `members` crates of ten module files each (about 10 KB
/// of Rust per file: items, impls, comments, string literals and doc comments with code blocks), with module trees
/// in both styles (`model.rs` + `model/types.rs`, `service/mod.rs` + `service/handlers.rs`), a `#[path]` module, and
/// modules declared inside a `cfg_if!` invocation. 55% of the members declare `registry-compat` (as rust-analyzer's
/// declare `stdx`), and half of all files name it in code (and in comments, doc prose and strings), some in a
/// doctest; of the rest, a third mention it in a comment, which must not count.
fn generate_realistic(dir: &Path, members: usize) -> std::io::Result<Shape> {
    let mut shape = Shape { files: 0, bytes: 0, naming_percent: 0 };
    let mut naming = 0;
    let mut write = |path: &str, text: &str, names_it: bool| -> std::io::Result<()> {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        if path.extension().is_some_and(|e| e == "rs") {
            shape.files += 1;
            shape.bytes += text.len();
            naming += usize::from(names_it);
        }
        std::fs::write(path, text)
    };
    write(
        "Cargo.toml",
        "[workspace]\nresolver = \"2\"\nmembers = [\"crates/*\"]\n\n[workspace.package]\nversion = \"0.1.0\"\n\
         edition = \"2021\"\n\n[workspace.dependencies]\ncore-registry = { path = \"crates/core-registry\" }\n\
         registry-compat = { path = \"crates/registry-compat\" }\n",
        false,
    )?;
    for name in ["registry-compat", "core-registry"] {
        let manifest = format!("[package]\nname = \"{name}\"\nversion.workspace = true\nedition.workspace = true\n");
        write(&format!("crates/{name}/Cargo.toml"), &manifest, false)?;
        write(&format!("crates/{name}/src/lib.rs"), "//! Shared code.\n\npub fn helper() {}\n", false)?;
    }
    // (path, declarations of child modules)
    let files: [(&str, &str); 10] = [
        (
            "lib.rs",
            "mod model;\nmod service;\n#[path = \"generated/codegen.rs\"]\nmod codegen;\nmod util;\nmod parse;\n\
             cfg_if::cfg_if! {\n    if #[cfg(unix)] {\n        mod unix;\n    } else {\n        mod other;\n    }\n}\n",
        ),
        ("model.rs", "pub mod types;\n"),
        ("model/types.rs", ""),
        ("service/mod.rs", "mod handlers;\n"),
        ("service/handlers.rs", ""),
        ("generated/codegen.rs", ""),
        ("util.rs", ""),
        ("parse.rs", ""),
        ("unix.rs", ""),
        ("other.rs", ""),
    ];
    for m in 0..members {
        let name = format!("member{m:04}");
        let declares = m % 20 < 11;
        let mut manifest = format!(
            "[package]\nname = \"{name}\"\nversion.workspace = true\nedition.workspace = true\n\n[dependencies]\n\
             core-registry.workspace = true\n"
        );
        if declares {
            manifest.push_str("registry-compat.workspace = true\n");
        }
        write(&format!("crates/{name}/Cargo.toml"), &manifest, false)?;
        for (k, (file, children)) in files.iter().enumerate() {
            // Half of the files name the crate in code (in the members that declare it, more of theirs).
            let names_it = declares && (k + m) % 10 < 9 || !declares && (k + m) % 10 == 0;
            let text = realistic_source(&name, k, children, names_it);
            write(&format!("crates/{name}/src/{file}"), &text, names_it)?;
        }
    }
    shape.naming_percent = naming * 100 / shape.files.max(1);
    Ok(shape)
}

/// About 10 KB of Rust for file `k` of `member`.
fn realistic_source(member: &str, k: usize, children: &str, names_it: bool) -> String {
    // Files that name the crate in code also name it in comments, doc prose and strings; of the others, a third
    // mention it in a comment (which must not count), as a migrated crate's history would.
    let mentions = names_it || (k + member.len()).is_multiple_of(3);
    let comment = if mentions {
        "// Migrated from registry_compat::AgentRegistry in 0.10; see \"registry_compat::helper\"."
    } else {
        "// The label of the entry's origin."
    };
    let old = if names_it { "registry_compat" } else { "legacy" };
    let mut text = format!("//! Module {k} of `{member}`: generated for the benchmark.\n//!\n");
    text.push_str("//! ```\n");
    if names_it && k == 0 {
        text.push_str("//! let limit = registry_compat::helper();\n");
    } else {
        text.push_str("//! let limit = core_registry::helper();\n");
    }
    text.push_str("//! ```\n\n");
    text.push_str(children);
    text.push_str("\nuse std::collections::BTreeMap;\nuse std::fmt;\n\n");
    if names_it {
        text.push_str("use registry_compat::helper as old_helper;\n\n");
    }
    let mut n = 0;
    while text.len() < 10_000 {
        let item = format!(
            r#"/// A record of kind {n}: see [`Registry{n}::lookup`].
///
/// ```no_run
/// let registry = {member}::Registry{n}::default();
/// assert!(registry.lookup("echo").is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registry{n} {{
    entries: BTreeMap<String, (u64, &'static str)>,
    {comment}
    label: Option<String>,
}}

impl Registry{n} {{
    /// Registers `name` with a weight; the label says where from ("{old}" in old data).
    pub fn register(&mut self, name: &str, weight: u64) -> &mut Self {{
        let from = if weight > {n} {{ "core_registry" }} else {{ "{old}" }};
        self.entries.insert(name.to_owned(), (weight, from));
        self
    }}

    /// The entry of `name`, if any.
    pub fn lookup(&self, name: &str) -> Option<&(u64, &'static str)> {{
        self.entries.get(name).filter(|(weight, _)| *weight != u64::MAX)
    }}

    fn total<'a>(&'a self, prefix: &str) -> impl Iterator<Item = u64> + 'a {{
        let prefix = prefix.to_owned();
        self.entries.iter().filter(move |(n, _)| n.starts_with(&prefix)).map(|(_, (w, _))| *w)
    }}
}}

impl fmt::Display for Registry{n} {{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {{
        write!(f, "{{}} entries, label {{:?}}, total {{}}", self.entries.len(), self.label, self.total("").sum::<u64>())
    }}
}}

"#
        );
        text.push_str(&item);
        if names_it && n % 3 == 0 {
            text.push_str(&format!(
                "/// Calls the old helper.\npub fn legacy_{n}() -> usize {{\n    registry_compat::helper();\n    old_helper();\n    {n}\n}}\n\n"
            ));
        }
        n += 1;
    }
    text
}

/// Runs `command` once to warm caches (unless `repetitions` is 1), then `repetitions` times; the median wall time.
/// `expected_exit`: the exit code a run must have (any if `None`, but it must start).
fn median(mut command: Command, repetitions: usize, expected_exit: Option<i32>) -> Result<Duration, String> {
    Ok(alternating(&mut [(&mut command, expected_exit)], repetitions)?[0])
}

fn ratio_row(figure: &str, ours: Duration, theirs: Duration, target: f64) -> Row {
    let ratio = theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9);
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    Row {
        figure: figure.to_owned(),
        measured: format!("{} vs {}", ms(ours), ms(theirs)),
        ratio: format!("{ratio:.1}"),
        target: if target > 1.0 { format!(">= {target}x") } else { "report".to_owned() },
        met: if ratio >= target { "yes" } else { "no" }.to_owned(),
    }
}

/// Runs one of the other benchmarks and collects its `BENCH` lines (echoed to stdout too).
fn run_external(external: &External, quick: bool, rows: &mut Vec<Row>) {
    let root = crate::project_root();
    if !external.probes.iter().any(|probe| root.join(probe).is_file()) {
        rows.push(Row::skipped(external.name, format!("skipped: {} does not exist yet", external.probes[0])));
        return;
    }
    let mut command = Command::new(cargo());
    command.current_dir(&root).args(external.cargo_args);
    if quick {
        command.arg("--quick");
    }
    eprintln!("bench: running {}", external.name);
    let output = match command.stderr(Stdio::inherit()).output() {
        Ok(output) => output,
        Err(err) => return rows.push(Row::skipped(external.name, format!("skipped: cannot run cargo: {err}"))),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let before = rows.len();
    for line in stdout.lines().filter(|l| l.starts_with("BENCH\t")) {
        println!("{line}");
        let fields: Vec<&str> = line.split('\t').collect();
        if let [_, figure, measured, ratio, target, met] = fields.as_slice() {
            rows.push(Row {
                figure: (*figure).to_owned(),
                measured: (*measured).to_owned(),
                ratio: (*ratio).to_owned(),
                target: (*target).to_owned(),
                met: (*met).to_owned(),
            });
        }
    }
    if !output.status.success() {
        rows.push(Row::skipped(external.name, format!("failed: {}", output.status)));
    } else if rows.len() == before {
        rows.push(Row::skipped(external.name, "skipped: it printed no BENCH lines".to_owned()));
    }
}

fn table(rows: &[Row]) -> String {
    let header = Row {
        figure: "figure".into(),
        measured: "measured".into(),
        ratio: "ratio".into(),
        target: "target".into(),
        met: "met".into(),
    };
    let all: Vec<&Row> = std::iter::once(&header).chain(rows).collect();
    let width = |f: fn(&Row) -> &str| all.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let widths =
        [width(|r| &r.figure), width(|r| &r.measured), width(|r| &r.ratio), width(|r| &r.target), width(|r| &r.met)];
    let mut out = String::from("\n");
    for (i, row) in all.iter().enumerate() {
        let cells = [&row.figure, &row.measured, &row.ratio, &row.target, &row.met];
        let line: Vec<String> = cells.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join(" | ").trim_end());
        if i == 0 {
            let _ = writeln!(out, "{}", widths.map(|w| "-".repeat(w)).join("-|-"));
        }
    }
    out
}

/// Writes a workspace of `members` small crates plus `registry-compat` and `core-registry` below `dir`. Every tenth
/// member violates in one of five ways (normal, renamed inherited dev, optional target-specific, build table form,
/// source only); the others depend on up to two earlier clean members, and every 25th also on a violating one, so
/// it (and whatever depends on it) reaches the crate transitively. A third of the clean members mention the crate in
/// a comment, which the source scan must not report.
fn generate(dir: &Path, members: usize) -> std::io::Result<()> {
    let write = |path: &str, text: &str| -> std::io::Result<()> {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        std::fs::write(path, text)
    };
    write(
        "Cargo.toml",
        "[workspace]\nresolver = \"2\"\nmembers = [\"crates/*\"]\n\n[workspace.package]\nversion = \"0.1.0\"\n\
         edition = \"2021\"\n\n[workspace.dependencies]\ncore-registry = { path = \"crates/core-registry\" }\n\
         registry-compat = { path = \"crates/registry-compat\" }\n\
         legacy = { package = \"registry-compat\", path = \"crates/registry-compat\" }\n\n\
         [workspace.metadata.migrate-check]\nallow = [{ package = \"m0000\", reason = \"benchmark\" }]\n",
    )?;
    for name in ["registry-compat", "core-registry"] {
        write(
            &format!("crates/{name}/Cargo.toml"),
            &format!("[package]\nname = \"{name}\"\nversion.workspace = true\nedition.workspace = true\n"),
        )?;
        write(&format!("crates/{name}/src/lib.rs"), "//! Shared code.\n\npub fn helper() {}\n")?;
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..members {
        let name = format!("m{i:04}");
        let mut manifest = format!(
            "[package]\nname = \"{name}\"\nversion.workspace = true\nedition.workspace = true\n\
             description = \"Generated member {i}.\"\n\n[dependencies]\ncore-registry.workspace = true\n"
        );
        let violation = if i % 10 == 0 { (i / 10) % 5 } else { 5 };
        // Clean members depend on up to two earlier clean ones; every 25th also on a violating one (transitive).
        let violating = |m: usize| m.is_multiple_of(10);
        let mut deps: Vec<usize> = Vec::new();
        for _ in 0..2 {
            let candidates: Vec<usize> = (i.saturating_sub(30)..i).filter(|&m| !violating(m) && m % 25 != 5).collect();
            if let Some(&dep) = candidates.get(next() as usize % candidates.len().max(1)) {
                deps.push(dep);
            }
        }
        if i % 25 == 5 {
            deps.push(i / 10 * 10);
        }
        deps.sort_unstable();
        deps.dedup();
        for dep in deps {
            manifest.push_str(&format!("m{dep:04} = {{ path = \"../m{dep:04}\" }}\n"));
        }
        manifest.push_str(match violation {
            0 => "registry-compat = { path = \"../registry-compat\" }\n",
            1 => "\n[dev-dependencies]\nlegacy.workspace = true\n",
            2 => "\n[target.'cfg(unix)'.dependencies]\nregistry-compat = { workspace = true, optional = true }\n",
            3 => "\n[build-dependencies.registry-compat]\npath = \"../registry-compat\"\n",
            _ => "",
        });
        write(&format!("crates/{name}/Cargo.toml"), &manifest)?;
        let use_line = match violation {
            0 | 4 => "use registry_compat::helper as old_helper;\n",
            1 => "#[cfg(test)]\nuse legacy::helper as old_helper;\n",
            _ if i % 3 == 0 => "// Migrated from registry_compat::helper in 0.10.\n",
            _ => "",
        };
        write(&format!("crates/{name}/src/lib.rs"), &lib_source(&name, use_line))?;
        write(&format!("crates/{name}/src/util.rs"), UTIL_SOURCE)?;
        write(
            &format!("crates/{name}/tests/basic.rs"),
            &format!("#[test]\nfn it_adds() {{\n    assert_eq!({name}::add(2, 2), 4);\n}}\n"),
        )?;
    }
    Ok(())
}

fn lib_source(name: &str, use_line: &str) -> String {
    format!(
        r#"//! Generated crate `{name}`: a small library with a module, a macro and tests.
#![warn(missing_docs)]

{use_line}use core_registry::helper;

mod util;

pub use util::{{Config, parse_pair}};

/// Adds two numbers, and calls into the registry for good measure.
pub fn add(left: u64, right: u64) -> u64 {{
    helper();
    left + right
}}

/// A registry-like value.
#[derive(Debug, Clone, Default)]
pub struct Registry {{
    entries: Vec<(String, u64)>,
}}

impl Registry {{
    /// Registers `name` with a weight.
    pub fn register(&mut self, name: &str, weight: u64) -> &mut Self {{
        self.entries.push((name.to_owned(), weight));
        self
    }}

    /// The total weight of the entries whose name starts with `prefix`.
    pub fn weight(&self, prefix: &str) -> u64 {{
        self.entries.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, w)| *w).sum()
    }}
}}

macro_rules! registry {{
    ($($name:literal => $weight:expr),* $(,)?) => {{{{
        let mut registry = Registry::default();
        $(registry.register($name, $weight);)*
        registry
    }}}};
}}

/// A registry with the defaults.
pub fn defaults() -> Registry {{
    registry!["echo" => 1, "tools" => 2, "slow" => 3]
}}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn weights() {{
        assert_eq!(defaults().weight("e"), 1);
        assert_eq!(add(1, 2), 3);
    }}
}}
"#
    )
}

const UTIL_SOURCE: &str = r#"//! Parsing helpers.

use std::collections::BTreeMap;

/// Settings read from `key=value` lines.
#[derive(Debug, Default)]
pub struct Config {
    values: BTreeMap<String, String>,
}

impl Config {
    /// Parses `text`, one `key=value` pair a line; other lines are skipped.
    pub fn parse(text: &str) -> Config {
        let values = text.lines().filter_map(parse_pair).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Config { values }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Splits `key=value`, trimming both sides.
pub fn parse_pair(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once('=')?;
    Some((key.trim(), value.trim()))
}
"#;
