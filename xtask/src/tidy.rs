//! The tidy check: fails on drift that the compiler does not catch — a crate
//! without README or `//!` overview, incomplete package metadata, markers
//! left behind (`todo!`, `dbg!`, ignored tests), versioned internal
//! dev-dependencies, and a pattern crate missing from the facade, the README
//! or the cookbook.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Packages that are not patterns: the shared core and the facade.
const NOT_PATTERNS: [&str; 2] = ["async-patterns-core", "async-patterns"];

pub(crate) fn check() -> Result<()> {
    println!("\n::: tidy :::");
    let meta = metadata()?;
    let mut problems = Vec::new();
    for package in packages(&meta) {
        check_package(package, &mut problems)?;
    }
    for dir in ["crates", "xtask", "benches"] {
        scan_markers(Path::new(dir), &mut problems)?;
    }
    check_cookbook_links(&mut problems)?;
    if problems.is_empty() {
        println!("tidy: all clear");
        return Ok(());
    }
    for p in &problems {
        println!("tidy: {p}");
    }
    bail!("{} tidy problem(s), listed above", problems.len())
}

/// `publish = false` shows in `cargo metadata` as an empty registry list.
fn is_published(package: &Value) -> bool {
    package["publish"]
        .as_array()
        .is_none_or(|registries| !registries.is_empty())
}

/// The names of the workspace's `publish = false` packages.
pub(crate) fn unpublished_packages() -> Result<Vec<String>> {
    let meta = metadata()?;
    Ok(packages(&meta)
        .filter(|p| !is_published(p))
        .map(|p| str_of(p, "name").to_string())
        .collect())
}

/// Where a crate keeps loom models: integration tests named `loom*`
/// (`tests/loom*.rs`, using the public API), or unit tests inside the crate
/// (`#[cfg(all(test, async_patterns_loom))]`) for models of private state
/// machines, so that no loom-only item is public.
#[derive(Debug)]
pub(crate) enum LoomModels {
    /// `cargo test --test <target>`.
    TestTarget(String),
    /// `cargo test --lib loom`: the unit tests whose path names loom.
    Lib,
}

/// `(package, models)` for every place a loom model lives.
pub(crate) fn loom_targets() -> Result<Vec<(String, LoomModels)>> {
    let meta = metadata()?;
    let mut out = Vec::new();
    for package in packages(&meta) {
        let name = str_of(package, "name").to_string();
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds = target["kind"].as_array();
            let is = |kind: &str| kinds.is_some_and(|k| k.iter().any(|k| k == kind));
            let target_name = str_of(target, "name");
            if is("test") && target_name.starts_with("loom") {
                out.push((
                    name.clone(),
                    LoomModels::TestTarget(target_name.to_string()),
                ));
            }
            if is("lib") {
                let src = Path::new(str_of(target, "src_path"))
                    .parent()
                    .context("a lib target without a directory")?
                    .to_path_buf();
                if contains_text(&src, LOOM_UNIT_TESTS)? {
                    out.push((name.clone(), LoomModels::Lib));
                }
            }
        }
    }
    Ok(out)
}

/// `(package, miri test targets)` for every published crate with `unsafe`
/// code in its `src/`: the crates miri must check. Its test targets named
/// `miri*` (`tests/miri*.rs`) are its stress tests for miri.
pub(crate) fn unsafe_crates() -> Result<Vec<MiriCrate>> {
    let meta = metadata()?;
    let mut out = Vec::new();
    for package in packages(&meta).filter(|p| is_published(p)) {
        let mut has_unsafe = false;
        let mut unit_stress = false;
        let mut miri_tests = Vec::new();
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds = target["kind"].as_array();
            let is = |kind: &str| kinds.is_some_and(|k| k.iter().any(|k| k == kind));
            let target_name = str_of(target, "name");
            if is("test") && target_name.starts_with("miri") {
                miri_tests.push(target_name.to_string());
            }
            if is("lib") {
                let src = Path::new(str_of(target, "src_path"))
                    .parent()
                    .context("a lib target without a directory")?
                    .to_path_buf();
                has_unsafe = contains_text(&src, "unsafe ")?;
                unit_stress = has_file_named(&src, "stress")?;
            }
        }
        if has_unsafe {
            out.push(MiriCrate {
                package: str_of(package, "name").to_string(),
                unit_stress,
                miri_tests,
            });
        }
    }
    Ok(out)
}

