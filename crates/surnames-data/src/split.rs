//! Train/test/validation splits (spec §4.3) and a per-category counts table.

use std::collections::HashSet;
use std::fmt::Write as _;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::load::Dataset;

/// Names per category, both lists indexed like [`Dataset::categories`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    pub train: Vec<Vec<String>>,
    pub test: Vec<Vec<String>>,
}

impl Split {
    /// Total number of training names.
    pub fn n_train(&self) -> usize {
        self.train.iter().map(Vec::len).sum()
    }

    /// Total number of test names (the tutorial's `testNumtot`).
    pub fn n_test(&self) -> usize {
        self.test.iter().map(Vec::len).sum()
    }
}

/// Size of the training part of `n` names: `floor(0.8 n)`, as the tutorial's `int(n * 0.8)`.
///
/// Integer arithmetic gives the same result without float rounding questions.
fn train_len(n: usize) -> usize {
    n * 4 / 5
}

/// The tutorial's split: per category, in file order, the first `floor(0.8 n)` names train,
/// the rest test. Duplicates are kept, so a name can be in both parts.
pub fn tutorial_split(ds: &Dataset) -> Split {
    let mut split = Split::default();
    for names in &ds.names {
        let (train, test) = names.split_at(train_len(names.len()));
        split.train.push(train.to_vec());
        split.test.push(test.to_vec());
    }
    split
}

/// Per-category generator: ChaCha8 seeded with `seed`, stream = category index, so one
/// category's split does not depend on how many names the others have.
fn category_rng(seed: u64, category: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(category as u64);
    rng
}

/// A leak-free split: per category the distinct names (first occurrence order) are shuffled
/// with [`ChaCha8Rng`] (`seed_from_u64(seed)`, stream = category index, `SliceRandom::shuffle`)
/// and cut 80/20 like [`tutorial_split`]. A name may still occur in two different categories.
pub fn dedup_split(ds: &Dataset, seed: u64) -> Split {
    let mut split = Split::default();
    for (i, names) in ds.names.iter().enumerate() {
        let mut seen = HashSet::new();
        let mut distinct: Vec<String> = names
            .iter()
            .filter(|n| seen.insert(n.as_str()))
            .cloned()
            .collect();
        distinct.shuffle(&mut category_rng(seed, i));
        let test = distinct.split_off(train_len(distinct.len()));
        split.train.push(distinct);
        split.test.push(test);
    }
    split
}

/// Which training names [`carve_validation`] holds out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationPick {
    /// A seeded random part of each category. The generator is the one of [`dedup_split`] with
    /// the seed's bits inverted, so using the same seed for both does not correlate the two
    /// shuffles.
    Random { seed: u64 },
    /// The last names of each category's list. On the tutorial split, whose test names are the
    /// tail of each file (16 of the 18 files are nearly alphabetical), this holds out names the
    /// way the test set was made: mostly later initials than the names left for training,
    /// where a random part of the training names would share initials and duplicates with them.
    Tail,
}

/// Moves part of each category's training names into a validation set.
///
/// Returns `(train, validation)`, both keeping the input order. Per category,
/// `floor(fraction · n)` names go to validation, but at least one when `fraction > 0` and the
/// category has two or more names, and never all of them. `fraction` is clamped to `[0, 1]`
/// (NaN counts as 0).
pub fn carve_validation(
    train: &[Vec<String>],
    fraction: f64,
    pick: ValidationPick,
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let mut kept = Vec::with_capacity(train.len());
    let mut validation = Vec::with_capacity(train.len());
    for (i, names) in train.iter().enumerate() {
        let n = names.len();
        let n_val = if n < 2 || fraction == 0.0 {
            0
        } else {
            ((fraction * n as f64).floor() as usize).clamp(1, n - 1)
        };
        let mut is_val = vec![false; n];
        match pick {
            ValidationPick::Random { seed } => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut category_rng(!seed, i));
                for &j in &order[..n_val] {
                    is_val[j] = true;
                }
            }
            ValidationPick::Tail => is_val[n - n_val..].fill(true),
        }
        let (val, rest): (Vec<_>, Vec<_>) = names.iter().zip(&is_val).partition(|(_, &v)| v);
        kept.push(rest.into_iter().map(|(s, _)| s.clone()).collect());
        validation.push(val.into_iter().map(|(s, _)| s.clone()).collect());
    }
    (kept, validation)
}

