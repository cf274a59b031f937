//! Tables for people: columns padded by terminal width (Unicode East Asian Width), so a row
//! with Japanese or Chinese names lines up with the others. Cells are measured as they
//! are printed: with control characters escaped ([`printable`]).

use unicode_width::UnicodeWidthStr;

use crate::text::printable;

/// Terminal columns of `s`: East Asian wide characters take two.
fn display_width(s: &str) -> usize {
    s.width()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Align {
    Left,
    Right,
}

/// `s` as printed, padded with spaces to `w` terminal columns (never cut).
pub(super) fn pad(s: &str, w: usize) -> String {
    let s = printable(s);
    format!("{s}{}", " ".repeat(w.saturating_sub(display_width(&s))))
}

/// `s` as printed, padded on the left to `w` terminal columns.
fn pad_left(s: &str, w: usize) -> String {
    let s = printable(s);
    format!("{}{s}", " ".repeat(w.saturating_sub(display_width(&s))))
}

/// The widest of `names` as printed (at least `min`): a table's name column.
pub(super) fn column_width<'a>(names: impl IntoIterator<Item = &'a str>, min: usize) -> usize {
    names
        .into_iter()
        .map(|n| display_width(&printable(n)))
        .fold(min, usize::max)
}

/// `s` cut to at most `w` terminal columns, `…` marking the cut.
fn fit(s: &str, w: usize) -> String {
    if display_width(s) <= w {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let cw = display_width(c.encode_utf8(&mut buf));
        if used + cw + 1 > w {
            break;
        }
        out.push(c);
        used += cw;
    }
    out.push('…');
    out
}

pub(super) struct Table {
    align: Vec<Align>,
    max: Vec<Option<usize>>,
}

impl Table {
    pub(super) fn new(align: &[Align]) -> Table {
        Table {
            align: align.to_vec(),
            max: vec![None; align.len()],
        }
    }

    /// Cells of column `col` wider than `w` are cut (a long sender should not push the
    /// subject off the screen).
    pub(super) fn max_width(mut self, col: usize, w: usize) -> Table {
        self.max[col] = Some(w);
        self
    }

    /// The header and rows as lines, columns two spaces apart; the last column is not
    /// padded (no trailing blanks). Listings too long to hold use [`Table::measure`]
    /// and [`Table::line`] instead (every table does now; tests check them against this).
    #[cfg(test)]
    pub(super) fn render<const N: usize>(
        &self,
        header: &[String; N],
        rows: &[[String; N]],
    ) -> Vec<String> {
        let mut widths = vec![0; N];
        for r in std::iter::once(header).chain(rows) {
            self.measure(&mut widths, r);
        }
        std::iter::once(header)
            .chain(rows)
            .map(|r| self.line(r, &widths))
            .collect()
    }

    /// A row's cells as printed: control characters escaped, capped columns cut.
    fn cells(&self, row: &[String]) -> Vec<String> {
        row.iter()
            .zip(&self.max)
            .map(|(c, m)| {
                let c = printable(c);
                m.map_or_else(|| c.clone(), |w| fit(&c, w))
            })
            .collect()
    }

    /// Widens `widths` to fit `row`: a first pass over rows too many to hold, before
    /// [`Table::line`] prints each.
    pub(super) fn measure(&self, widths: &mut [usize], row: &[String]) {
        for (w, c) in widths.iter_mut().zip(self.cells(row)) {
            *w = (*w).max(column_width([c.as_str()], 0));
        }
    }

    /// One row as a line, with the widths [`Table::measure`] found.
    pub(super) fn line(&self, row: &[String], widths: &[usize]) -> String {
        let n = row.len();
        let mut line = String::new();
        for (i, c) in self.cells(row).iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let last = i + 1 == n;
            match self.align[i] {
                Align::Right => line.push_str(&pad_left(c, widths[i])),
                Align::Left if last => line.push_str(c),
                Align::Left => line.push_str(&pad(c, widths[i])),
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_names_line_up() {
        let t = Table::new(&[Align::Left, Align::Right]);
        let lines = t.render(
            &["folder".into(), "n".into()],
            &[["受信箱".into(), "1".into()], ["INBOX".into(), "22".into()]],
        );
        let widths: Vec<usize> = lines.iter().map(|l| display_width(l)).collect();
        assert_eq!(widths, vec![10, 10, 10], "{lines:?}");
    }

    #[test]
    fn control_characters_are_measured_escaped() {
        let t = Table::new(&[Align::Left, Align::Left]);
        let lines = t.render(
            &["folder".into(), "n".into()],
            &[
                ["a\x1b".into(), "1".into()],
                ["abcdefghij".into(), "2".into()],
            ],
        );
        assert_eq!(lines[1], "a\\u{1b}     1", "{lines:?}");
        assert_eq!(pad("\x07", 8), "\\u{7}   ");
    }

    #[test]
    fn long_cells_are_cut_by_columns() {
        let t = Table::new(&[Align::Left, Align::Left]).max_width(0, 5);
        let lines = t.render(
            &["a".into(), "b".into()],
            &[["日本語です".into(), "x".into()]],
        );
        assert_eq!(lines[1], "日本…  x");
    }
}
