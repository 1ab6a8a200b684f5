//! The documentation rules of `docs/conventions.md` that a program can
//! check, applied to the source of every published crate:
//!
//! - every public item (fn, struct, enum, trait, type, const, static) has an
//!   `# Examples` section;
//! - every public `async fn`, `poll_*` method and fn returning
//!   `impl Future` has a `# Cancel safety` section;
//! - every public fn returning a `Result` has an `# Errors` section (clippy's
//!   `missing_errors_doc` checks it too; `missing_panics_doc` does `# Panics`).
//!
//! "Public" is read off the source: an item declared `pub` (not `pub(crate)`)
//! outside test modules. The workspace denies `unreachable_pub`, so a `pub`
//! item is part of the API. Items marked `#[doc(hidden)]` and the files of a
//! hidden module (`src/private/`) are not documented API and are skipped.

use std::fs;
use std::path::Path;

use anyhow::Result;

/// One public item found in the source, with the doc comment above it.
#[derive(Debug)]
struct Item {
    line: usize,
    kind: &'static str,
    name: String,
    signature: String,
    docs: String,
    hidden: bool,
}

/// Checks every `.rs` file under `src` and appends the problems found.
pub(crate) fn check_dir(src: &Path, problems: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(src)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "private") {
                continue;
            }
            check_dir(&path, problems)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path)?;
            let shown = std::env::current_dir()
                .ok()
                .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
                .unwrap_or_else(|| path.clone());
            for problem in check_source(&text) {
                problems.push(format!("{}:{problem}", shown.display()));
            }
        }
    }
    Ok(())
}

/// The problems of one file, each as `line: message`.
fn check_source(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in public_items(text) {
        if item.hidden {
            continue;
        }
        let what = format!("{} `{}`", item.kind, item.name);
        if !has_section(&item.docs, "Examples") {
            out.push(format!(
                "{}: public {what} has no `# Examples` section",
                item.line
            ));
        }
        if item.kind == "fn" {
            let cancellable = item.signature.contains("async fn")
                || item.name.starts_with("poll_")
                || item.signature.contains("-> impl Future")
                || item.signature.contains("-> impl std::future::Future");
            if cancellable && !has_section(&item.docs, "Cancel safety") {
                out.push(format!(
                    "{}: public {what} can be cancelled but has no `# Cancel safety` section",
                    item.line
                ));
            }
            if returns_result(&item.signature) && !has_section(&item.docs, "Errors") {
                out.push(format!(
                    "{}: public {what} returns a `Result` but has no `# Errors` section",
                    item.line
                ));
            }
        }
    }
    out
}

fn has_section(docs: &str, heading: &str) -> bool {
    docs.lines().any(|l| {
        let l = l.trim();
        l.strip_prefix('#')
            .map(|rest| rest.trim_start_matches('#').trim() == heading)
            .unwrap_or(false)
    })
}

/// Whether the fn's return type (after its argument list, before any
/// `where` clause or body) is a `Result` (`Result<..>`, `io::Result<..>`, …).
fn returns_result(signature: &str) -> bool {
    let Some(open) = signature.find('(') else {
        return false;
    };
    let mut depth = 0;
    let mut close = None;
    for (i, c) in signature[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else { return false };
    let after = &signature[close + 1..];
    let after = after.split(" where ").next().unwrap_or(after);
    let Some(ret) = after.trim().strip_prefix("->") else {
        return false;
    };
    let ret = ret.trim().trim_end_matches(['{', ';']).trim();
    let base = ret.split('<').next().unwrap_or(ret).trim();
    base == "Result" || base.ends_with("::Result")
}

const KINDS: [&str; 7] = ["fn", "struct", "enum", "trait", "type", "const", "static"];

fn public_items(text: &str) -> Vec<Item> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        // Test modules end the API part of a file in this workspace.
        if trimmed.starts_with("#[cfg(test)]")
            || trimmed.starts_with("#[cfg(all(test")
            || trimmed.starts_with("mod tests")
        {
            let next = lines.get(i + 1).map(|l| l.trim_start()).unwrap_or("");
            if trimmed.starts_with("mod tests") || next.starts_with("mod ") {
                break;
            }
        }
        if let Some((kind, name)) = item_start(trimmed) {
            let signature = signature_from(&lines, i);
            let (docs, hidden) = docs_above(&lines, i);
            items.push(Item {
                line: i + 1,
                kind,
                name,
                signature,
                docs,
                hidden,
            });
        }
        i += 1;
    }
    items
}

