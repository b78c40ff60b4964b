//! Configuration files: parse the TOML, validate it, compile it to the blob.
//!
//! Every problem is reported on one line that names the file and the line,
//! then the partition and the field:
//!
//! ```text
//! configs/x.toml:12: partition 'b', field 'memory[0].backing': host range ... overlaps ...
//! configs/x.toml:3: field 'platform.ram[0].size': 0x10 is not a multiple of the 0x1000-byte page
//! configs/x.toml:7: unknown variant `normal-wt`, expected one of `normal-wb`, ...
//! ```
//!
//! Validation (`bulkhead_config::validate`) knows fields by path
//! (`partition[1].memory[0].backing`); the line comes from parsing the text a
//! second time with `toml_edit`, which keeps spans, and walking that path.
//! A field left at its default has no key of its own: it gets the line of
//! the nearest enclosing table or array element that is in the file.

use anyhow::{Context, Result, anyhow};
use bulkhead_config::{Backing, Config};
use std::ops::Range;
use std::path::Path;
use toml_edit::{ImDocument, Item, Table, TableLike, Value};

/// A parsed, validated configuration and its blob.
pub struct Compiled {
    /// The configuration.
    pub config: Config,
    /// `bulkhead_config::to_blob` of it, for `bulkhead/config.bin`.
    pub blob: Vec<u8>,
}

/// Parses a configuration and encodes it WITHOUT validating it: only for
/// tests of the hypervisor's own boot-time validation.
///
/// # Errors
/// When the file cannot be read or is not a configuration at all.
pub fn compile_unchecked(path: &Path, shown: &str) -> Result<Compiled> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{shown}: cannot read the configuration"))?;
    let config = toml::from_str::<Config>(&text).with_context(|| format!("{shown}: not a configuration"))?;
    let blob = bulkhead_config::to_blob_from(&config, shown);
    Ok(Compiled { config, blob })
}

/// Reads, validates and compiles the configuration at `path`; `shown` is
/// the name used in messages.
///
/// # Errors
/// When the file cannot be read, is not valid TOML for the model, or fails
/// validation. Each problem is printed to stderr as `FILE:LINE: <error>`;
/// the returned error counts them.
pub fn compile(path: &Path, shown: &str) -> Result<Compiled> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{shown}: cannot read the configuration"))?;
    match check_text(&text, shown) {
        Ok(config) => {
            let blob = bulkhead_config::to_blob_from(&config, shown);
            Ok(Compiled { config, blob })
        }
        Err(problems) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            let count = problems.len();
            Err(anyhow!(
                "{shown}: {count} configuration error{}",
                if count == 1 { "" } else { "s" }
            ))
        }
    }
}

/// Parses and validates configuration text: the configuration, or every
/// problem as a `FILE:LINE: <error>` line, in line order.
///
/// # Errors
/// The problem lines, when the text does not parse or does not validate.
pub fn check_text(text: &str, shown: &str) -> Result<Config, Vec<String>> {
    let config = toml::from_str::<Config>(text).map_err(|err| {
        let message = err.message().trim_end().replace('\n', " ");
        vec![match err.span() {
            Some(span) => format!("{shown}:{}: {message}", line_at(text, span.start)),
            None => format!("{shown}: {message}"),
        }]
    })?;
    let errors = bulkhead_config::validate(&config);
    if errors.is_empty() {
        return Ok(config);
    }
    // The text parsed as `Config`, so it parses as a document too.
    let document = ImDocument::parse(text).ok();
    let mut problems: Vec<(usize, String)> = errors
        .iter()
        .map(|err| {
            let line = document
                .as_ref()
                .map_or(1, |doc| line_of_path(doc.as_table(), text, &err.path()));
            (line, format!("{shown}:{line}: {err}"))
        })
        .collect();
    problems.sort_by_key(|(line, _)| *line);
    Err(problems.into_iter().map(|(_, problem)| problem).collect())
}

