//! APT sources: find or add the `bookworm-backports` suite.
//!
//! The backports entry reuses the URI (and `Signed-By`) of the machine's
//! existing `bookworm` entry, so whatever mirror the machine already uses
//! serves the backports too; no mirror host is written here.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The suite QEMU 10 comes from.
pub const BACKPORTS_SUITE: &str = "bookworm-backports";
/// The release whose entry is reused.
const BASE_SUITE: &str = "bookworm";
/// The file `setup` writes.
pub const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bulkhead-backports.sources";
/// Where APT reads its one-line sources list.
pub const SOURCES_LIST: &str = "/etc/apt/sources.list";
/// Where APT reads further `.list` and deb822 `.sources` files.
pub const SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// One enabled binary (`deb`) source entry, whatever its file format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The archive URIs.
    pub uris: Vec<String>,
    /// The suites.
    pub suites: Vec<String>,
    /// The `Signed-By` value (path or inline key, continuation lines kept).
    pub signed_by: Option<String>,
}

/// Parses a deb822 `.sources` file; only enabled `deb` stanzas are returned.
pub fn parse_deb822(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for stanza in split_blank_lines(text) {
        let fields = deb822_fields(&stanza);
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        let words = |key: &str| -> Vec<String> {
            get(key)
                .map(|v| v.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if !enabled || !words("Types").iter().any(|t| t == "deb") {
            continue;
        }
        entries.push(Entry {
            uris: words("URIs"),
            suites: words("Suites"),
            signed_by: get("Signed-By"),
        });
    }
    entries
}

/// Splits text into stanzas at lines that are empty or only whitespace.
fn split_blank_lines(text: &str) -> Vec<String> {
    let mut stanzas = vec![String::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            stanzas.push(String::new());
        } else if let Some(last) = stanzas.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    stanzas.retain(|s| !s.is_empty());
    stanzas
}

/// `Key: value` fields of one stanza; continuation lines are appended to the
/// value with their newline and indentation.
fn deb822_fields(stanza: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in stanza.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

/// Parses one-line-style `sources.list` text: `deb [opts] URI SUITE COMP...`.
pub fn parse_one_line(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                Some((options, rest)) => (options, rest),
                None => continue,
            },
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        let signed_by = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by="))
            .map(String::from);
        entries.push(Entry {
            uris: vec![uri.into()],
            suites: vec![suite.into()],
            signed_by,
        });
    }
    entries
}

/// The deb822 stanza for the backports suite, modelled on `base`.
pub fn backports_stanza(base: &Entry) -> Option<String> {
    let uri = base.uris.first()?;
    let mut text = format!(
        "# Written by `cargo xtask setup`: QEMU >= 10 comes from {BACKPORTS_SUITE}.\n\
         Types: deb\nURIs: {uri}\nSuites: {BACKPORTS_SUITE}\nComponents: main\n"
    );
    if let Some(key) = &base.signed_by {
        text.push_str(&format!("Signed-By: {key}\n"));
    }
    Some(text)
}

fn has_suite(entry: &Entry, suite: &str) -> bool {
    entry.suites.iter().any(|s| s == suite)
}

/// What [`ensure_backports`] found or did.
pub enum Outcome {
    /// An enabled backports entry already exists in this file.
    Present(PathBuf),
    /// This file was written.
    Added(PathBuf),
}

/// Every source file APT reads under `root`, with its parsed entries.
pub fn read_sources(root: &Path) -> Vec<(PathBuf, Vec<Entry>)> {
    let mut files = Vec::new();
    let list = under(root, SOURCES_LIST);
    if let Ok(text) = std::fs::read_to_string(&list) {
        files.push((list, parse_one_line(&text)));
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(under(root, SOURCES_DIR))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("sources") => files.push((path, parse_deb822(&text))),
            Some("list") => files.push((path, parse_one_line(&text))),
            _ => {}
        }
    }
    files
}

/// An absolute system path re-rooted at `root` (`/` on a real system).
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Makes sure APT knows the backports suite, adding [`BACKPORTS_FILE`] if
/// no enabled entry names it.
///
/// # Errors
/// When no `bookworm` entry exists to copy the URI from, or the file cannot
/// be written.
pub fn ensure_backports() -> Result<Outcome> {
    ensure_backports_in(Path::new("/"))
}

