//! The object configuration text format: `[DEFAULT]` then `[TYPE#ID]` sections of
//! `keyword = value` lines, where a keyword may carry a node scope (`size@n1`).
//!
//! Order is kept as written (it is part of what `config show` prints) and the printed form
//! parses back to the same value. A text is bounded (`MAX_BYTES`, `MAX_SECTIONS`), and so is
//! its printed form, which may be longer (`k=v` prints as `k = v`); it is parsed in time
//! linear in its length; a section or a keyword of a section appears once.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use super::echo::echo;

/// One `[name]` section and its `keyword = value` lines, in order. Names, keywords and values
/// are `SmolStr`: those up to 23 bytes, nearly all of them, sit inside the entry rather than in
/// an allocation of their own (the state keeps one configuration per object, for as long as
/// it lives). They encode as strings do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub name: SmolStr,
    pub entries: Vec<(SmolStr, SmolStr)>,
}

/// An object's configuration. `DEFAULT` is always present and first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ini {
    sections: Vec<Section>,
}

/// Why a configuration text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {0}: a section header must look like [NAME]")]
    BadHeader(usize),
    #[error("line {0}: expected `keyword = value`")]
    NoEquals(usize),
    #[error("line {0}: empty keyword")]
    EmptyKeyword(usize),
    #[error("line {0}: section [{name}] appears twice", name = echo(.1))]
    DuplicateSection(usize, String),
    #[error("line {0}: keyword {keyword:?} appears twice in [{section}]", keyword = echo(.1), section = echo(.2))]
    DuplicateKeyword(usize, String, String),
    #[error("line {0}: a value cannot span lines or hold a newline")]
    Multiline(usize),
    #[error("the configuration is {0} bytes long, more than the {MAX_BYTES} (1 MiB) allowed")]
    TooLarge(usize),
    #[error("printed as `keyword = value` lines, the configuration is {0} bytes long, more than the {MAX_BYTES} (1 MiB) allowed")]
    PrintsTooLarge(usize),
    #[error("line {0}: more than {MAX_SECTIONS} sections")]
    TooManySections(usize),
    #[error("the configuration has {0} sections, more than the {MAX_SECTIONS} allowed")]
    SectionCount(usize),
    #[error("{0}: `config show` would print it as text that reads otherwise")]
    NotAsWritten(String),
}

pub const DEFAULT: &str = "DEFAULT";

/// The most bytes an object's configuration text may have.
pub const MAX_BYTES: usize = 1 << 20;

/// The most sections an object's configuration may have, `DEFAULT` included.
pub const MAX_SECTIONS: usize = 1024;

impl Default for Ini {
    fn default() -> Ini {
        Ini {
            sections: vec![Section {
                name: DEFAULT.into(),
                entries: vec![],
            }],
        }
    }
}