/// One line for a good configuration: partitions, CPUs, memory, platform.
pub fn summary(config: &Config) -> String {
    let partitions = config.partitions.len();
    let cpus: usize = config.partitions.iter().map(|p| p.cpus.len()).sum();
    let memory: u64 = config
        .partitions
        .iter()
        .flat_map(|p| p.memory.iter())
        .map(|r| r.size)
        .sum();
    let host_backed = config
        .partitions
        .iter()
        .flat_map(|p| p.memory.iter())
        .filter(|r| matches!(r.backing, Backing::Host(_)))
        .count();
    let devices: usize = config.partitions.iter().map(|p| p.passthrough.len()).sum();
    let platform = if config.platform.is_empty() {
        "no [platform], host ranges unchecked".to_string()
    } else {
        format!("platform '{}'", config.platform.name)
    };
    format!(
        "{partitions} partition{}, {cpus} CPU{}, {} of memory ({host_backed} host-backed region{}), \
         {devices} passed-through device{}, {platform}",
        plural(partitions),
        plural(cpus),
        bytes(memory),
        plural(host_backed),
        plural(devices),
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `16 MiB`, `4 KiB`, `1 GiB`, or bytes when not a whole number of KiB.
fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| n >= *unit && n.is_multiple_of(*unit))
        .map_or(format!("{n} bytes"), |(unit, name)| {
            format!("{} {name}", n / unit)
        })
}

/// The 1-based line of byte offset `at`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One step of a field path: `memory` or `[1]`.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `partition[1].memory[0].size` into keys and indices.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(index) = index.parse() {
                steps.push(Step::Index(index));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    steps
}

/// A place in the document while walking a path.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Table(table) => Some(table),
            Node::Value(value) => value.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    /// Element `index` of an array or array of tables, with its span.
    fn element(self, index: usize) -> Option<(Node<'a>, Option<Range<usize>>)> {
        let array = match self {
            Node::Item(Item::ArrayOfTables(tables)) => {
                let table = tables.get(index)?;
                return Some((Node::Table(table), table.span()));
            }
            Node::Item(item) => item.as_array()?,
            Node::Value(value) => value.as_array()?,
            Node::Table(_) => return None,
        };
        let value = array.get(index)?;
        Some((Node::Value(value), value.span()))
    }
}

