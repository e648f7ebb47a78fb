//! Checks against the official data set (spec §4.2–§4.3).

mod common;

use std::collections::HashSet;

use surnames_data::{
    counts_table, dedup_split, format_counts_table, load_dir, load_dir_with_report, tutorial_split,
    verify_dir, ValidationPick,
};

/// `(category, n, train, test)` from spec §4.3.
const SPEC_COUNTS: [(&str, usize, usize, usize); 18] = [
    ("Arabic", 2000, 1600, 400),
    ("Chinese", 268, 214, 54),
    ("Czech", 519, 415, 104),
    ("Dutch", 297, 237, 60),
    ("English", 3668, 2934, 734),
    ("French", 277, 221, 56),
    ("German", 724, 579, 145),
    ("Greek", 203, 162, 41),
    ("Irish", 232, 185, 47),
    ("Italian", 709, 567, 142),
    ("Japanese", 991, 792, 199),
    ("Korean", 94, 75, 19),
    ("Polish", 139, 111, 28),
    ("Portuguese", 74, 59, 15),
    ("Russian", 9408, 7526, 1882),
    ("Scottish", 100, 80, 20),
    ("Spanish", 298, 238, 60),
    ("Vietnamese", 73, 58, 15),
];

#[test]
fn tutorial_counts_match_spec() {
    let ds = load_dir(&common::data_dir()).unwrap();
    let split = tutorial_split(&ds);
    let expected: Vec<&str> = SPEC_COUNTS.iter().map(|c| c.0).collect();
    assert_eq!(ds.categories, expected);

    let rows = counts_table(&ds, &split);
    for (row, &(name, n, train, test)) in rows.iter().zip(&SPEC_COUNTS) {
        assert_eq!(
            (row.name.as_str(), row.n, row.train, row.test),
            (name, n, train, test)
        );
    }
    assert_eq!(ds.len(), 20074);
    assert_eq!(split.n_train(), 16053);
    assert_eq!(split.n_test(), 4021);
    assert_eq!(
        rows.iter().find(|r| r.name == "Arabic").unwrap().distinct,
        108
    );

    // File order, no shuffle: the test part is the tail of each file.
    for (i, names) in ds.names.iter().enumerate() {
        assert_eq!(
            [split.train[i].clone(), split.test[i].clone()].concat(),
            *names
        );
    }

    let table = format_counts_table(&rows);
    assert!(table.lines().last().unwrap().contains("20074"));
    assert!(table.lines().last().unwrap().contains("16053"));
    assert!(table.lines().last().unwrap().contains("4021"));
}

#[test]
fn names_are_clean() {
    let (ds, dropped) = load_dir_with_report(&common::data_dir()).unwrap();
    assert_eq!(ds.max_name_len(), 20);
    for names in &ds.names {
        for name in names {
            assert!(!name.is_empty());
            assert!(surnames_data::encode(name).is_some(), "{name:?}");
        }
    }
    // Spec §4.2: a few Korean/Chinese names keep a trailing space.
    assert!(ds.names.iter().flatten().any(|n| n.ends_with(' ')));
    // Characters without ASCII base (e.g. ß) are reported with their place.
    for d in &dropped {
        assert!(surnames_data::letter_index(d.ch).is_none());
        assert!(ds.category_index(&d.category).is_some());
        assert!(d.line >= 1);
    }
}

/// Distinct normalised names per category, computed independently with Python
/// (`unicodedata.normalize('NFD')`, drop category Mn, keep alphabet, `dict.fromkeys`).
/// Total 17994 distinct (name, language) pairs (18015 before normalisation merges accented
/// variants); 17422 distinct names ignoring the language.
const SPEC_DISTINCT: [(&str, usize); 18] = [
    ("Arabic", 108),
    ("Chinese", 246),
    ("Czech", 502),
    ("Dutch", 286),
    ("English", 3668),
    ("French", 273),
    ("German", 690),
    ("Greek", 193),
    ("Irish", 226),
    ("Italian", 701),
    ("Japanese", 990),
    ("Korean", 94),
    ("Polish", 138),
    ("Portuguese", 74),
    ("Russian", 9341),
    ("Scottish", 100),
    ("Spanish", 293),
    ("Vietnamese", 71),
];

#[test]
fn dedup_split_counts() {
    let ds = load_dir(&common::data_dir()).unwrap();
    let split = dedup_split(&ds, 0);
    assert_eq!(split.n_train() + split.n_test(), 17994);
    let all: HashSet<&String> = ds.names.iter().flatten().collect();
    assert_eq!(all.len(), 17422);
    for (i, names) in ds.names.iter().enumerate() {
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(
            (ds.categories[i].as_str(), distinct.len()),
            SPEC_DISTINCT[i]
        );
        let (train, test) = (&split.train[i], &split.test[i]);
        assert_eq!(train.len(), distinct.len() * 4 / 5, "{}", ds.categories[i]);
        assert_eq!(train.len() + test.len(), distinct.len());
        let all: HashSet<&String> = train.iter().chain(test).collect();
        assert_eq!(all, distinct, "every distinct name exactly once");
        let train_set: HashSet<&String> = train.iter().collect();
        assert!(test.iter().all(|n| !train_set.contains(n)), "no leakage");
    }
}

#[test]
fn dedup_split_is_seeded() {
    let ds = load_dir(&common::data_dir()).unwrap();
    assert_eq!(dedup_split(&ds, 42), dedup_split(&ds, 42));
    assert_ne!(dedup_split(&ds, 42), dedup_split(&ds, 43));
}

#[test]
fn validation_carve_on_official_data() {
    let ds = load_dir(&common::data_dir()).unwrap();
    let split = dedup_split(&ds, 1);
    let (train, val) = surnames_data::carve_validation(&split.train, 0.1, random(1));
    for i in 0..ds.categories.len() {
        assert!(!val[i].is_empty());
        assert_eq!(train[i].len() + val[i].len(), split.train[i].len());
    }
    assert_eq!(
        (train.clone(), val.clone()),
        surnames_data::carve_validation(&split.train, 0.1, random(1))
    );
    assert_ne!(
        val,
        surnames_data::carve_validation(&split.train, 0.1, random(2)).1
    );
}

fn random(seed: u64) -> ValidationPick {
    ValidationPick::Random { seed }
}

#[test]
fn tail_validation_on_the_tutorial_split_is_the_end_of_each_training_part() {
    let ds = load_dir(&common::data_dir()).unwrap();
    let split = tutorial_split(&ds);
    let (train, val) = surnames_data::carve_validation(&split.train, 0.2, ValidationPick::Tail);
    for i in 0..ds.categories.len() {
        let n = split.train[i].len();
        assert_eq!(val[i].len(), (n / 5).max(1), "{}", ds.categories[i]);
        assert_eq!([&train[i][..], &val[i][..]].concat(), split.train[i]);
    }
}

#[test]
fn shared_copy_verifies() {
    let mismatches = verify_dir(&common::data_dir()).unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
}