/// A published crate with `unsafe` code, for ci's miri section.
pub(crate) struct MiriCrate {
    pub(crate) package: String,
    /// Unit tests in a `*stress*` module (stress tests of private unsafe
    /// code), run under several seeds apart from the other unit tests.
    pub(crate) unit_stress: bool,
    /// Its `tests/miri*.rs` targets, run under several seeds.
    pub(crate) miri_tests: Vec<String>,
}

fn has_file_named(dir: &Path, part: &str) -> Result<bool> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if has_file_named(&path, part)? {
                return Ok(true);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path
                .file_stem()
                .is_some_and(|s| s.to_string_lossy().contains(part))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How a crate gates loom models kept among its unit tests.
const LOOM_UNIT_TESTS: &str = "cfg(all(test, async_patterns_loom))";

fn contains_text(dir: &Path, needle: &str) -> Result<bool> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if contains_text(&path, needle)? {
                return Ok(true);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && fs::read_to_string(&path)?.contains(needle)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn metadata() -> Result<Value> {
    let out = crate::run::output({
        let mut c = crate::run::cargo();
        c.args(["metadata", "--no-deps", "--format-version", "1"]);
        c
    })
    .context("`cargo metadata` failed")?;
    Ok(serde_json::from_str(&out)?)
}

fn packages(meta: &Value) -> impl Iterator<Item = &Value> {
    meta["packages"].as_array().into_iter().flatten()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn check_package(package: &Value, problems: &mut Vec<String>) -> Result<()> {
    let name = str_of(package, "name");
    let manifest = PathBuf::from(str_of(package, "manifest_path"));
    let dir = manifest.parent().context("manifest without a directory")?;
    let rel = dir
        .strip_prefix(std::env::current_dir()?)
        .unwrap_or(dir)
        .display()
        .to_string();

    if !dir.join("README.md").is_file() {
        problems.push(format!("{rel}: no README.md"));
    }
    let root = ["src/lib.rs", "src/main.rs"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file());
    match root {
        None => problems.push(format!("{rel}: neither src/lib.rs nor src/main.rs")),
        Some(root) => {
            let text = fs::read_to_string(&root)?;
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                problems.push(format!(
                    "{}: does not start with a `//!` overview",
                    root.display()
                ));
            }
        }
    }
    let manifest_text = fs::read_to_string(&manifest)?;
    if !manifest_text.contains("[lints]\nworkspace = true") {
        problems.push(format!("{rel}/Cargo.toml: no `[lints] workspace = true`"));
    }

    for dep in package["dependencies"].as_array().into_iter().flatten() {
        let internal = dep.get("path").is_some_and(|p| !p.is_null());
        if internal && dep["kind"] == "dev" && str_of(dep, "req") != "*" {
            problems.push(format!(
                "{rel}/Cargo.toml: dev-dependency `{}` on a workspace crate carries a version; \
                 use `path = ...` alone so publishing never needs it",
                str_of(dep, "name")
            ));
        }
    }

    if !is_published(package) {
        return Ok(());
    }
    for field in [
        "description",
        "license",
        "repository",
        "readme",
        "documentation",
        "rust_version",
    ] {
        if package[field].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{rel}/Cargo.toml: missing `{field}`"));
        }
    }
    for field in ["keywords", "categories"] {
        if package[field].as_array().is_none_or(Vec::is_empty) {
            problems.push(format!("{rel}/Cargo.toml: missing `{field}`"));
        }
    }
    if !dir.join("CHANGELOG.md").is_file() {
        problems.push(format!("{rel}: no CHANGELOG.md"));
    }
    let src = dir.join("src");
    if src.is_dir() {
        crate::api_docs::check_dir(&src, problems)?;
    }
    if package["metadata"]["docs"]["rs"].is_null() {
        problems.push(format!("{rel}/Cargo.toml: no `[package.metadata.docs.rs]`"));
    }
    let lib = fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
    for attr in ["missing_docs", "#![cfg_attr(docsrs, feature(doc_cfg))]"] {
        if !lib.contains(attr) {
            problems.push(format!("{rel}/src/lib.rs: missing `{attr}`"));
        }
    }
    if !NOT_PATTERNS.contains(&name) {
        check_pattern_is_wired(name, problems)?;
    }
    Ok(())
}

/// A pattern crate `async-patterns-X` must be a feature `X` of the facade
/// (and part of `full`), be listed in the README, and have `docs/X.md`
/// linked from the cookbook index.
fn check_pattern_is_wired(name: &str, problems: &mut Vec<String>) -> Result<()> {
    let short = name.trim_start_matches("async-patterns-");
    let facade = fs::read_to_string("crates/async-patterns/Cargo.toml")?;
    if !facade
        .lines()
        .any(|l| l.starts_with(&format!("{short} = ")))
    {
        problems.push(format!(
            "crates/async-patterns/Cargo.toml: no feature `{short}` for {name}"
        ));
    }
    let full = facade
        .lines()
        .find(|l| l.starts_with("full = "))
        .unwrap_or_default();
    if !full.contains(&format!("\"{short}\"")) {
        problems.push(format!(
            "crates/async-patterns/Cargo.toml: `full` does not enable `{short}`"
        ));
    }
    if !fs::read_to_string("README.md")?.contains(name) {
        problems.push(format!("README.md: {name} is not in the crate table"));
    }
    let page = format!("{short}.md");
    if !Path::new("docs").join(&page).is_file() {
        problems.push(format!(
            "docs/{page}: the cookbook page of {name} is missing"
        ));
    }
    if !fs::read_to_string("docs/README.md")?.contains(&format!("]({page})")) {
        problems.push(format!("docs/README.md: does not link {page}"));
    }
    Ok(())
}

/// Every relative `.md` link in the cookbook index points at a page that exists.
fn check_cookbook_links(problems: &mut Vec<String>) -> Result<()> {
    let index = fs::read_to_string("docs/README.md").context("docs/README.md is missing")?;
    for (i, _) in index.match_indices("](") {
        let target: String = index[i + 2..].chars().take_while(|c| *c != ')').collect();
        let file = target.split('#').next().unwrap_or_default();
        if file.ends_with(".md") && !file.contains("://") && !Path::new("docs").join(file).is_file()
        {
            problems.push(format!(
                "docs/README.md: links {file}, which does not exist"
            ));
        }
    }
    Ok(())
}

fn scan_markers(dir: &Path, problems: &mut Vec<String>) -> Result<()> {
    // Spelled in pieces so that this file does not flag itself.
    let markers = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("dbg", "!("),
        concat!("#[", "ignore"),
    ];
    // The bare `loom` cfg is the one a user's own loom tests set for every
    // crate they build: ours must never react to it — except to follow
    // tokio, which does (under it tokio has no I/O driver). Such a line is
    // marked, on the line before, with `tidy: tokio under a bare loom cfg`.
    let bare_loom = [
        concat!("(", "loom)"),
        concat!("(", "loom,"),
        concat!(", ", "loom)"),
        concat!(", ", "loom,"),
    ];
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            scan_markers(&path, problems)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path)?;
            let lines: Vec<&str> = text.lines().collect();
            for (n, line) in lines.iter().enumerate() {
                if let Some(m) = markers.iter().find(|m| line.contains(*m)) {
                    problems.push(format!(
                        "{}:{}: `{m}` left in the code",
                        path.display(),
                        n + 1
                    ));
                }
                let follows_tokio =
                    n > 0 && lines[n - 1].contains("tidy: tokio under a bare loom cfg");
                let cfg = line.contains("cfg") && !follows_tokio;
                if let Some(m) = bare_loom.iter().find(|m| cfg && line.contains(*m)) {
                    problems.push(format!(
                        "{}:{}: `{m}`: gate loom code on our own cfg, `async_patterns_loom`",
                        path.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    Ok(())
}
