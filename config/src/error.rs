//! Configuration errors: each names the file, the line where it is known, and the key.

use std::fmt;
use std::path::PathBuf;

/// A configuration error, ready to print as `FILE:LINE: [section] key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line, when the key could be found in the text.
    pub line: Option<usize>,
    /// Dotted key path such as `radius.clients[0].address`, when the error is about one.
    pub key: Option<String>,
    /// What is wrong and, where possible, how to mend it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Finds the line of `key` inside the section `section` (a dotted path such as
/// `radius.clients` with an index for arrays of tables). Returns a 1-based line.
pub(crate) fn locate(
    text: &str,
    section: &str,
    index: Option<usize>,
    key: Option<&str>,
) -> Option<usize> {
    let mut current = String::new();
    let mut seen_of_section = 0usize;
    let mut section_line = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            current = header.trim().to_string();
            if current == section {
                seen_of_section += 1;
                if index.is_none_or(|i| i + 1 == seen_of_section) {
                    section_line = Some(n + 1);
                }
            }
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = header.trim().to_string();
            if current == section && index.is_none() {
                section_line = Some(n + 1);
            }
            continue;
        }
        let in_section = current == section && index.is_none_or(|i| i + 1 == seen_of_section);
        if in_section {
            if let Some(key) = key {
                let name = line.split('=').next().unwrap_or("").trim();
                if name == key && line.contains('=') {
                    return Some(n + 1);
                }
            }
        }
    }
    section_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_in_sections_and_arrays_of_tables() {
        let text = "[a]\nx = 1\n[[c]]\nname = \"one\"\n[[c]]\nname = \"two\"\n";
        assert_eq!(locate(text, "a", None, Some("x")), Some(2));
        assert_eq!(locate(text, "c", Some(1), Some("name")), Some(6));
        assert_eq!(locate(text, "c", Some(0), Some("missing")), Some(3));
    }
}