/// One row of [`counts_table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryCounts {
    pub name: String,
    /// All names in the data set (duplicates included).
    pub n: usize,
    /// Distinct names.
    pub distinct: usize,
    pub train: usize,
    pub test: usize,
}

/// Per-category sizes of a data set and one of its splits, in category order.
pub fn counts_table(ds: &Dataset, split: &Split) -> Vec<CategoryCounts> {
    ds.categories
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let names = ds.names.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let distinct = names.iter().collect::<HashSet<_>>().len();
            CategoryCounts {
                name: name.clone(),
                n: names.len(),
                distinct,
                train: split.train.get(i).map_or(0, Vec::len),
                test: split.test.get(i).map_or(0, Vec::len),
            }
        })
        .collect()
}

/// Plain-text table of [`counts_table`] rows with a total line, ready to print.
pub fn format_counts_table(rows: &[CategoryCounts]) -> String {
    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .chain(["category".len()])
        .max()
        .unwrap_or(8);
    let total = CategoryCounts {
        name: "total".to_string(),
        n: rows.iter().map(|r| r.n).sum(),
        distinct: rows.iter().map(|r| r.distinct).sum(),
        train: rows.iter().map(|r| r.train).sum(),
        test: rows.iter().map(|r| r.test).sum(),
    };
    let mut out = format!(
        "{:<width$} {:>7} {:>8} {:>7} {:>6}\n",
        "category", "names", "distinct", "train", "test"
    );
    for r in rows.iter().chain([&total]) {
        let _ = writeln!(
            out,
            "{:<width$} {:>7} {:>8} {:>7} {:>6}",
            r.name, r.n, r.distinct, r.train, r.test
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn train_len_matches_python_int_of_float() {
        for n in 0..20_000usize {
            assert_eq!(train_len(n), (n as f64 * 0.8) as usize, "n = {n}");
        }
    }

    #[test]
    fn validation_rules() {
        let train = vec![
            names(&["a"]),
            names(&["a", "b"]),
            names(&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]),
        ];
        let random = ValidationPick::Random { seed: 7 };
        for pick in [random, ValidationPick::Tail] {
            let (rest, val) = carve_validation(&train, 0.1, pick);
            assert_eq!(val.iter().map(Vec::len).collect::<Vec<_>>(), [0, 1, 1]);
            assert_eq!(rest.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 9]);
            let (rest, val) = carve_validation(&train, 1.0, pick);
            assert_eq!(val.iter().map(Vec::len).collect::<Vec<_>>(), [0, 1, 9]);
            assert_eq!(rest.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
            let (rest, val) = carve_validation(&train, f64::NAN, pick);
            assert!(val.iter().all(Vec::is_empty));
            assert_eq!(rest, train);
        }
        let pick = ValidationPick::Random { seed: 99 };
        let (a, b) = carve_validation(&train, 0.3, pick);
        assert_eq!((a, b), carve_validation(&train, 0.3, pick));
    }

    #[test]
    fn a_tail_validation_is_the_end_of_each_list_in_order() {
        let train = vec![
            names(&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]),
            names(&["k", "l", "m", "n", "o"]),
        ];
        let (rest, val) = carve_validation(&train, 0.3, ValidationPick::Tail);
        assert_eq!(val, [names(&["h", "i", "j"]), names(&["o"])]);
        assert_eq!(
            rest,
            [
                names(&["a", "b", "c", "d", "e", "f", "g"]),
                names(&["k", "l", "m", "n"])
            ]
        );
        // The random pick takes other names (for this seed), in list order too.
        let (rest, val) = carve_validation(&train, 0.3, ValidationPick::Random { seed: 7 });
        assert_ne!(val[0], names(&["h", "i", "j"]));
        assert!(val[0].windows(2).all(|w| w[0] < w[1]));
        assert!(rest[0].windows(2).all(|w| w[0] < w[1]));
    }
}
