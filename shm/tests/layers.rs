//! The crate's files stand in layers (see the crate docs): a file may name, through `crate::`,
//! only files of its own layer or a lower one. A `crate::X` where `X` is no file of `src/`
//! (`crate::Pid`, `crate::SharedArray`) names lib.rs, the top. Self-contained on purpose: the
//! same test is meant to be copied for other crates with their own `SRC` and `LAYERS`.

use std::collections::BTreeMap;
use std::path::Path;

/// The crate's source folder (flat: one module per file).
const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Bottom first. Keep in step with the "Layers" section of the crate docs (src/lib.rs).
const LAYERS: &[&[&str]] = &[
    &["index", "ids"],
    &["error"],
    &["header", "lease"],
    &["mapping"],
    &["segment"],
    &["file"],
    &["handle"],
    &["array"],
    &["cluster"],
    &["lib"],
];

/// `src` with comments, string and char literals blanked (newlines kept, so line numbers hold).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && matches!(next, Some('"') | Some('#'))
            && !ident(c.get(i.wrapping_sub(1)))
        {
            // A raw string r"..." or r#"..."#: ends at a quote followed by as many #.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            while j < c.len() && !(c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')))
            {
                blank(&mut out, c[j]);
                j += 1;
            }
            i = j + 1 + hashes;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = c.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            i += 1;
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\''); a lifetime ('a) has no closing quote there.
            i += if next == Some('\\') { 3 } else { 2 };
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident(ch: Option<&char>) -> bool {
    ch.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// The first path segments named after each `crate::` (and each item of a `crate::{...}`
/// group), with their line numbers.
fn crate_refs(code: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (start, _) in code.match_indices("crate::") {
        if ident(code[..start].chars().last().as_ref()) || code[..start].ends_with('$') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        let rest = code[start + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        refs.push((line, first_segment(&item)));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
            refs.push((line, first_segment(&item)));
        } else {
            refs.push((line, first_segment(rest)));
        }
    }
    refs.retain(|(_, name)| !name.is_empty() && name != "self");
    refs
}

fn first_segment(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every file of `src` that breaks `layers`, as one line each; also files on no layer, or on
/// a layer but missing.
fn violations(src: &Path, layers: &[&[&str]]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(n, files)| files.iter().map(move |f| (*f, n)))
        .collect();
    let mut found = Vec::new();
    let mut seen = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .unwrap_or_else(|e| panic!("reading {}: {e}", src.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    entries.sort();
    let modules: Vec<String> = entries
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for (path, name) in entries.iter().zip(&modules) {
        seen.push(name.as_str());
        let Some(&mine) = layer_of.get(name.as_str()) else {
            found.push(format!("{name}.rs is on no layer: add it to LAYERS"));
            continue;
        };
        let text = std::fs::read_to_string(path).expect("a source file");
        for (line, target) in crate_refs(&code_only(&text)) {
            let file = if modules.contains(&target) {
                target.clone()
            } else {
                "lib".to_owned()
            };
            if file == *name {
                continue;
            }
            let theirs = layer_of.get(file.as_str()).copied().unwrap_or(usize::MAX);
            if theirs > mine {
                found.push(format!(
                    "{name}.rs:{line} (layer {}) names crate::{target}, which is {file}.rs \
                     (layer {}): a file may name only its own layer or lower ones",
                    mine + 1,
                    theirs.saturating_add(1)
                ));
            }
        }
    }
    for name in layer_of.keys() {
        if !seen.contains(name) {
            found.push(format!("{name}.rs is on a layer but not in src/"));
        }
    }
    found
}

#[test]
fn files_name_only_their_own_layer_or_lower() {
    let found = violations(Path::new(SRC), LAYERS);
    assert!(
        found.is_empty(),
        "layer violations:\n  {}",
        found.join("\n  ")
    );
}

/// The checker itself: it must see `use` groups and inline paths, and skip comments, strings,
/// `$crate` and names that merely end in `crate`.
#[test]
fn the_checker_sees_paths_and_skips_comments_and_strings() {
    let code = code_only(
        "use crate::{a::X, b, c::{d, e}};\n\
         // crate::comment\n\
         /* crate::block /* nested */ crate::block2 */\n\
         let s = \"crate::string\"; let r = r#\"crate::raw\"#; let q = '\"'; let e = '\\'';\n\
         fn f<'a>() { crate::g::h(); $crate::m(); my_crate::n(); crate::Pid }\n",
    );
    let refs = crate_refs(&code);
    let want: Vec<(usize, String)> = [(1, "a"), (1, "b"), (1, "c"), (5, "g"), (5, "Pid")]
        .iter()
        .map(|(l, n)| (*l, n.to_string()))
        .collect();
    assert_eq!(refs, want);
}

/// And it must report an upward import by file, line and target, and a file on no layer.
#[test]
fn the_checker_reports_upward_imports_and_unlisted_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("low.rs"), "\nuse crate::high::Thing;\n").unwrap();
    std::fs::write(dir.path().join("high.rs"), "use crate::low::Other;\n").unwrap();
    std::fs::write(dir.path().join("stray.rs"), "").unwrap();
    std::fs::write(dir.path().join("lib.rs"), "mod low;\nmod high;\n").unwrap();
    let found = violations(dir.path(), &[&["low"], &["high"], &["lib"]]);
    assert_eq!(
        found,
        [
            "low.rs:2 (layer 1) names crate::high, which is high.rs (layer 2): a file may name \
             only its own layer or lower ones",
            "stray.rs is on no layer: add it to LAYERS",
        ]
    );
}