impl Ini {
    /// Parses the text format. Comments start with `#` or `;` at the beginning of a line. A
    /// `[DEFAULT]` header may open the text (DEFAULT is always there, first); any section
    /// named twice is refused with the line of the second. The printed form of what parses
    /// is within `MAX_BYTES` too, so that it parses again.
    pub fn parse(text: &str) -> Result<Ini, ParseError> {
        if text.len() > MAX_BYTES {
            return Err(ParseError::TooLarge(text.len()));
        }
        let mut ini = Ini::default();
        // Index of each section by name, and the keywords of the current one: a lookup per
        // line, not a scan of what came before.
        let mut index: HashMap<String, usize> = HashMap::from([(DEFAULT.to_string(), 0)]);
        let mut current = 0;
        let mut keywords: HashSet<String> = HashSet::new();
        let mut default_header = false;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or(ParseError::BadHeader(n))?.trim();
                if name.is_empty() || name.contains(['[', ']']) {
                    return Err(ParseError::BadHeader(n));
                }
                // `[DEFAULT]` opens the text at most once, before any keyword.
                let opens = name == DEFAULT && !default_header && current == 0 && ini.sections[0].entries.is_empty();
                if index.contains_key(name) && !opens {
                    return Err(ParseError::DuplicateSection(n, name.into()));
                }
                if name == DEFAULT {
                    default_header = true;
                } else {
                    if ini.sections.len() >= MAX_SECTIONS {
                        return Err(ParseError::TooManySections(n));
                    }
                    index.insert(name.to_string(), ini.sections.len());
                    ini.sections.push(Section {
                        name: name.into(),
                        entries: vec![],
                    });
                }
                current = index[name];
                keywords.clear();
                continue;
            }
            let (k, v) = line.split_once('=').ok_or(ParseError::NoEquals(n))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(ParseError::EmptyKeyword(n));
            }
            let section = &mut ini.sections[current];
            if !keywords.insert(k.to_string()) {
                return Err(ParseError::DuplicateKeyword(n, k.into(), section.name.to_string()));
            }
            section.entries.push((k.into(), v.into()));
        }
        let printed = ini.printed_len();
        if printed > MAX_BYTES {
            return Err(ParseError::PrintsTooLarge(printed));
        }
        Ok(ini)
    }

    /// Refuses a configuration beyond the bounds a parsed text meets (`MAX_BYTES`,
    /// `MAX_SECTIONS`): for one built otherwise (keyword by keyword, or decoded).
    pub fn check_bounds(&self) -> Result<(), ParseError> {
        if self.sections.len() > MAX_SECTIONS {
            return Err(ParseError::SectionCount(self.sections.len()));
        }
        let len = self.printed_len();
        if len > MAX_BYTES {
            return Err(ParseError::TooLarge(len));
        }
        Ok(())
    }

    /// Refuses a configuration that does not print as text parsing back to it, as one built
    /// keyword by keyword or decoded may not (a value with spaces around it, a keyword or a
    /// section name that a line reads otherwise, DEFAULT missing or not first): what `config
    /// show` prints is what the cluster holds. The error names the first part that would
    /// change.
    pub fn check_form(&self) -> Result<(), ParseError> {
        if Ini::parse(&self.to_string()).as_ref() == Ok(self) {
            return Ok(());
        }
        let not = |what: String| Err(ParseError::NotAsWritten(what));
        if self.sections.first().is_none_or(|s| s.name != DEFAULT) {
            return not("[DEFAULT] is not the first section".into());
        }
        let mut names = HashSet::new();
        for s in &self.sections {
            let alone = Ini::parse(&format!("[{}]\n", s.name));
            if alone
                .ok()
                .and_then(|i| i.sections.last().map(|l| l.name.clone()))
                .as_ref()
                != Some(&s.name)
            {
                return not(format!("section name {:?}", echo(&s.name)));
            }
            if !names.insert(&s.name) {
                return not(format!("section [{}] twice", echo(&s.name)));
            }
            let mut keywords = HashSet::new();
            for (k, v) in &s.entries {
                let line = Ini::parse(&format!("[x]\n{k} = {v}\n"));
                let read = line.ok().and_then(|i| i.sections.last().map(|l| l.entries.clone()));
                if read != Some(vec![(k.clone(), v.clone())]) {
                    return not(format!("keyword {:?} = {:?} in [{}]", echo(k), echo(v), echo(&s.name)));
                }
                if !keywords.insert(k) {
                    return not(format!("keyword {:?} twice in [{}]", echo(k), echo(&s.name)));
                }
            }
        }
        not("the configuration".into())
    }

    /// The length in bytes of the printed form (`Display`), without printing it.
    pub fn printed_len(&self) -> usize {
        let mut len = 0usize;
        for (i, s) in self.printed_sections().enumerate() {
            // A blank line before every section but the first, then `[NAME]`.
            len += usize::from(i > 0) + s.name.len() + 3;
            // `KEYWORD = VALUE`.
            len += s.entries.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
        }
        len
    }

    /// The sections the printed form shows: all but an empty DEFAULT.
    fn printed_sections(&self) -> impl Iterator<Item = &Section> {
        self.sections
            .iter()
            .filter(|s| !(s.name == DEFAULT && s.entries.is_empty()))
    }

    fn section_mut(&mut self, name: &str) -> &mut Section {
        let i = match self.sections.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.sections.push(Section {
                    name: name.into(),
                    entries: vec![],
                });
                self.sections.len() - 1
            }
        };
        &mut self.sections[i]
    }

    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The raw (unevaluated) value of `keyword` in `section`.
    pub fn get(&self, section: &str, keyword: &str) -> Option<&str> {
        self.section(section)?
            .entries
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a value, keeping its place if it exists, appending otherwise.
    pub fn set(&mut self, section: &str, keyword: &str, value: &str) -> Result<(), ParseError> {
        if value.contains(['\n', '\r']) {
            return Err(ParseError::Multiline(0));
        }
        let s = self.section_mut(section);
        match s.entries.iter_mut().find(|(k, _)| k == keyword) {
            Some(e) => e.1 = value.into(),
            None => s.entries.push((keyword.into(), value.into())),
        }
        Ok(())
    }

    /// Gives back the room its lists grew past their length: a configuration the cluster
    /// state keeps for as long as the object lives, built one `set` at a time.
    pub fn shrink_to_fit(&mut self) {
        self.sections.shrink_to_fit();
        for s in &mut self.sections {
            s.entries.shrink_to_fit();
        }
    }

    /// Removes a value; a section other than DEFAULT left empty disappears.
    pub fn unset(&mut self, section: &str, keyword: &str) -> bool {
        let Some(i) = self.sections.iter().position(|s| s.name == section) else {
            return false;
        };
        let before = self.sections[i].entries.len();
        self.sections[i].entries.retain(|(k, _)| k != keyword);
        let removed = self.sections[i].entries.len() != before;
        if self.sections[i].entries.is_empty() && section != DEFAULT {
            self.sections.remove(i);
        }
        removed
    }

    /// Section names of the form `TYPE#ID` with this `TYPE`.
    pub fn sections_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections
            .iter()
            .filter(move |s| s.name.split_once('#').is_some_and(|(t, _)| t == kind))
    }
}

