//! Byte offsets (what spans hold) to LSP positions and back. LSP columns count UTF-16 code
//! units by default, so a line with `é` or an emoji before the caret moves it.

use lsp_types::{Position, Range};

/// Where each line of a text starts, for converting in both directions.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        LineIndex { starts: std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect() }
    }

    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let start = self.starts[line];
        // An offset inside a character (never made by the parser) counts from its start.
        let mut end = offset;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let character = text[start..end].encode_utf16().count() as u32;
        Position { line: line as u32, character }
    }

    pub fn range(&self, text: &str, start: usize, end: usize) -> Range {
        Range { start: self.position(text, start), end: self.position(text, end) }
    }

    /// The byte offset of a position; positions past a line's end clamp to it, and lines past
    /// the end to the end of the text (clients send such positions while text is in flight).
    pub fn offset(&self, text: &str, p: Position) -> usize {
        let Some(&start) = self.starts.get(p.line as usize) else { return text.len() };
        let end = self.starts.get(p.line as usize + 1).map_or(text.len(), |e| e - 1);
        let line = &text[start..end.max(start)];
        let mut units = 0u32;
        for (i, c) in line.char_indices() {
            if units >= p.character {
                return start + i;
            }
            units += c.len_utf16() as u32;
        }
        start + line.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_columns_round_trip() {
        let text = "ab\né😀x = 1\n\nlast";
        let idx = LineIndex::new(text);
        let x = text.find('x').unwrap();
        // `é` is one UTF-16 unit, the emoji two.
        assert_eq!(idx.position(text, x), Position { line: 1, character: 3 });
        assert_eq!(idx.offset(text, Position { line: 1, character: 3 }), x);
        assert_eq!(idx.position(text, text.len()), Position { line: 3, character: 4 });
        assert_eq!(idx.offset(text, Position { line: 0, character: 99 }), 2);
        assert_eq!(idx.offset(text, Position { line: 9, character: 0 }), text.len());
        assert_eq!(idx.offset(text, Position { line: 2, character: 0 }), text.find("\n\n").unwrap() + 1);
    }
}
