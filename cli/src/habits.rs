//! Habits from SPIRE's command line: its single-dash camelCase flags (`-config`, `-spiffeID`,
//! `-socketPath`) are answered with the fedhub flag before clap sees them. Left to clap,
//! `hub run -config FILE` reads `-c onfig` and complains about FILE.

use clap::Command;
use clap::error::ErrorKind;

/// SPIRE flags whose fedhub flag is not the same words: (SPIRE name, fedhub flag, only under
/// this command group or anywhere).
const RENAMED: &[(&str, &str, Option<&str>)] = &[
    ("socketPath", "--socket", Some("api")),
    ("socketPath", "--admin-socket", None),
    ("dns", "--dns-name", None),
    ("trustDomainBundlePath", "--trust-domain-bundle", None),
    ("bundlePath", "--path", None),
    ("expandEnv", "--config", None),
];

/// Checks `args` (the whole command line, program name first) for a SPIRE-style flag; exits with
/// clap's usage error (code 2) naming the fedhub flag when there is one.
pub fn check(args: &[String], root: &Command) {
    if let Some((leaf, flag, suggestion)) = find(args, root) {
        let message = format!(
            "unexpected argument '{flag}' found\n\n  tip: `{flag}` is SPIRE's spelling; did you \
             mean `{suggestion}`? (fedhub's flags take two dashes and kebab-case)"
        );
        leaf.clone()
            .error(ErrorKind::UnknownArgument, message)
            .exit();
    }
}

/// The first SPIRE-style flag in `args`: the command it was given to, the flag as given and the
/// fedhub flag to use instead.
fn find<'a>(args: &[String], root: &'a Command) -> Option<(&'a Command, String, String)> {
    let mut leaf = root;
    let mut path: Vec<&str> = Vec::new();
    let mut spire = None;
    for arg in args.iter().skip(1) {
        if arg == "--" {
            break;
        }
        if let Some(sub) = leaf.find_subcommand(arg) {
            leaf = sub;
            path.push(sub.get_name());
            continue;
        }
        if spire.is_none() {
            spire = spire_name(arg).map(|name| (format!("-{name}"), name));
        }
    }
    let (given, name) = spire?;
    let suggestion = suggest(leaf, &path, name)?;
    Some((leaf, given, suggestion))
}

/// `spiffeID` for `-spiffeID` or `-spiffeID=spiffe://…`: a single dash, then a name of two or
/// more letters and digits starting with a letter.
fn spire_name(arg: &str) -> Option<&str> {
    let rest = arg.strip_prefix('-')?;
    let name = rest.split_once('=').map_or(rest, |(name, _)| name);
    let mut chars = name.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && name.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric()))
        .then_some(name)
}

/// The fedhub flag for SPIRE's `name` given to `command` (at `path`): one of the command's
/// long flags spelled the same without dashes and case (`spiffeID` → `--spiffe-id`), else a
/// known rename.
fn suggest(command: &Command, path: &[&str], name: &str) -> Option<String> {
    let folded = name.to_ascii_lowercase();
    let own = command
        .get_arguments()
        .filter_map(clap::Arg::get_long)
        .find(|long| long.replace('-', "") == folded);
    if let Some(long) = own {
        return Some(format!("--{long}"));
    }
    RENAMED
        .iter()
        .find(|(spire, _, group)| {
            spire.eq_ignore_ascii_case(name) && group.is_none_or(|g| path.first() == Some(&g))
        })
        .map(|(_, flag, _)| (*flag).to_owned())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn suggestion(line: &str) -> Option<String> {
        let mut root = crate::Cli::command();
        root.build();
        let args: Vec<String> = line.split(' ').map(str::to_owned).collect();
        find(&args, &root).map(|(leaf, given, flag)| {
            format!("{}: {given} -> {flag}", leaf.get_bin_name().unwrap_or("?"))
        })
    }

    #[test]
    fn spire_flags_get_the_fedhub_flag() {
        assert_eq!(
            suggestion("fedhub hub run -config hub.toml").as_deref(),
            Some("fedhub hub run: -config -> --config")
        );
        assert_eq!(
            suggestion("fedhub entry list -spiffeID spiffe://a.test/x").as_deref(),
            Some("fedhub entry list: -spiffeID -> --spiffe-id")
        );
        assert_eq!(
            suggestion("fedhub entry create -parentID=spiffe://a.test/x").as_deref(),
            Some("fedhub entry create: -parentID -> --parent-id")
        );
        assert_eq!(
            suggestion("fedhub entry create -x509SVIDTTL 3600").as_deref(),
            Some("fedhub entry create: -x509SVIDTTL -> --x509-svid-ttl")
        );
        assert_eq!(
            suggestion("fedhub api fetch x509 -socketPath /tmp/a.sock").as_deref(),
            Some("fedhub api fetch x509: -socketPath -> --socket")
        );
        assert_eq!(
            suggestion("fedhub entry list -socketPath /tmp/a.sock").as_deref(),
            Some("fedhub entry list: -socketPath -> --admin-socket")
        );
        assert_eq!(
            suggestion("fedhub entry create -dns a.example").as_deref(),
            Some("fedhub entry create: -dns -> --dns-name")
        );
    }

    #[test]
    fn fedhub_forms_pass() {
        for line in [
            "fedhub hub run -c hub.toml",
            "fedhub hub run --config hub.toml",
            "fedhub api fetch jwt -a aud -ojson",
            "fedhub entry list -o json",
            "fedhub entry show --entry-id -- -config",
            "fedhub entry list -nonsense",
        ] {
            assert_eq!(suggestion(line), None, "{line}");
        }
    }
}
