//! docs/cli.md's command tree is the binary's: every documented command answers `--help`, and
//! every command of the binary (as its `--help` lists them) is in the tree.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step is a failed test"
)]

use std::collections::BTreeSet;
use std::process::Command;

const FEDHUB: &str = env!("CARGO_BIN_EXE_fedhub");

/// `fedhub PATH --help`: its stdout, or `None` when it fails.
fn help(path: &[String]) -> Option<String> {
    let output = Command::new(FEDHUB)
        .args(path)
        .arg("--help")
        .env_remove("FEDHUB_LOG")
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8(output.stdout).unwrap())
}

/// The subcommands a help text lists under `Commands:` (without clap's `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim_end() != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        // A wrapped description goes on deeper-indented lines.
        .filter(|line| !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command of the binary that has no subcommands, as `group sub …`.
fn binary_commands(path: &mut Vec<String>, found: &mut BTreeSet<String>) {
    let text = help(path).unwrap_or_else(|| panic!("fedhub {path:?} --help failed"));
    let subs = subcommands(&text);
    if subs.is_empty() {
        found.insert(path.join(" "));
    }
    for sub in subs {
        path.push(sub);
        binary_commands(path, found);
        path.pop();
    }
}

/// The commands of the tree in docs/cli.md: its first `text` block, a command per line after
/// the tree's branch, `a|b` for alternatives, flags and comments after it.
fn documented_commands() -> BTreeSet<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md")).unwrap();
    let block = doc
        .split_once("```text\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap()
        .0;
    let mut commands = BTreeSet::new();
    for line in block.lines() {
        let Some((_, rest)) = line.split_once("── ") else {
            continue;
        };
        let words: Vec<&str> = rest
            .split("  ")
            .next()
            .unwrap()
            .split_whitespace()
            .take_while(|word| {
                word.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '|')
            })
            .collect();
        let mut paths = vec![String::new()];
        for word in words {
            paths = paths
                .iter()
                .flat_map(|path| {
                    word.split('|')
                        .map(move |alt| format!("{path} {alt}").trim().to_owned())
                })
                .collect();
        }
        commands.extend(paths.into_iter().filter(|p| !p.is_empty()));
    }
    commands
}

#[test]
fn the_documented_command_tree_is_the_binarys() {
    let documented = documented_commands();
    assert!(documented.contains("hub run"), "{documented:?}");
    for command in &documented {
        let path: Vec<String> = command.split(' ').map(str::to_owned).collect();
        assert!(
            help(&path).is_some(),
            "docs/cli.md documents `fedhub {command}`, which the binary does not have"
        );
    }
    let mut found = BTreeSet::new();
    binary_commands(&mut Vec::new(), &mut found);
    let undocumented: Vec<&String> = found.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "the binary has commands docs/cli.md's command tree omits: {undocumented:?}"
    );
}
