//! The README's set-up blocks, so that a test runs a documented set-up exactly as an
//! administrator would copy it.
//!
//! A block is marked by an HTML comment on the line before its fence (invisible when
//! the README is rendered):
//!
//! ````markdown
//! <!-- test: wifi-otpgate -->
//! ```toml
//! [radius]
//! mode = "append"
//! ```
//! ````

use std::path::Path;

use crate::error::{HarnessError, Result};

/// The text of the fenced block marked `<!-- test: NAME -->` in the repository's
/// README.md (without its fences).
pub fn readme_block(name: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| HarnessError::io(format!("reading {}", path.display()), e))?;
    block(&text, name)
        .ok_or_else(|| HarnessError::Usage(format!("README.md has no block marked `{name}`")))
}

fn block(text: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- test: {name} -->");
    let mut lines = text.lines().skip_while(|l| l.trim() != marker).skip(1);
    if !lines.next()?.trim_start().starts_with("```") {
        return None;
    }
    let body: Vec<&str> = lines
        .take_while(|l| !l.trim_start().starts_with("```"))
        .collect();
    Some(body.join("\n") + "\n")
}

/// `text` with each `(from, to)` replaced; a `from` that does not occur is an error
/// (the README changed, and the test must follow it).
pub fn substitute(text: &str, replacements: &[(&str, &str)]) -> Result<String> {
    let mut out = text.to_owned();
    for (from, to) in replacements {
        if !out.contains(from) {
            return Err(HarnessError::Usage(format!(
                "the README block no longer contains {from:?}:\n{text}"
            )));
        }
        out = out.replace(from, to);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marked_block_only() {
        let text = "intro\n<!-- test: a -->\n```toml\nx = 1\ny = 2\n```\n\n```\nz\n```\n";
        assert_eq!(block(text, "a").as_deref(), Some("x = 1\ny = 2\n"));
        assert_eq!(block(text, "b"), None);
        assert_eq!(block("<!-- test: a -->\nnot a fence\n", "a"), None);
        assert!(substitute("a b", &[("c", "d")]).is_err());
        assert_eq!(substitute("a b", &[("a", "c")]).unwrap(), "c b");
    }

    #[test]
    fn the_readme_has_every_block_the_tests_use() {
        for name in [
            "wifi-otpgate",
            "pam-radius-auth-client",
            "pam-radius-auth-conf",
            "pam-radius-auth-pam",
        ] {
            readme_block(name).unwrap();
        }
    }
}
