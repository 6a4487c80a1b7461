//! How an error message quotes what a caller sent: `echo(value)`, the one helper every error
//! that repeats input goes through. A value is cut after `ECHO_CHARS` characters and its
//! length in bytes said instead (`"aaaa"… (16384 bytes)`), and control characters are
//! escaped, so a hostile or oversized value can neither make a message too large for a client
//! (gRPC carries it in a header) nor print lines of its own.

use std::fmt;

/// The most characters of a value an error message repeats.
pub const ECHO_CHARS: usize = 200;

/// A value as an error message repeats it: `{}` prints it bare (control characters escaped),
/// `{:?}` in quotes as `{:?}` prints a string; either way cut after `ECHO_CHARS` characters,
/// followed by `… (N bytes)`.
#[derive(Clone, Copy)]
pub struct Echo<'a>(&'a str);

/// `value`, to be repeated in an error message.
pub fn echo(value: &str) -> Echo<'_> {
    Echo(value)
}

impl Echo<'_> {
    /// The part repeated, and whether the value was cut.
    fn kept(&self) -> (&str, bool) {
        match self.0.char_indices().nth(ECHO_CHARS) {
            Some((at, _)) => (&self.0[..at], true),
            None => (self.0, false),
        }
    }

    fn tail(&self, f: &mut fmt::Formatter<'_>, cut: bool) -> fmt::Result {
        if cut {
            write!(f, "… ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kept, cut) = self.kept();
        write!(f, "{}", kept.escape_debug())?;
        self.tail(f, cut)
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kept, cut) = self.kept();
        write!(f, "{kept:?}")?;
        self.tail(f, cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_repeated_as_before() {
        assert_eq!(format!("{:?}", echo("sise")), format!("{:?}", "sise"));
        assert_eq!(format!("[{}]", echo("volume#data")), "[volume#data]");
    }

    #[test]
    fn long_values_are_cut_and_their_length_said() {
        let long = "a".repeat(16 * 1024);
        let quoted = format!("{:?}", echo(&long));
        assert_eq!(quoted, format!("\"{}\"… (16384 bytes)", "a".repeat(ECHO_CHARS)));
        let bare = format!("{}", echo(&long));
        assert_eq!(bare, format!("{}… (16384 bytes)", "a".repeat(ECHO_CHARS)));
        // Exactly ECHO_CHARS characters: nothing cut.
        let edge = "é".repeat(ECHO_CHARS);
        assert_eq!(format!("{}", echo(&edge)), edge);
        // Cut on a character boundary, the length in bytes.
        let wide = "é".repeat(ECHO_CHARS + 1);
        assert_eq!(
            format!("{}", echo(&wide)),
            format!("{}… ({} bytes)", "é".repeat(ECHO_CHARS), wide.len())
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(format!("{}", echo("x\n[evil]\0")), "x\\n[evil]\\0");
        assert_eq!(format!("{:?}", echo("x\n[evil]")), "\"x\\n[evil]\"");
    }
}
