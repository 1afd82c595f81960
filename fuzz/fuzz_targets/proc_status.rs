//! The parsers of workload attestation (`agent/src/attest.rs`): the `Groups:` line of
//! `/proc/<pid>/status` and the name lookup in `/etc/passwd` and `/etc/group`. The status
//! file is written by the kernel, but its `Name:` line holds the caller's own process name
//! (any bytes it chose, escaped), and the user databases may be edited by tools the workload
//! influences; a panic here would fail every attestation.
//!
//! Input: four bytes of numeric id (little-endian), then the file text.
#![no_main]

use fedhub_agent::attest::fuzzing::{name_of, supplementary_gids};
use fedhub_fuzz::check_heap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    run(data);
    check_heap();
});

fn run(data: &[u8]) {
    let Some((id, text)) = data.split_first_chunk::<4>() else {
        return;
    };
    // The agent reads these files with `read_to_string`: non-UTF-8 fails before parsing.
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let id = u32::from_le_bytes(*id);
    groups(text);
    name(text, id);
}

fn groups(status: &str) {
    let line = status.lines().find_map(|line| line.strip_prefix("Groups:"));
    match supplementary_gids(status) {
        Ok(gids) => {
            let line = line.expect("groups found without a Groups line");
            let expected: Vec<u32> = line
                .split_whitespace()
                .map(|gid| gid.parse().expect("every gid parsed"))
                .collect();
            assert_eq!(gids, expected);
            // As the kernel writes it, and back.
            let written: Vec<String> = gids.iter().map(u32::to_string).collect();
            let again = supplementary_gids(&format!("Groups:\t{}\n", written.join(" ")));
            assert_eq!(again.as_ref(), Ok(&gids));
        }
        Err(_) => assert!(
            line.is_none_or(|line| line
                .split_whitespace()
                .any(|gid| gid.parse::<u32>().is_err())),
            "a valid Groups line refused"
        ),
    }
}

fn name(db: &str, id: u32) {
    let Some(name) = name_of(db, id) else {
        return;
    };
    assert!(!name.is_empty());
    assert!(!name.contains(':') && !name.contains('\n'));
    // The first line that is no comment and names `id` in its third field names it.
    let line = db
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            fields.len() >= 3 && fields[2].parse() == Ok(id) && !fields[0].is_empty()
        })
        .expect("a name found without its line");
    assert_eq!(line.split(':').next(), Some(name));
}