/// The line of the field at `path`, or of the deepest part of it that is in
/// the document (line 1 if none is).
fn line_of_path(root: &Table, text: &str, path: &str) -> usize {
    let mut node = Node::Table(root);
    let mut line = 1;
    for step in steps(path) {
        let next = match step {
            Step::Key(key) => node.table_like().and_then(|table| {
                let (key, item) = table.get_key_value(key)?;
                Some((Node::Item(item), key.span().or_else(|| item.span())))
            }),
            Step::Index(index) => node.element(index),
        };
        let Some((next_node, span)) = next else { break };
        if let Some(span) = span {
            line = line_at(text, span.start);
        }
        node = next_node;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const GOOD: &str = r#"
[[partition]]
name = "hello"
cpus = [0]
image = { file = "hello.bin", load = 0x4000_0000 }
[[partition.memory]]
guest = 0x4000_0000
size = 0x10_0000
"#;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The `.toml` files directly in `dir` (relative to the workspace), sorted.
    fn toml_files(dir: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_good_file_compiles_to_a_blob_that_decodes() {
        let config = check_text(GOOD, "demo.toml").unwrap();
        let blob = bulkhead_config::to_blob(&config);
        assert_eq!(bulkhead_config::from_blob(&blob).unwrap(), config);
        assert_eq!(
            summary(&config),
            "1 partition, 1 CPU, 1 MiB of memory (0 host-backed regions), \
             0 passed-through devices, no [platform], host ranges unchecked"
        );
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let err = check_text("[[partition]]\nname = \n", "bad.toml").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("bad.toml:2: "), "{err:?}");
        let err = check_text("[[partition]]\nname = \"a\"\nbogus = 1\n", "bad.toml").unwrap_err();
        assert!(
            err[0].starts_with("bad.toml:3: unknown field `bogus`"),
            "{err:?}"
        );
    }

    #[test]
    fn validation_errors_carry_the_line_of_their_key_in_line_order() {
        let text = GOOD
            .replace("cpus = [0]", "cpus = []")
            .replace("0x10_0000", "0x10_0001");
        let problems = check_text(&text, "x.toml").unwrap_err();
        assert_eq!(
            problems,
            vec![
                "x.toml:4: partition 'hello', field 'cpus': a partition needs at least one CPU",
                "x.toml:8: partition 'hello', field 'memory[0].size': \
                 0x100001 is not a multiple of the 0x1000-byte page",
            ]
        );
    }

    #[test]
    fn a_defaulted_field_gets_the_line_of_its_table() {
        let text = "[[partition]]\nname = \"a\"\ncpus = [0]\n\
                    image = { file = \"a.bin\", load = 0x1000 }\n\
                    memory = [\n  { guest = 0x4000_0000, size = 0x1000 },\n]\n";
        let problems = check_text(text, "x.toml").unwrap_err();
        assert_eq!(
            problems,
            vec![
                "x.toml:4: partition 'a', field 'image.load': image load address 0x1000 \
                 is not inside a writable, executable memory region",
                "x.toml:4: partition 'a', field 'image.entry': entry point 0x1000 \
                 is not inside an executable memory region",
            ]
        );
    }

    #[test]
    fn paths_walk_tables_arrays_and_inline_tables() {
        let text = "[platform]\nram = [\n  { base = 0, size = 1 },\n  { base = 0x1000, size = 2 },\n]\n\
                    [[platform.devices]]\nname = \"d\"\n\nsize = 0x1000\n\
                    [[partition]]\nname = \"a\"\ncpus = [0,\n  1]\n\
                    [[partition]]\nname = \"b\"\n";
        let doc = ImDocument::parse(text).unwrap();
        let line = |path| line_of_path(doc.as_table(), text, path);
        assert_eq!(line("platform.ram[0].size"), 3);
        assert_eq!(line("platform.ram[1].size"), 4);
        assert_eq!(line("platform.ram[1].what"), 4);
        assert_eq!(line("platform.ram[2].base"), 2);
        assert_eq!(line("platform.devices[0].size"), 9);
        assert_eq!(line("platform.devices[0].base"), 6);
        assert_eq!(line("platform.reserved[0].base"), 1);
        assert_eq!(line("partition[0].cpus[1]"), 13);
        assert_eq!(line("partition[1].name"), 15);
        assert_eq!(line("partition[1].memory[0].size"), 14);
        assert_eq!(line("partition"), 10);
        assert_eq!(
            steps("partition[2].memory[10].size"),
            vec![
                Step::Key("partition"),
                Step::Index(2),
                Step::Key("memory"),
                Step::Index(10),
                Step::Key("size")
            ]
        );
    }

    #[test]
    fn sizes_print_in_the_largest_whole_unit() {
        assert_eq!(bytes(0x100_0000), "16 MiB");
        assert_eq!(bytes(0x4000_0000), "1 GiB");
        assert_eq!(bytes(0x1000), "4 KiB");
        assert_eq!(bytes(0x10), "16 bytes");
        assert_eq!(bytes(0), "0 bytes");
    }

    #[test]
    fn compile_reports_a_missing_file_by_its_shown_name() {
        let err = compile(Path::new("/nonexistent/bulkhead.toml"), "cfg.toml")
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").starts_with("cfg.toml: cannot read"),
            "{err:#}"
        );
    }

    #[test]
    fn every_shipped_configuration_checks_clean() {
        let files: Vec<PathBuf> = [toml_files("configs"), toml_files("tests/configs")].concat();
        assert!(files.len() >= 3, "{files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let shown = file.display().to_string();
            if let Err(problems) = check_text(&text, &shown) {
                panic!("{}", problems.join("\n"));
            }
        }
    }

    /// Each file in `tests/configs/bad/` starts with `# expect: LINE: ERROR`,
    /// the first problem `config check` must report for it.
    #[test]
    fn every_bad_configuration_reports_its_expected_first_error() {
        let files = toml_files("tests/configs/bad");
        assert!(files.len() >= 15, "only {} bad configurations", files.len());
        let mut failures = Vec::new();
        for file in &files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(file).unwrap();
            let Some(expect) = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
            else {
                failures.push(format!(
                    "{name}: the first line is not '# expect: LINE: ERROR'"
                ));
                continue;
            };
            let expected = format!("{name}:{expect}");
            match check_text(&text, &name) {
                Ok(_) => failures.push(format!("{name}: checks clean, expected\n  {expected}")),
                Err(problems) if problems[0] != expected => failures.push(format!(
                    "{name}: first problem\n  {}\nexpected\n  {expected}",
                    problems[0]
                )),
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
