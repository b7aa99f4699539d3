//! The crate's layers (docs/ARCHITECTURE.md): each folder of `src/` is a layer, and a file may
//! name, through `crate::`, only its own layer or lower ones; and no files import each other
//! in a loop. A `crate::X` where `X` is no layer (`crate::Pid`) names lib.rs, the top.
//! Comments and strings are blanked as in the shm crate's test (shm/tests/layers.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Bottom first; each layer is a folder with its root file (`base.rs` and `base/`).
const LAYERS: &[&str] = &[
    "base", "wire", "links", "runtime", "remote", "patterns", "lib",
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

/// The paths of a use tree or an inline path (`a::{b, c::d}`, `a::b::f()`), each cut to its first
/// two segments; a macro (`log!`) gives none.
fn tree(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(g) = s.strip_prefix('{') {
        let mut out = Vec::new();
        let (mut depth, mut item) = (0, String::new());
        for ch in g.chars() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(tree(&item));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(ch);
        }
        out.extend(tree(&item));
        return out;
    }
    let name: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || name == "self" {
        return Vec::new();
    }
    let rest = s[name.len()..].trim_start();
    if rest.starts_with('!') {
        return Vec::new();
    }
    match rest.strip_prefix("::") {
        Some(r) => {
            let subs = tree(r);
            if subs.is_empty() {
                vec![vec![name]]
            } else {
                subs.into_iter()
                    .map(|p| vec![name.clone(), p[0].clone()])
                    .collect()
            }
        }
        None => vec![vec![name]],
    }
}

/// Every `crate::` path of `code` with its line.
fn crate_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (start, _) in code.match_indices("crate::") {
        if ident(code[..start].chars().last().as_ref()) || code[..start].ends_with('$') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        for p in tree(&code[start + "crate::".len()..]) {
            out.push((line, p));
        }
    }
    out
}