/// `(kind, name)` if the line declares a public item.
fn item_start(trimmed: &str) -> Option<(&'static str, String)> {
    let rest = trimmed.strip_prefix("pub ")?;
    let mut words = rest.split_whitespace().peekable();
    // Qualifiers before the keyword: `pub const fn`, `pub async unsafe fn`…
    let mut const_seen = false;
    while let Some(&w) = words.peek() {
        match w {
            "async" | "unsafe" | "extern" | "\"C\"" => {
                words.next();
            }
            "const" if !const_seen => {
                const_seen = true;
                words.next();
                if words.peek().is_some_and(|w| *w == "fn" || *w == "unsafe") {
                    continue;
                }
                let name = words.next()?;
                return Some(("const", ident(name)));
            }
            _ => break,
        }
    }
    let keyword = words.next()?;
    let kind = KINDS.iter().find(|k| **k == keyword)?;
    let name = ident(words.next()?);
    if name.is_empty() {
        return None;
    }
    Some((kind, name))
}

fn ident(word: &str) -> String {
    word.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The declaration up to its body or end (`{` or `;`), on one line.
fn signature_from(lines: &[&str], start: usize) -> String {
    let mut sig = String::new();
    for line in &lines[start..lines.len().min(start + 30)] {
        let code = line.split("//").next().unwrap_or(line);
        sig.push(' ');
        sig.push_str(code.trim());
        if code.trim_end().ends_with('{') || code.trim_end().ends_with(';') {
            break;
        }
    }
    sig
}

/// The `///` doc comment above the item (attributes in between skipped),
/// and whether one of those attributes is `#[doc(hidden)]`.
fn docs_above(lines: &[&str], item: usize) -> (String, bool) {
    let mut docs = Vec::new();
    let mut hidden = false;
    let mut j = item;
    let mut in_attribute = false;
    while j > 0 {
        j -= 1;
        let t = lines[j].trim();
        if let Some(doc) = t.strip_prefix("///") {
            docs.push(doc.to_string());
            continue;
        }
        if t.starts_with("#[") {
            hidden |= t.contains("doc(hidden)");
            in_attribute = false;
            continue;
        }
        // The tail of an attribute spread over several lines.
        if t.ends_with(")]") || t.ends_with("]") || in_attribute {
            in_attribute = !t.starts_with("#[");
            hidden |= t.contains("doc(hidden)");
            continue;
        }
        break;
    }
    docs.reverse();
    (docs.join("\n"), hidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_fn_without_examples_is_reported() {
        let problems = check_source("/// Does it.\npub fn go() {}\n");
        assert_eq!(problems, ["2: public fn `go` has no `# Examples` section"]);
    }

    #[test]
    fn sections_are_found_under_attributes() {
        let src = "/// Sends.\n///\n/// # Examples\n///\n/// ```\n/// ```\n///\n/// # Cancel safety\n///\n/// Safe.\n///\n/// # Errors\n///\n/// Closed.\n#[inline]\n#[cfg_attr(\n    docsrs,\n    doc(cfg(x))\n)]\npub async fn send(&self) -> Result<(), E> {\n";
        assert!(check_source(src).is_empty(), "{:?}", check_source(src));
    }

    #[test]
    fn cancellation_and_errors_sections_are_required() {
        let src = "/// # Examples\npub async fn recv(&mut self) -> Option<T> {}\n/// # Examples\npub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<T> {}\n/// # Examples\npub fn build(self)\n    -> Result<X, ConfigError> {}\n";
        let problems = check_source(src);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("`recv` can be cancelled"));
        assert!(problems[1].contains("`poll_recv` can be cancelled"));
        assert!(problems[2].contains("`build` returns a `Result`"));
    }

    #[test]
    fn private_hidden_and_test_items_are_skipped() {
        let src = "pub(crate) fn inner() {}\n#[doc(hidden)]\npub fn hidden() {}\npub use x::y;\n#[cfg(test)]\nmod tests {\n    pub fn helper() {}\n}\n";
        assert!(check_source(src).is_empty(), "{:?}", check_source(src));
    }

    #[test]
    fn items_of_every_kind_are_found() {
        let src = "pub struct A;\npub enum B {}\npub trait C {}\npub type D = u8;\npub const E: u8 = 1;\npub static F: u8 = 1;\npub const fn g() {}\npub unsafe fn h() {}\n";
        let names: Vec<String> = public_items(src).into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["A", "B", "C", "D", "E", "F", "g", "h"]);
    }

    #[test]
    fn result_returns_are_recognised() {
        assert!(returns_result(" pub fn a() -> Result<(), E> {"));
        assert!(returns_result(" pub fn a() -> io::Result<()> {"));
        assert!(returns_result(
            " pub fn a<F>(f: F) -> Result<u8, E> where F: Fn() -> u8 {"
        ));
        assert!(!returns_result(
            " pub fn a(f: impl Fn() -> Result<(), E>) -> u8 {"
        ));
        assert!(!returns_result(
            " pub fn a(f: impl Fn() -> Result<(), E>) {"
        ));
        assert!(!returns_result(" pub fn a() -> Option<u8> {"));
    }
}
