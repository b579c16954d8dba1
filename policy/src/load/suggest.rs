//! "Did you mean …?" for misspelt keys, statement kinds, mask functions and class names.

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
///
/// Case differences alone always match (`SELECT` → `select`); otherwise the optimal string
/// alignment distance (a swap of two neighbours counts as one edit) must be at most 1 for
/// short words and 2 for words of four or more characters.
pub(super) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = word.to_lowercase();
    let limit = if word.chars().count() >= 4 { 2 } else { 1 };
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)` or nothing.
pub(super) fn hint<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    closest(word, candidates)
        .map(|c| format!(" (did you mean \"{c}\"?)"))
        .unwrap_or_default()
}

/// Optimal string alignment distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let kinds = ["select", "insert", "update", "delete"];
        assert_eq!(closest("selct", kinds), Some("select"));
        assert_eq!(closest("SELECT", kinds), Some("select"));
        assert_eq!(closest("udpate", kinds), Some("update"));
        assert_eq!(closest("drop", kinds), None);
        assert_eq!(closest("ab", ["abc", "xy"]), Some("abc"));
        assert_eq!(closest("ab", ["cd"]), None);
        assert_eq!(
            hint("parital", ["partial", "email"]),
            " (did you mean \"partial\"?)"
        );
        assert_eq!(hint("zzz", ["partial"]), "");
    }

    #[test]
    fn distance_counts_edits_and_swaps() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("abc", "acb"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("né", "ne"), 1);
    }
}
