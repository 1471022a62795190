//! Plain aligned tables, like `kafka-topics --describe` prints: easy to read and to `awk`.

/// Renders `header` and `rows` with columns padded to their widest cell, two spaces apart.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let rows = vec![
            vec!["0".to_owned(), "1".to_owned(), "1,2,3".to_owned()],
            vec!["10".to_owned(), "none".to_owned(), "2".to_owned()],
        ];
        assert_eq!(
            render(&["PARTITION", "LEADER", "REPLICAS"], &rows),
            "PARTITION  LEADER  REPLICAS\n0          1       1,2,3\n10         none    2\n"
        );
    }
}
