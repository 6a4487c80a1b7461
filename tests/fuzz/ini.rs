//! The INI object format (`config::ini::Ini::parse`): any text parses or is refused with a
//! short error, never a panic; what parses is within the bounds, and so is its printed form,
//! which parses to the same configuration and prints the same again.

use std::collections::HashSet;

use omraft::config::ini::{Ini, DEFAULT, MAX_BYTES, MAX_SECTIONS};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::hostile::{self, check_error};

/// Section names and parts of them.
const SECTIONS: &[&str] = &[
    "DEFAULT",
    "volume#data",
    "container#1",
    "disk#1",
    "volume",
    "#",
    "x#",
    "[",
    "]",
    " ",
];

/// Keywords and parts of them.
const KEYWORDS: &[&str] = &[
    "nodes", "size", "size@n1", "name", "type", "id", "#", ";", "[", "=", " ", "k",
];

/// Values and parts of them.
const VALUES: &[&str] = &[
    "{name}",
    "{clusternodes}",
    "4G",
    "n1 n2",
    "=",
    "[x]",
    "#",
    " ",
    "\\",
    "\"",
];

/// The tutorial's configuration, to mutate.
pub const TUTORIAL: &str = "[DEFAULT]\nnodes = {clusternodes}\norchestrate = ha\n\n[volume#data]\nname = {name}\nshared = true\nsize = 4G\npool = drbdvm\n\n[container#1]\ntype = kvm\nname = kvm1\n";

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (select(&["[", " [", "[ "][..]), hostile::text(SECTIONS), select(&["]", "] ", " ]", "", "]]"][..]))
            .prop_map(|(open, name, close)| format!("{open}{name}{close}")),
        6 => (
            hostile::text(KEYWORDS),
            select(&[" = ", "=", " =", "= ", "==", " = = ", ""][..]),
            hostile::text(VALUES)
        )
            .prop_map(|(k, eq, v)| format!("{k}{eq}{v}")),
        1 => (select(&["#", ";", " #"][..]), hostile::chars(20)).prop_map(|(c, t)| format!("{c}{t}")),
        1 => select(&["", "  ", "\t", "\r", "\u{85}", "\u{2028}"][..]).prop_map(str::to_string),
        1 => hostile::chars(30),
    ]
}

/// Text shaped like a configuration, with hostile parts; arbitrary text; the tutorial's
/// mutated; long runs; texts just over the bounds.
pub fn text() -> impl Strategy<Value = String> {
    let lines =
        (vec(line(), 0..40), select(&["\n", "\r\n", "\r", "\n\n", "\n\r"][..])).prop_map(|(lines, nl)| lines.join(nl));
    let mutated = vec((any::<usize>(), any::<u8>(), hostile::char()), 1..8).prop_map(|edits| {
        edits
            .into_iter()
            .fold(TUTORIAL.to_string(), |t, (at, how, c)| hostile::mutate(&t, at, how, c))
    });
    prop_oneof![
        80 => lines,
        30 => mutated,
        20 => hostile::chars(300),
        10 => hostile::long(),
        1 => (0usize..3).prop_map(|extra| format!("[DEFAULT]\nk = {}", "v".repeat(MAX_BYTES - 15 + extra))),
        1 => (0usize..3).prop_map(|extra| format!("[DEFAULT]\nk={}", "v".repeat(MAX_BYTES - 13 + extra))),
        2 => (MAX_SECTIONS - 2..MAX_SECTIONS + 2).prop_map(|n| (1..n).map(|i| format!("[x#{i}]\n")).collect()),
    ]
}

proptest! {
    #![proptest_config(crate::config(30_000))]

    #[test]
    fn any_text_parses_within_bounds_and_reads_back_or_is_refused_in_a_short_error(text in text()) {
        let ini = match Ini::parse(&text) {
            Ok(ini) => ini,
            Err(e) => return check_error("Ini::parse", &e.to_string()),
        };
        prop_assert!(text.len() <= MAX_BYTES);
        let sections = ini.sections();
        prop_assert!(sections.len() <= MAX_SECTIONS);
        prop_assert_eq!(sections[0].name.as_str(), DEFAULT);
        let mut names = HashSet::new();
        for s in sections {
            prop_assert!(names.insert(&s.name), "section [{}] twice", s.name);
            prop_assert!(!s.name.contains('\n') && !s.name.is_empty());
            let mut keywords = HashSet::new();
            for (k, v) in &s.entries {
                prop_assert!(keywords.insert(k), "{} twice in [{}]", k, s.name);
                prop_assert!(!k.is_empty() && !k.contains(['\n', '=']) && !v.contains('\n'));
            }
        }
        let printed = ini.to_string();
        prop_assert_eq!(ini.printed_len(), printed.len());
        prop_assert!(printed.len() <= MAX_BYTES);
        let again = Ini::parse(&printed);
        prop_assert_eq!(again.as_ref(), Ok(&ini), "printed as {:?}", printed);
        prop_assert_eq!(again.unwrap().to_string(), printed);
    }
}
