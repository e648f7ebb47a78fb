//! The 58-letter alphabet of the tutorial and the Unicode → alphabet normalisation.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The tutorial's alphabet in index order: `a–z`, `A–Z`, then space `.` `,` `;` `'` `-`.
pub const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;'-";

/// Number of letters in [`ALPHABET`] (width of the one-hot input).
pub const N_LETTERS: usize = 58;

/// Index of `c` in [`ALPHABET`], or `None` if the tutorial's alphabet lacks it.
///
/// A `match` instead of a search keeps this O(1) on the hot encoding path.
pub fn letter_index(c: char) -> Option<usize> {
    match c {
        'a'..='z' => Some(c as usize - 'a' as usize),
        'A'..='Z' => Some(26 + c as usize - 'A' as usize),
        ' ' => Some(52),
        '.' => Some(53),
        ',' => Some(54),
        ';' => Some(55),
        '\'' => Some(56),
        '-' => Some(57),
        _ => None,
    }
}

/// The index of the small letter of capital letter `i`; other indices are returned unchanged
/// (`A`–`Z` come 26 places after `a`–`z` in [`ALPHABET`]).
pub fn lowercase_index(i: usize) -> usize {
    if (26..52).contains(&i) {
        i - 26
    } else {
        i
    }
}

/// Result of [`normalise`]: the kept text plus what was thrown away, so callers can report
/// lossy input instead of silently changing names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Normalised {
    /// The name reduced to alphabet characters.
    pub text: String,
    /// Characters (of the NFD form) that were removed because they are not in the alphabet.
    /// Combining marks (accents) are not listed: removing them is the purpose of the NFD step.
    pub dropped: Vec<char>,
}

/// Tutorial normalisation: Unicode NFD, then keep only alphabet characters.
///
/// Accented letters therefore lose their accent (`é` → `e`), while characters without an ASCII
/// base (`ß`, `ł`, digits, punctuation outside the alphabet, NBSP, `\r`) vanish and are listed
/// in [`Normalised::dropped`]. Case is kept.
pub fn normalise(raw: &str) -> Normalised {
    let mut out = Normalised::default();
    for c in raw.nfd() {
        if letter_index(c).is_some() {
            out.text.push(c);
        } else if !is_combining_mark(c) {
            out.dropped.push(c);
        }
    }
    out
}

/// Letter indices of `name`, or `None` if any character is outside the alphabet.
///
/// Unlike the Python tutorial (which maps unknown characters to index -1, i.e. `-`), an unknown
/// character is rejected: feed names through [`normalise`] first.
pub fn encode(name: &str) -> Option<Vec<u32>> {
    name.chars()
        .map(|c| letter_index(c).map(|i| i as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_and_index_agree() {
        assert_eq!(ALPHABET.chars().count(), N_LETTERS);
        for (i, c) in ALPHABET.chars().enumerate() {
            assert_eq!(letter_index(c), Some(i), "{c:?}");
        }
        assert_eq!(letter_index('é'), None);
        for c in ALPHABET.chars() {
            let small = letter_index(c.to_ascii_lowercase());
            assert_eq!(letter_index(c).map(lowercase_index), small, "{c:?}");
        }
        assert_eq!(lowercase_index(31), 5); // F → f
        assert_eq!(letter_index('0'), None);
    }
}
