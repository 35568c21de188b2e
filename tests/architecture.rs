//! The invariants ARCHITECTURE.md states about the source tree, checked on the files
//! themselves: pai-core's modules form layers (a module imports only modules below it, so no
//! import circle can form), and no source file grows past one concept's length.

use std::path::{Path, PathBuf};

/// pai-core's top-level modules, bottom first. A module may name only modules before it.
const LAYERS: &[&str] = &[
    "float",
    "phase",
    "error",
    "disk",
    "idx",
    "host",
    "collective",
    "testing",
    "axis",
    "params",
    "correlation",
    "processor",
    "dendritic",
    "layers",
    "model",
    "optim",
    "parallel",
    "checkpoint",
    "tracker",
];

/// Longest source file, in lines.
const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder is readable") {
        let path = entry.expect("source entry is readable").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The top-level module a file of pai-core belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(name) => Some(name.to_string()),
        None => Some(first),
    }
}

/// Every `crate::name` (and `$crate::name`) a line of code names, comments left out.
fn named_modules(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[test]
fn pai_core_modules_import_only_the_layers_below_them() {
    let src = root().join("pai-core/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = rank(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no place in LAYERS (add it, and to ARCHITECTURE.md)",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source is readable");
        for (line, target) in named_modules(&text) {
            match rank(&target) {
                Some(r) if r < own || target == module => {}
                Some(_) => wrong.push(format!(
                    "{}:{line}: `{module}` names `{target}`, which is not below it",
                    file.display()
                )),
                None => {} // a crate-root item such as `crate::prelude`
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    // the rule above would pass vacuously if the scan found nothing
    let found = named_modules("use crate::tracker::Tracker; // crate::model in a comment");
    assert_eq!(found, vec![(1, "tracker".to_string())]);
}

#[test]
fn no_source_file_is_past_one_concept() {
    let mut files = Vec::new();
    for dir in ["pai-core/src", "pai-macros/src", "src"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 40, "the scan found the sources");
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files past {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}
