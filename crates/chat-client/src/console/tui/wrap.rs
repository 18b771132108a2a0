//! Line wrapping: styled text broken into screen rows of a given width, at
//! spaces where it can, with continuation rows indented past the time
//! column. Done here rather than by `Paragraph`'s wrapping because
//! scrolling needs to know how many rows each line takes.

use ratatui::style::Style;
use ratatui::text::{Line, Span};

/// One character as it will be drawn.
#[derive(Clone, Copy)]
struct Cell {
    /// The character, after control characters are made visible.
    c: char,
    /// Columns it takes.
    width: usize,
    /// How it is drawn.
    style: Style,
}

/// Columns a character takes on screen (0 for combining marks, 2 for wide).
pub(super) fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    Span::raw(&*c.encode_utf8(&mut buf)).width()
}

/// Breaks styled text into rows of at most `width` columns, at spaces where
/// it can, indenting continuation rows by `indent` so the time column stays
/// clear (no indent when it would take half the row or more).
pub(super) fn wrap(segments: &[(Style, &str)], width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = if indent * 2 > width { 0 } else { indent };
    let cells = cells(segments);
    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut start = 0;
    loop {
        let first = rows.is_empty();
        let avail = if first { width } else { width - indent };
        // Break at a space only past the time column and the row's middle:
        // an early break wastes more room than splitting a long word.
        let past_time = if first { indent + 1 } else { 1 };
        let earliest = start + past_time.max(avail / 2);
        let (end, next) = row_end(&cells, start, avail, earliest);
        let indent = if first { 0 } else { indent };
        rows.push(row(&cells[start..end], indent));
        match next {
            Some(next) => start = next,
            None => return rows,
        }
    }
}

/// The text as cells. A tab becomes a space and a carriage return goes;
/// other control characters would be dropped silently by the renderer, so
/// they show as U+FFFD. A newline stays (0 columns) to end its row.
fn cells(segments: &[(Style, &str)]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (style, text) in segments {
        for c in text.chars() {
            let c = match c {
                '\t' => ' ',
                '\r' => continue,
                '\n' => '\n',
                c if c.is_control() => '\u{fffd}',
                c => c,
            };
            let width = if c == '\n' { 0 } else { char_width(c) };
            cells.push(Cell {
                c,
                width,
                style: *style,
            });
        }
    }
    cells
}

/// Where the row starting at `start` ends (exclusive) within `avail`
/// columns, and where the next row starts (`None`: this is the last). A
/// row ends at a newline, at a space where the text overflows, at the last
/// space from `earliest` on, or else mid-word.
fn row_end(cells: &[Cell], start: usize, avail: usize, earliest: usize) -> (usize, Option<usize>) {
    let mut used = 0;
    let mut end = start;
    loop {
        let Some(cell) = cells.get(end) else {
            return (end, None);
        };
        if cell.c == '\n' {
            return (end, Some(end + 1));
        }
        if used + cell.width > avail && end > start {
            if cell.c == ' ' {
                return (end, Some(end + 1));
            }
            return match (earliest..end).rev().find(|&k| cells[k].c == ' ') {
                Some(space) => (space, Some(space + 1)),
                None => (end, Some(end)),
            };
        }
        used += cell.width;
        end += 1;
    }
}

/// One row: `indent` spaces, then the cells as spans, one per run of the
/// same style.
fn row(cells: &[Cell], indent: usize) -> Line<'static> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    if indent > 0 {
        spans.push(Span::raw(" ".repeat(indent)));
    }
    let mut run = String::new();
    let mut run_style = Style::new();
    for cell in cells {
        if cell.style != run_style && !run.is_empty() {
            spans.push(Span::styled(std::mem::take(&mut run), run_style));
        }
        run_style = cell.style;
        run.push(cell.c);
    }
    if !run.is_empty() {
        spans.push(Span::styled(run, run_style));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &Line<'_>) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn wraps_with_indent_and_breaks_on_newlines() {
        let rows = wrap(
            &[
                (Style::new(), "12345678 "),
                (Style::new(), "abcdefghijklmnopqrstuvwxyz\nxy"),
            ],
            20,
            9,
        );
        let rows: Vec<String> = rows.iter().map(text).collect();
        assert_eq!(
            rows,
            [
                "12345678 abcdefghijk",
                "         lmnopqrstuv",
                "         wxyz",
                "         xy"
            ]
        );
        let rows = wrap(&[(Style::new(), "12345678 hello brave new world")], 20, 9);
        let rows: Vec<String> = rows.iter().map(text).collect();
        assert_eq!(rows, ["12345678 hello brave", "         new world"]);
        for row in wrap(&[(Style::new(), "日本語のテキスト")], 5, 0) {
            assert!(row.width() <= 5);
        }
        let rows = wrap(&[(Style::new(), "a\u{1b}[31mb")], 80, 0);
        assert_eq!(text(&rows[0]), "a\u{fffd}[31mb");
    }
}
