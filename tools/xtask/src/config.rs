//! Configuration files: parse the TOML, validate it, compile it to the blob.
//!
//! Every message starts with the file name as the user wrote it, so that
//! `FILE: partition 'x', field 'y': ...` points straight at the problem.

use anyhow::{Context, Result, anyhow};
use bulkhead_config::Config;
use std::path::Path;

/// A parsed, validated configuration and its blob.
pub struct Compiled {
    /// The configuration.
    pub config: Config,
    /// `bulkhead_config::to_blob` of it, for `bulkhead/config.bin`.
    pub blob: Vec<u8>,
}

/// Reads, validates and compiles the configuration at `path`; `shown` is
/// the name used in messages.
///
/// # Errors
/// When the file cannot be read, is not valid TOML for the model, or fails
/// validation. Validation errors are printed to stderr one per line as
/// `FILE: <error>` and summarized in the returned error.
pub fn compile(path: &Path, shown: &str) -> Result<Compiled> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{shown}: cannot read the configuration"))?;
    let config = parse(&text, shown).map_err(|message| anyhow!(message))?;
    let problems = check(&config, shown);
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("{problem}");
        }
        let count = problems.len();
        anyhow::bail!(
            "{shown}: {count} configuration error{}",
            if count == 1 { "" } else { "s" }
        );
    }
    let blob = bulkhead_config::to_blob(&config);
    Ok(Compiled { config, blob })
}

/// Parses TOML text; the error names the file and carries toml's line and
/// column report.
pub fn parse(text: &str, shown: &str) -> Result<Config, String> {
    toml::from_str::<Config>(text).map_err(|err| format!("{shown}: {}", err.to_string().trim_end()))
}

/// Validates a configuration: one `FILE: <error>` line per problem.
pub fn check(config: &Config, shown: &str) -> Vec<String> {
    bulkhead_config::validate(config)
        .iter()
        .map(|err| format!("{shown}: {err}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[partition]]
name = "hello"
cpus = [0]
image = { file = "hello.bin", load = 0x4000_0000 }
[[partition.memory]]
guest = 0x4000_0000
size = 0x10_0000
"#;

    #[test]
    fn a_good_file_compiles_to_a_blob_that_decodes() {
        let config = parse(GOOD, "demo.toml").unwrap();
        assert!(check(&config, "demo.toml").is_empty());
        let blob = bulkhead_config::to_blob(&config);
        assert_eq!(bulkhead_config::from_blob(&blob).unwrap(), config);
    }

    #[test]
    fn parse_errors_name_the_file_line_and_column() {
        let err = parse("[[partition]]\nname = \n", "bad.toml").unwrap_err();
        assert!(err.starts_with("bad.toml: "), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = parse("[[partition]]\nname = \"a\"\nbogus = 1\n", "bad.toml").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn validation_errors_are_one_line_each_with_the_file_name() {
        let text = GOOD
            .replace("cpus = [0]", "cpus = []")
            .replace("0x10_0000", "0x10_0001");
        let problems = check(&parse(&text, "x.toml").unwrap(), "x.toml");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .all(|p| p.starts_with("x.toml: partition 'hello', field '")),
            "{problems:?}"
        );
        assert!(problems.iter().all(|p| !p.contains('\n')));
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
}