fn ensure_backports_in(root: &Path) -> Result<Outcome> {
    let files = read_sources(root);
    if let Some((path, _)) = files
        .iter()
        .find(|(_, entries)| entries.iter().any(|e| has_suite(e, BACKPORTS_SUITE)))
    {
        return Ok(Outcome::Present(path.clone()));
    }
    let base = files
        .iter()
        .flat_map(|(_, entries)| entries)
        .find(|e| has_suite(e, BASE_SUITE));
    let Some(stanza) = base.and_then(backports_stanza) else {
        bail!(
            "no APT entry for Debian '{BASE_SUITE}' in {SOURCES_LIST} or {SOURCES_DIR}/ to take the \
             archive URI from; add a '{BACKPORTS_SUITE}' entry by hand, or install QEMU >= 10 and the \
             UEFI firmware another way"
        );
    };
    let path = under(root, BACKPORTS_FILE);
    std::fs::write(&path, stanza).with_context(|| format!("writing {}", path.display()))?;
    Ok(Outcome::Added(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_SOURCES: &str = "Types: deb\n\
        # http://snapshot.example/archive/debian/20250520T000000Z\n\
        URIs: http://mirror.example/debian\n\
        Suites: bookworm bookworm-updates\n\
        Components: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
        \n\
        Types: deb deb-src\n\
        URIs: http://mirror.example/debian-security\n\
        Suites: bookworm-security\n\
        Components: main\n";

    #[test]
    fn deb822_entries_keep_uri_suites_and_key() {
        let entries = parse_deb822(DEBIAN_SOURCES);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].uris, ["http://mirror.example/debian"]);
        assert_eq!(entries[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            entries[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(entries[1].signed_by, None);
    }

    #[test]
    fn disabled_and_source_only_stanzas_are_ignored() {
        let text = "Types: deb\nURIs: http://a/\nSuites: bookworm-backports\nEnabled: no\n\n\
                    Types: deb-src\nURIs: http://b/\nSuites: bookworm-backports\n";
        assert!(parse_deb822(text).is_empty());
    }

    #[test]
    fn inline_keys_keep_their_continuation_lines() {
        let text = "Types: deb\nURIs: http://a/\nSuites: bookworm\nSigned-By:\n -----BEGIN PGP\n .\n -----END PGP\n";
        let entries = parse_deb822(text);
        let stanza = backports_stanza(&entries[0]).unwrap();
        assert!(
            stanza.ends_with("Signed-By: \n -----BEGIN PGP\n .\n -----END PGP\n"),
            "{stanza}"
        );
    }

    #[test]
    fn one_line_entries_with_options_and_comments() {
        let text = "# deb http://old/ buster main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n\
                    deb-src http://mirror.example/debian bookworm main\n\
                    deb http://mirror.example/debian bookworm-backports main # backports\n";
        let entries = parse_one_line(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(entries[0].suites, ["bookworm"]);
        assert_eq!(entries[1].suites, ["bookworm-backports"]);
    }

    #[test]
    fn the_backports_stanza_reuses_the_bookworm_uri_and_key() {
        let entries = parse_deb822(DEBIAN_SOURCES);
        let stanza = backports_stanza(&entries[0]).unwrap();
        let reparsed = parse_deb822(&stanza);
        assert_eq!(reparsed.len(), 1);
        assert_eq!(reparsed[0].uris, entries[0].uris);
        assert_eq!(reparsed[0].suites, [BACKPORTS_SUITE]);
        assert_eq!(reparsed[0].signed_by, entries[0].signed_by);
    }

    #[test]
    fn the_backports_file_is_added_once_next_to_the_bookworm_entry() {
        let root = std::env::temp_dir().join(format!("xtask-apt-{}", std::process::id()));
        let dir = under(&root, SOURCES_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("debian.sources"), DEBIAN_SOURCES).unwrap();
        std::fs::write(
            dir.join("other.list.disabled"),
            "deb http://x/ bookworm-backports main\n",
        )
        .unwrap();
        let Outcome::Added(path) = ensure_backports_in(&root).unwrap() else {
            panic!("expected Added")
        };
        assert_eq!(path, under(&root, BACKPORTS_FILE));
        let written = parse_deb822(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(written[0].uris, ["http://mirror.example/debian"]);
        let Outcome::Present(again) = ensure_backports_in(&root).unwrap() else {
            panic!("expected Present")
        };
        assert_eq!(again, path);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn without_a_bookworm_entry_nothing_is_written() {
        let root = std::env::temp_dir().join(format!("xtask-apt-none-{}", std::process::id()));
        std::fs::create_dir_all(under(&root, SOURCES_DIR)).unwrap();
        std::fs::write(under(&root, SOURCES_LIST), "deb http://x/ trixie main\n").unwrap();
        let err = ensure_backports_in(&root).err().unwrap();
        assert!(
            err.to_string()
                .contains("no APT entry for Debian 'bookworm'"),
            "{err}"
        );
        assert!(!under(&root, BACKPORTS_FILE).exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