impl fmt::Display for Ini {
    /// The text form: sections separated by a blank line, DEFAULT first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.printed_sections().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "[{}]", s.name)?;
            for (k, v) in &s.entries {
                writeln!(f, "{k} = {v}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TUTORIAL: &str = "[DEFAULT]\nnodes = {clusternodes}\norchestrate = ha\nid = a6867a1e-e8b3-46eb-919f-78d4c60ca9c9\n\n[volume#data]\nname = {name}\nshared = true\nsize = 4G\nformat = false\npool = drbdvm\n";

    #[test]
    fn tutorial_config_round_trips() {
        let ini = Ini::parse(TUTORIAL).unwrap();
        assert_eq!(ini.get("volume#data", "size"), Some("4G"));
        assert_eq!(ini.to_string(), TUTORIAL);
    }

    #[test]
    fn scoped_keywords_and_comments() {
        let ini = Ini::parse("# c\n[volume#data]\nsize = 4G\nsize@n1 = 8G\n; c\n").unwrap();
        assert_eq!(ini.get("volume#data", "size@n1"), Some("8G"));
        assert_eq!(ini.sections()[0].name, DEFAULT);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(Ini::parse("[a\n"), Err(ParseError::BadHeader(1)));
        assert_eq!(Ini::parse("[a]\nnovalue\n"), Err(ParseError::NoEquals(2)));
        assert_eq!(
            Ini::parse("[a]\nk=1\n[a]\n"),
            Err(ParseError::DuplicateSection(3, "a".into()))
        );
        assert!(matches!(
            Ini::parse("[a]\nk=1\nk=2\n"),
            Err(ParseError::DuplicateKeyword(3, ..))
        ));
    }

    #[test]
    fn a_section_named_twice_is_refused_default_included() {
        // `[DEFAULT]` may open the text once.
        let ini = Ini::parse("[DEFAULT]\nnodes = n1\n[x#1]\nk = v\n").unwrap();
        assert_eq!(ini.get(DEFAULT, "nodes"), Some("n1"));
        for (text, line, section) in [
            ("[DEFAULT]\n[DEFAULT]\nnodes = n1\n", 2, DEFAULT),
            ("[DEFAULT]\nnodes = n1\n[DEFAULT]\n", 3, DEFAULT),
            ("nodes = n1\n[DEFAULT]\n", 2, DEFAULT),
            ("[x#1]\nk = v\n[DEFAULT]\n", 3, DEFAULT),
            ("[x#1]\nk = v\n[y#1]\nk = v\n[ x#1 ]\n", 5, "x#1"),
        ] {
            let e = Ini::parse(text).unwrap_err();
            assert_eq!(e, ParseError::DuplicateSection(line, section.into()), "{text:?}");
            assert!(
                e.to_string().contains(&format!("line {line}: section [{section}]")),
                "{e}"
            );
        }
    }

    #[test]
    fn texts_are_bounded_in_bytes_and_sections() {
        let big = format!("[DEFAULT]\nk = {}\n", "v".repeat(MAX_BYTES));
        let e = Ini::parse(&big).unwrap_err();
        assert_eq!(e, ParseError::TooLarge(big.len()));
        assert!(e.to_string().contains("1 MiB"), "{e}");
        let mut text = String::new();
        for i in 1..MAX_SECTIONS {
            text.push_str(&format!("[x#{i}]\nk = v\n"));
        }
        let ini = Ini::parse(&text).unwrap();
        assert_eq!(ini.sections().len(), MAX_SECTIONS);
        ini.check_bounds().unwrap();
        text.push_str("[x#last]\nk = v\n");
        let e = Ini::parse(&text).unwrap_err();
        assert_eq!(e, ParseError::TooManySections(2 * MAX_SECTIONS - 1));
        // Built keyword by keyword, the same bounds.
        let mut built = ini.clone();
        built.set("x#last", "k", "v").unwrap();
        assert_eq!(built.check_bounds(), Err(ParseError::SectionCount(MAX_SECTIONS + 1)));
        let mut built = Ini::default();
        for i in 0..300 {
            built.set(DEFAULT, &format!("k{i}"), &"v".repeat(4000)).unwrap();
        }
        assert!(matches!(built.check_bounds(), Err(ParseError::TooLarge(_))));
    }

    #[test]
    fn a_text_whose_printed_form_is_over_the_bound_is_refused() {
        // `k=v` prints as `k = v` under a `[DEFAULT]` header: two bytes more a line, and ten.
        let line = |i: usize| format!("k{i:05}={}\n", "v".repeat(1000));
        let lines = MAX_BYTES / line(0).len();
        let text: String = (0..lines).map(line).collect();
        assert!(text.len() <= MAX_BYTES);
        let printed = text.len() + 2 * lines + "[DEFAULT]\n".len();
        assert!(printed > MAX_BYTES);
        assert_eq!(Ini::parse(&text), Err(ParseError::PrintsTooLarge(printed)));
        // Exactly at the bound, printed, it parses and reads back.
        let exact = format!("[DEFAULT]\nk = {}\n", "v".repeat(MAX_BYTES - 15));
        assert_eq!(exact.len(), MAX_BYTES);
        let ini = Ini::parse(&exact).unwrap();
        assert_eq!(ini.to_string(), exact);
        assert_eq!(Ini::parse(&exact[..exact.len() - 1]), Ok(ini));
        let over = format!("[DEFAULT]\nk = {}", "v".repeat(MAX_BYTES - 14));
        assert_eq!(Ini::parse(&over), Err(ParseError::PrintsTooLarge(MAX_BYTES + 1)));
    }

    /// A configuration as a command decoded from a member's proposal may carry it.
    fn decoded(sections: &[(&str, &[(&str, &str)])]) -> Ini {
        Ini {
            sections: sections
                .iter()
                .map(|(name, entries)| Section {
                    name: (*name).into(),
                    entries: entries.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_configuration_that_would_not_read_back_as_written_is_refused_naming_what() {
        let mut ini = Ini::parse(TUTORIAL).unwrap();
        ini.check_form().unwrap();
        ini.set("container#2", "name", "kvm2").unwrap();
        ini.check_form().unwrap();
        let kv = [("k", "v")];
        for (bad, what) in [
            (decoded(&[]), "[DEFAULT] is not the first section"),
            (decoded(&[("x#1", &kv), (DEFAULT, &[])]), "[DEFAULT] is not the first"),
            (
                decoded(&[(DEFAULT, &[]), ("x#1\n[evil]", &[])]),
                r#"section name "x#1\n[evil]""#,
            ),
            (decoded(&[(DEFAULT, &[]), ("x]", &[])]), r#"section name "x]""#),
            (decoded(&[(DEFAULT, &[]), (" x", &[])]), r#"section name " x""#),
            (decoded(&[(DEFAULT, &[]), ("x", &[]), ("x", &[])]), "section [x] twice"),
            (
                decoded(&[(DEFAULT, &[("#k", "v")])]),
                r##"keyword "#k" = "v" in [DEFAULT]"##,
            ),
            (decoded(&[(DEFAULT, &[("k=", "v")])]), r#"keyword "k=" = "v""#),
            (
                decoded(&[(DEFAULT, &[("k", "v\nw = x")])]),
                r#"keyword "k" = "v\nw = x""#,
            ),
            (
                decoded(&[(DEFAULT, &[("k", "v"), ("k", "w")])]),
                r#"keyword "k" twice in [DEFAULT]"#,
            ),
        ] {
            let e = bad.check_form().unwrap_err().to_string();
            assert!(e.starts_with(what) && e.contains("reads otherwise"), "{bad:?}: {e}");
        }
        // Set keyword by keyword, as the API sets `--kw` values: spaces around a value would
        // be gone once printed.
        let mut spaced = Ini::default();
        spaced.set("container#1", "name", " kvm1 ").unwrap();
        let e = spaced.check_form().unwrap_err().to_string();
        assert!(e.starts_with(r#"keyword "name" = " kvm1 " in [container#1]"#), "{e}");
    }

    #[test]
    fn the_printed_length_is_that_of_the_text_printed() {
        for text in [
            TUTORIAL,
            "",
            "[DEFAULT]\n",
            "[x#1]\n",
            "k=v\n[a]\n[b]\nx=\n",
            "[a]\nk=v",
        ] {
            let ini = Ini::parse(text).unwrap();
            assert_eq!(ini.printed_len(), ini.to_string().len(), "{text:?}");
        }
    }

    #[test]
    fn parsing_is_linear_in_the_text() {
        // Many sections and many keywords: each line is one lookup (it was a scan of every
        // section before, so 50,000 sections took seconds).
        let mut text = String::new();
        for i in 1..MAX_SECTIONS {
            text.push_str(&format!("[x#{i}]\nk = v\n"));
        }
        for i in 0..90_000 {
            text.push_str(&format!("k{i} = v\n"));
        }
        assert!(text.len() < MAX_BYTES);
        let started = std::time::Instant::now();
        let ini = Ini::parse(&text).unwrap();
        assert_eq!(ini.sections().last().unwrap().entries.len(), 90_001);
        // Quadratic, this is about 4 billion comparisons; linear, a few milliseconds.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn errors_repeat_long_names_cut() {
        let long = "k".repeat(10_000);
        let e = Ini::parse(&format!("[a#1]\n{long} = 1\n{long} = 2\n")).unwrap_err();
        let text = e.to_string();
        assert!(text.len() < 400 && text.contains("(10000 bytes)"), "{text}");
    }

    #[test]
    fn unset_drops_empty_sections_but_not_default() {
        let mut ini = Ini::parse("[DEFAULT]\na = 1\n[x#1]\nk = v\n").unwrap();
        assert!(ini.unset("x#1", "k"));
        assert!(ini.section("x#1").is_none());
        assert!(ini.unset(DEFAULT, "a"));
        assert!(ini.section(DEFAULT).is_some());
        assert!(!ini.unset("nope", "k"));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_@]{0,8}"
    }

    fn value() -> impl Strategy<Value = String> {
        // Any printable text without newlines, trimmed as the parser trims it.
        "[ -~]{0,20}".prop_map(|s| s.trim().to_string())
    }

    proptest! {
        #[test]
        fn print_then_parse_is_identity(
            default in proptest::collection::vec((name(), value()), 0..4),
            sections in proptest::collection::vec((name(), proptest::collection::vec((name(), value()), 1..4)), 0..4),
        ) {
            let mut ini = Ini::default();
            for (k, v) in &default {
                ini.set(DEFAULT, k, v).unwrap();
            }
            for (i, (s, entries)) in sections.iter().enumerate() {
                for (k, v) in entries {
                    ini.set(&format!("{s}#{i}"), k, v).unwrap();
                }
            }
            let text = ini.to_string();
            prop_assert_eq!(Ini::parse(&text).unwrap(), ini);
        }
    }
}
