//! Quoting what a peer sent in an error message, bounded: a plugin that prints megabytes where a
//! handshake line belongs must not make every error megabytes long. At most [`MAX_QUOTE`] bytes
//! are kept, and a cut quote says so and how much there was.

use std::fmt;

/// The most of a peer's text an error message quotes, in bytes.
pub const MAX_QUOTE: usize = 1024;

/// A peer's text as an error message shows it: `"the text"`, or
/// `"the start…" (cut, 10485760 bytes in all)`. Rendered once, and small: errors carry it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quoted(Box<str>);

impl Quoted {
    /// `text`, cut to [`MAX_QUOTE`] bytes (on a character boundary) if longer.
    pub fn new(text: &str) -> Self {
        let shown = head(text);
        if shown.len() == text.len() {
            Self(format!("{shown:?}").into())
        } else {
            Self(format!("{shown:?}… (cut, {} bytes in all)", text.len()).into())
        }
    }

    /// The start of a text that went on for more than `read` bytes without ending.
    pub fn unterminated(text: &str, read: usize) -> Self {
        Self(
            format!(
                "{:?}… (cut, more than {read} bytes with no end of line)",
                head(text)
            )
            .into(),
        )
    }
}

/// `text` unquoted, or its first [`MAX_QUOTE`] bytes and a note saying how long it was.
pub fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    let shown = head(text);
    if shown.len() == text.len() {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(format!("{shown}… (cut, {} bytes in all)", text.len()))
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
        f.write_str(&self.0)
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
        assert_eq!(Quoted::new("hello world").to_string(), "\"hello world\"");
        assert_eq!(cut("hello world"), "hello world");
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
        assert_eq!(head(&text).len(), MAX_QUOTE);
        let text = format!("a{}", "é".repeat(MAX_QUOTE));
        assert_eq!(head(&text).len(), MAX_QUOTE - 1);
        assert!(cut(&text).ends_with(&format!("… (cut, {} bytes in all)", text.len())));
    }
}
