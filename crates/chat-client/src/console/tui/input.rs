//! The line editor of the input box: the text being typed and a cursor
//! that moves by characters, not bytes.

/// The input line; `cursor` counts characters, not bytes.
#[derive(Debug, Default)]
pub(super) struct Input {
    /// What has been typed so far.
    pub(super) text: String,
    /// Where the next character goes, in characters from the start.
    pub(super) cursor: usize,
}

impl Input {
    /// The byte offset of character `chars` (the end if past it).
    fn byte_index(&self, chars: usize) -> usize {
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }

    /// Length in characters.
    fn len(&self) -> usize {
        self.text.chars().count()
    }

    /// Types `c` at the cursor.
    pub(super) fn insert(&mut self, c: char) {
        let at = self.byte_index(self.cursor);
        self.text.insert(at, c);
        self.cursor += 1;
    }

    /// Deletes the character before the cursor.
    pub(super) fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_index(self.cursor);
            self.text.remove(at);
        }
    }

    /// Deletes the character under the cursor.
    pub(super) fn delete(&mut self) {
        if self.cursor < self.len() {
            let at = self.byte_index(self.cursor);
            self.text.remove(at);
        }
    }

    /// One character left.
    pub(super) fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// One character right.
    pub(super) fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.len());
    }

    /// To the start of the line.
    pub(super) fn home(&mut self) {
        self.cursor = 0;
    }

    /// To the end of the line.
    pub(super) fn end(&mut self) {
        self.cursor = self.len();
    }

    /// Deletes everything before the cursor (Ctrl-U).
    pub(super) fn clear_to_start(&mut self) {
        let at = self.byte_index(self.cursor);
        self.text.replace_range(..at, "");
        self.cursor = 0;
    }

    /// The line, leaving the editor empty (Enter).
    pub(super) fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_input_by_characters() {
        let mut input = Input::default();
        for c in "héllo".chars() {
            input.insert(c);
        }
        input.left();
        input.left();
        input.backspace();
        assert_eq!(input.text, "hélo");
        input.home();
        input.delete();
        input.end();
        input.insert('!');
        assert_eq!(input.text, "élo!");
        input.left();
        input.clear_to_start();
        assert_eq!((input.text.as_str(), input.cursor), ("!", 0));
        assert_eq!(input.take(), "!");
        assert!(input.text.is_empty());
    }
}
