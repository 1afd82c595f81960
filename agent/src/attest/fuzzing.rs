//! The parsers of workload attestation's `/proc` and `/etc` files, for the fuzz targets in
//! `fuzz/` (docs/fuzzing.md). Not part of the API: thin wrappers with no behaviour of their own.

/// The supplementary group ids on the `Groups:` line of a `/proc/<pid>/status` text.
///
/// # Errors
/// When there is no such line or an id is not a number.
pub fn supplementary_gids(status: &str) -> Result<Vec<u32>, String> {
    super::supplementary_gids(status)
}

/// The name of numeric id `id` in a `/etc/passwd` or `/etc/group` text.
pub fn name_of(db: &str, id: u32) -> Option<&str> {
    super::name_of(db, id)
}
