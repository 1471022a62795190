//! A small data-driven test runner in the style of raft-rs's `testdata` files: each case is a
//! command line (the lines before `----`) and the output it must give (the lines after, up to a
//! blank line). `#` starts a comment line between cases. Run with `REWRITE=1` to write the
//! actual outputs back into the file after a deliberate change; review the diff.

use std::fmt::Write as _;
use std::path::Path;

struct Case {
    input: Vec<String>,
    expected: Vec<String>,
}

/// Text before the first case and between cases (comments, blank lines) is kept as it is.
enum Chunk {
    Text(String),
    Case(Case),
}

fn parse(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            chunks.push(Chunk::Text(line.to_string()));
            continue;
        }
        let mut input = vec![line.to_string()];
        for line in lines.by_ref() {
            if line == "----" {
                break;
            }
            input.push(line.to_string());
        }
        let mut expected = Vec::new();
        while let Some(line) = lines.peek() {
            if line.trim().is_empty() {
                break;
            }
            expected.push(lines.next().expect("peeked").to_string());
        }
        chunks.push(Chunk::Case(Case { input, expected }));
    }
    chunks
}

/// Runs every case of `path` (relative to the crate root) through `run`, in order, and checks
/// its output.
///
/// # Panics
/// On the first case whose output differs (unless `REWRITE` is set), or if the file cannot be
/// read.
pub fn run_file(path: &str, mut run: impl FnMut(&[String]) -> String) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut rewritten = String::new();
    for chunk in parse(&text) {
        match chunk {
            Chunk::Text(line) => {
                let _ = writeln!(rewritten, "{line}");
            }
            Chunk::Case(case) => {
                let actual = run(&case.input);
                let actual: Vec<String> = actual.lines().map(str::to_string).collect();
                if !rewrite {
                    assert_eq!(
                        actual,
                        case.expected,
                        "{path}: case `{}` gave\n{}\n",
                        case.input.join(" / "),
                        actual.join("\n")
                    );
                }
                for line in case.input.iter().chain([&"----".to_string()]) {
                    let _ = writeln!(rewritten, "{line}");
                }
                for line in &actual {
                    let _ = writeln!(rewritten, "{line}");
                }
            }
        }
    }
    if rewrite {
        std::fs::write(&full, rewritten).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// `key=value` arguments of a command line, and the bare words before them.
pub struct Args {
    pub words: Vec<String>,
    pairs: Vec<(String, String)>,
}

impl Args {
    pub fn parse(line: &str) -> Args {
        let mut words = Vec::new();
        let mut pairs = Vec::new();
        for token in line.split_whitespace() {
            match token.split_once('=') {
                Some((k, v)) => pairs.push((k.to_string(), v.to_string())),
                None => words.push(token.to_string()),
            }
        }
        Args { words, pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// # Panics
    /// The argument is missing or does not parse.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> T {
        self.get(key)
            .unwrap_or_else(|| panic!("missing {key}="))
            .parse()
            .unwrap_or_else(|_| panic!("bad {key}="))
    }

    pub fn num_or<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.get(key).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| panic!("bad {key}="))
        })
    }

    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }

    pub fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }
}

/// `1,2,3` as node ids.
pub fn nodes(list: &str) -> Vec<gregor_storage::NodeId> {
    if list.is_empty() || list == "-" {
        return Vec::new();
    }
    list.split(',')
        .map(|n| gregor_storage::NodeId(n.parse().expect("node id")))
        .collect()
}

/// Node ids as `1,2,3`.
pub fn list(nodes: &[gregor_storage::NodeId]) -> String {
    if nodes.is_empty() {
        return "-".into();
    }
    nodes
        .iter()
        .map(|n| n.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
