//! Generators of hostile input shared by the targets, and what every error must meet.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// Characters that break lines, fields or terminals, or that parsers of ours treat specially.
const SPECIAL: &[char] = &[
    '\0',
    '\n',
    '\r',
    '\t',
    '\u{b}',
    '\u{c}',
    '\u{1b}',
    '\u{7f}',
    '\u{85}',
    '\u{a0}',
    '\u{2028}',
    '\u{2029}',
    '\u{200b}',
    '\u{feff}',
    '\u{10ffff}',
    'é',
    ' ',
    '[',
    ']',
    '=',
    '#',
    ';',
    '.',
    '@',
    '/',
    '{',
    '}',
    ':',
    '%',
    '"',
    '\'',
    '\\',
    '$',
    '|',
    '-',
    '_',
    '+',
    '?',
    '&',
    '*',
    ',',
    '<',
    '>',
    '0',
    '9',
];

/// Any character, often one of `SPECIAL`.
pub fn char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => proptest::char::any(),
        3 => select(SPECIAL),
        4 => proptest::char::range('a', 'z'),
    ]
}

/// A string of up to `max` characters of `char()`.
pub fn chars(max: usize) -> impl Strategy<Value = String> {
    vec(char(), 0..=max).prop_map(|c| c.into_iter().collect())
}

/// Decimal numbers around the limits of u16, u32, u64 and f64, signs, fractions, exponents.
pub fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        select(
            &[
                "0",
                "1",
                "65535",
                "65536",
                "4294967295",
                "4294967296",
                "18446744073709551615",
                "18446744073709551616",
                "99999999999999999999999999999999999999",
                "-1",
                "+1",
                "1.5",
                "1.",
                ".5",
                "1e400",
                "0x10",
                "NaN",
                "inf",
                "1152921504606846976",
                "1152921504606846977",
            ][..]
        )
        .prop_map(str::to_string),
        (1usize..400).prop_map(|n| "9".repeat(n)),
    ]
}

/// Hostile text: arbitrary characters, a number, a fragment of `vocabulary`, or a long run.
pub fn text(vocabulary: &'static [&'static str]) -> impl Strategy<Value = String> {
    let pieces = vec(
        prop_oneof![
            4 => select(vocabulary).prop_map(str::to_string),
            2 => chars(6),
            1 => number(),
        ],
        0..6,
    )
    .prop_map(|p| p.concat());
    prop_oneof![
        6 => pieces,
        2 => chars(40),
        1 => long(),
    ]
}

/// One character repeated up to 20,000 times, or a fragment of length up to 5,000 repeated.
pub fn long() -> impl Strategy<Value = String> {
    prop_oneof![
        (char(), 1usize..20_000).prop_map(|(c, n)| c.to_string().repeat(n)),
        (chars(4), 1usize..5_000).prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// `text` with one of its characters replaced, one removed or one inserted, at `at`.
pub fn mutate(text: &str, at: usize, how: u8, with: char) -> String {
    let mut c: Vec<char> = text.chars().collect();
    let i = if c.is_empty() { 0 } else { at % c.len() };
    match how % 3 {
        0 if !c.is_empty() => c[i] = with,
        1 if !c.is_empty() => {
            c.remove(i);
        }
        _ => c.insert(i, with),
    }
    c.into_iter().collect()
}

/// The most bytes an error message may have, whatever the input: it travels in a gRPC header
/// (where a 16 KiB value already broke clients) and is printed to a terminal. An error repeats
/// input through `config::echo`, which cuts a value after 200 characters and escapes each
/// control character in at most 10 bytes; no error repeats more than a few values.
pub const MAX_ERROR_BYTES: usize = 8 << 10;

/// Fails unless `message`, an error shown to a caller, is short and one line without control
/// characters (so it can neither grow with the input nor print lines of its own).
pub fn check_error(what: &str, message: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        message.len() <= MAX_ERROR_BYTES,
        "{}: an error of {} bytes: {:?}…",
        what,
        message.len(),
        message.chars().take(300).collect::<String>()
    );
    let bad = message
        .chars()
        .find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'));
    prop_assert!(bad.is_none(), "{}: an error holding {:?}: {:?}", what, bad, message);
    Ok(())
}
