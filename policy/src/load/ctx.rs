//! The loader's working state: the source text (to turn byte spans into line:column) and
//! the diagnostics collected so far, so validation can report every problem in one run.

use std::ops::Range;

use crate::error::{Diagnostics, PolicyError, Severity};

/// The policy text with a line index.
pub(super) struct Source<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(super) fn new(file: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            file,
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset; offsets past the end or
    /// inside a multibyte character are clamped to the nearest valid position before them.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let mut start = self.line_starts[line.saturating_sub(1)];
        // A byte-order mark is invisible in editors: do not count it as a column.
        if start == 0 && self.text.starts_with('\u{feff}') {
            start = '\u{feff}'.len_utf8().min(offset);
        }
        let column = self.text[start..offset].chars().count() + 1;
        (line.max(1), column)
    }
}

/// Collects diagnostics while the loader walks the document.
pub(super) struct Ctx<'a> {
    pub(super) source: Source<'a>,
    pub(super) diags: Diagnostics,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(file: &'a str, text: &'a str) -> Self {
        Ctx {
            source: Source::new(file, text),
            diags: Diagnostics::new(),
        }
    }

    /// Records an error at the start of `span`.
    pub(super) fn error(&mut self, span: &Range<usize>, path: &str, message: impl Into<String>) {
        self.report(Severity::Error, span, path, message.into());
    }

    /// Records a warning at the start of `span`.
    pub(super) fn warning(&mut self, span: &Range<usize>, path: &str, message: impl Into<String>) {
        self.report(Severity::Warning, span, path, message.into());
    }

    fn report(&mut self, severity: Severity, span: &Range<usize>, path: &str, message: String) {
        let (line, column) = self.source.position(span.start);
        self.diags.push(PolicyError {
            file: self.source.file.to_string(),
            line,
            column,
            severity,
            path: path.to_string(),
            message,
        });
    }

    /// Has any error been recorded so far?
    pub(super) fn has_errors(&self) -> bool {
        self.diags.has_errors()
    }
}

/// `parent.key`, quoting `key` like TOML when it is not a bare key.
pub(super) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = Source::new("p.toml", "ab\ncé = 1\n\nx");
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(2), (1, 3));
        assert_eq!(src.position(3), (2, 1));
        // "é" is two bytes: the space after it is column 3.
        assert_eq!(src.position(6), (2, 3));
        // inside "é": clamped to its start.
        assert_eq!(src.position(5), (2, 2));
        assert_eq!(src.position(11), (3, 1));
        assert_eq!(src.position(12), (4, 1));
        assert_eq!(src.position(999), (4, 2));
    }

    #[test]
    fn byte_order_mark_is_not_a_column() {
        let src = Source::new("p.toml", "\u{feff}version = 1\nx");
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(3), (1, 1));
        assert_eq!(src.position(13), (1, 11));
        assert_eq!(src.position(15), (2, 1));
    }

    #[test]
    fn paths_quote_keys_that_are_not_bare() {
        assert_eq!(join("", "roles"), "roles");
        assert_eq!(join("roles", "support"), "roles.support");
        assert_eq!(
            join("columns", "public.customers.phone"),
            "columns.\"public.customers.phone\""
        );
    }
}
