//! Quoting what a peer sent in an error message, bounded: a plugin that prints megabytes where a
//! handshake line belongs must not make every error megabytes long. At most [`MAX_QUOTE`] bytes
//! are kept, and a cut quote says so and how much there was.

use std::fmt;

/// The most of a peer's text an error message quotes, in bytes.
pub const MAX_QUOTE: usize = 1024;

/// A peer's text as an error message shows it: `"the text"`, or
/// `"the start…" (cut, 10485760 bytes in all)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quoted {
    shown: String,
    length: Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Length {
    #[default]
    Whole,
    /// Cut; the text had this many bytes.
    Total(usize),
    /// Cut; the text had more than this many bytes and no end was seen (no newline).
    MoreThan(usize),
}

impl Quoted {
    /// `text`, cut to [`MAX_QUOTE`] bytes (on a character boundary) if longer.
    pub fn new(text: &str) -> Self {
        if text.len() <= MAX_QUOTE {
            return Self {
                shown: text.to_owned(),
                length: Length::Whole,
            };
        }
        Self {
            shown: head(text).to_owned(),
            length: Length::Total(text.len()),
        }
    }

    /// The start of a text that went on for more than `read` bytes without ending.
    pub fn unterminated(text: &str, read: usize) -> Self {
        Self {
            shown: head(text).to_owned(),
            length: Length::MoreThan(read),
        }
    }

    /// The quoted part (the whole text unless it was cut).
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    /// Whether the text was cut.
    pub fn is_cut(&self) -> bool {
        self.length != Length::Whole
    }
}

/// At most [`MAX_QUOTE`] bytes of `text`, ending on a character boundary.
fn head(text: &str) -> &str {
    let mut end = text.len().min(MAX_QUOTE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.length {
            Length::Whole => write!(f, "{:?}", self.shown),
            Length::Total(total) => {
                write!(f, "{:?}… (cut, {total} bytes in all)", self.shown)
            }
            Length::MoreThan(read) => write!(
                f,
                "{:?}… (cut, more than {read} bytes with no end of line)",
                self.shown
            ),
        }
    }
}

impl From<&str> for Quoted {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        let quoted = Quoted::new("hello world");
        assert_eq!(quoted.to_string(), "\"hello world\"");
        assert!(!quoted.is_cut());
    }

    #[test]
    fn long_text_is_cut_and_says_so() {
        let text = "x".repeat(10 << 20);
        let shown = Quoted::new(&text).to_string();
        assert!(shown.len() < MAX_QUOTE + 100, "{}", shown.len());
        assert!(
            shown.ends_with("\"… (cut, 10485760 bytes in all)"),
            "{}",
            &shown[MAX_QUOTE..]
        );
        let unterminated = Quoted::unterminated(&text[..65536], 65536).to_string();
        assert!(
            unterminated.ends_with("… (cut, more than 65536 bytes with no end of line)"),
            "{unterminated}"
        );
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        let text = "é".repeat(MAX_QUOTE);
        let quoted = Quoted::new(&text);
        assert!(quoted.is_cut());
        assert_eq!(quoted.as_str().len(), MAX_QUOTE);
        let text = format!("a{}", "é".repeat(MAX_QUOTE));
        assert_eq!(Quoted::new(&text).as_str().len(), MAX_QUOTE - 1);
    }
}
