//! Alphabet and normalisation (spec §4.1–§4.2).

use surnames_data::{encode, letter_index, normalise, ALPHABET, N_LETTERS};

#[test]
fn accents_become_base_letters() {
    for (raw, want) in [
        ("é", "e"),
        ("ñ", "n"),
        ("ü", "u"),
        ("Dvořák", "Dvorak"),
        ("Ślusarski", "Slusarski"),
        ("Abreu", "Abreu"),
        ("Nuñez", "Nunez"),
        ("Müller", "Muller"),
    ] {
        let n = normalise(raw);
        assert_eq!(n.text, want, "{raw:?}");
        assert!(n.dropped.is_empty(), "{raw:?}: {:?}", n.dropped);
    }
    // Already decomposed input gives the same result.
    assert_eq!(normalise("Dvor\u{30c}a\u{301}k").text, "Dvorak");
}

#[test]
fn chars_without_ascii_base_are_dropped_and_reported() {
    let n = normalise("Groß");
    assert_eq!(n.text, "Gro");
    assert_eq!(n.dropped, ['ß']);

    let n = normalise("Łukasz2:\u{a0}x\r");
    assert_eq!(n.text, "ukaszx");
    assert_eq!(n.dropped, ['Ł', '2', ':', '\u{a0}', '\r']);
}

#[test]
fn case_and_punctuation_kept() {
    let n = normalise("O'Neal-Smith, Jr. ");
    assert_eq!(n.text, "O'Neal-Smith, Jr. ");
    assert_eq!(normalise("McDONALD").text, "McDONALD");
    assert_eq!(normalise("Ng ").text, "Ng ", "trailing space kept");
}

#[test]
fn letter_indices() {
    assert_eq!(N_LETTERS, 58);
    assert_eq!(ALPHABET.len(), N_LETTERS);
    assert_eq!(letter_index('a'), Some(0));
    assert_eq!(letter_index('z'), Some(25));
    assert_eq!(letter_index('A'), Some(26));
    assert_eq!(letter_index('Z'), Some(51));
    assert_eq!(letter_index(' '), Some(52));
    assert_eq!(letter_index('.'), Some(53));
    assert_eq!(letter_index(','), Some(54));
    assert_eq!(letter_index(';'), Some(55));
    assert_eq!(letter_index('\''), Some(56));
    assert_eq!(letter_index('-'), Some(57));
    assert_eq!(letter_index('é'), None);
    assert_eq!(letter_index('\n'), None);
}

#[test]
fn encoding() {
    assert_eq!(encode("aA -"), Some(vec![0, 26, 52, 57]));
    assert_eq!(encode(""), Some(vec![]));
    assert_eq!(encode("é"), None);
}