/// Every `.rs` file under `dir` as its module path (`runtime/store`) and its path, sorted.
fn sources(dir: &Path) -> Vec<(String, PathBuf)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().with_extension("");
                out.push((rel.to_string_lossy().into_owned(), p.clone()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The layer of a file: its folder, or its own name for a layer's root file.
fn layer_of(module: &str) -> &str {
    module.split('/').next().unwrap_or(module)
}

/// The file a `crate::a::b` path names: `a/b.rs` when it exists, else `a.rs`, else lib.rs.
fn target_file(path: &[String], files: &BTreeSet<String>) -> String {
    if let [a, b, ..] = path {
        let f = format!("{a}/{b}");
        if files.contains(&f) {
            return f;
        }
    }
    match path.first() {
        Some(a) if files.contains(a) => a.clone(),
        _ => "lib".into(),
    }
}

/// Layer violations and import cycles between files, one line each.
fn violations(src: &Path) -> Vec<String> {
    let files = sources(src);
    let names: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let rank = |l: &str| LAYERS.iter().position(|x| *x == l);
    let mut found = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &files {
        let Some(mine) = rank(layer_of(module)) else {
            found.push(format!(
                "{module}.rs is in no layer: add its folder to LAYERS"
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).expect("a source file");
        for (line, p) in crate_paths(&code_only(&text)) {
            let target = target_file(&p, &names);
            if &target == module {
                continue;
            }
            edges
                .entry(module.clone())
                .or_default()
                .insert(target.clone());
            let theirs = rank(layer_of(&target)).unwrap_or(usize::MAX);
            if theirs > mine {
                found.push(format!(
                    "{module}.rs:{line} names crate::{}, in {target}.rs of layer {}: a file may \
                     name only its own layer ({}) or lower ones",
                    p.join("::"),
                    LAYERS.get(theirs).unwrap_or(&"?"),
                    LAYERS[mine]
                ));
            }
        }
    }
    // Cycles between files, each reported once, starting from its smallest file.
    let mut reported = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![vec![start.clone()]];
        while let Some(trail) = stack.pop() {
            let at = trail.last().unwrap();
            for next in edges.get(at).into_iter().flatten() {
                if next == start {
                    if reported.insert(trail.clone()) {
                        found.push(format!("import cycle: {} -> {start}", trail.join(" -> ")));
                    }
                } else if next > start && !trail.contains(next) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push(t);
                }
            }
        }
    }
    found
}

#[test]
fn files_name_only_their_own_layer_or_lower_and_form_no_cycle() {
    let found = violations(Path::new(SRC));
    assert!(
        found.is_empty(),
        "layer violations:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn use_trees_and_inline_paths() {
    let code = code_only(
        "use crate::{a::X, b, c::{d, e::F}};\n// crate::comment\nfn f() { crate::g::h::i(); \
         crate::log!(x); $crate::m(); my_crate::n(); crate::Pid }\n",
    );
    let got: Vec<(usize, String)> = crate_paths(&code)
        .into_iter()
        .map(|(l, p)| (l, p.join("::")))
        .collect();
    let want = [
        (1, "a::X"),
        (1, "b"),
        (1, "c::d"),
        (1, "c::e"),
        (3, "g::h"),
        (3, "Pid"),
    ];
    assert_eq!(got, want.map(|(l, p)| (l, p.to_string())));
}

/// The checker itself: an upward import, a cycle, and a file in no layer are reported.
#[test]
fn the_checker_reports_upward_imports_cycles_and_strays() {
    let dir = std::env::temp_dir().join(format!("cohort-core-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["base", "wire"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let w = |p: &str, s: &str| std::fs::write(dir.join(p), s).unwrap();
    w("lib.rs", "mod base;\nmod wire;\n");
    w("base.rs", "pub mod a;\npub mod b;\n");
    w(
        "base/a.rs",
        "use crate::base::b::X;\n// crate::wire::codec in a comment\n",
    );
    w(
        "base/b.rs",
        "use crate::base::a::Y;\n\nfn f() { crate::wire::codec::g(); }\n",
    );
    w("wire.rs", "pub mod codec;\n");
    w("wire/codec.rs", "pub fn g() {}\n");
    w("stray.rs", "");
    let found = violations(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        [
            "base/b.rs:3 names crate::wire::codec, in wire/codec.rs of layer wire: a file may \
             name only its own layer (base) or lower ones",
            "stray.rs is in no layer: add its folder to LAYERS",
            "import cycle: base/a -> base/b -> base/a",
        ]
    );
}

/// What only layer 5 (`remote/`) may use to reach the network: protocol messages and the
/// runtime's requests. The patterns go through its fan-out engine (`remote/fanout.rs`) and the
/// collectives' messages (`remote/coll.rs`).
const NETWORK: &[&str] = &[
    "Msg::",
    "wire::proto",
    ".request(",
    "request_start",
    "request_finish",
    "await_all",
    "PendingReq",
    ".coll.",
];

/// Each use of [`NETWORK`] in a file of `patterns/`, one line each.
fn network_uses(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (module, path) in sources(src) {
        if layer_of(&module) != "patterns" {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&path).expect("a source file"));
        for (i, line) in code.lines().enumerate() {
            for n in NETWORK.iter().filter(|n| line.contains(*n)) {
                found.push(format!(
                    "{module}.rs:{} uses {n}: patterns reach the network through remote/",
                    i + 1
                ));
            }
        }
    }
    found
}

#[test]
fn patterns_reach_the_network_only_through_layer_5() {
    let found = network_uses(Path::new(SRC));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_network_checker_reports_protocol_use_in_patterns() {
    let dir = std::env::temp_dir().join(format!("cohort-core-net-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["patterns", "remote"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let w = |p: &str, s: &str| std::fs::write(dir.join(p), s).unwrap();
    w(
        "patterns/p.rs",
        "// Msg:: in a comment\nfn f() { rt.request_start(p, &Msg::Call { x }, b); }\n",
    );
    w("remote/r.rs", "fn g() { rt.request(p, &Msg::Fetch, b); }\n");
    let found = network_uses(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        [
            "patterns/p.rs:2 uses Msg::: patterns reach the network through remote/",
            "patterns/p.rs:2 uses request_start: patterns reach the network through remote/",
        ]
    );
}
