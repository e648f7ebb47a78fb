//! The SVG figures: well-formed XML, expected titles/labels/category names as `<text>`, no
//! panics on degenerate data, and nothing drawn outside the canvas.
//!
//! Set `SURNAMES_PLOT_DIR` to also save the rendered SVGs there for a visual check.

use std::fs;

use surnames::plots::{accuracy_bar_svg, confusion_svg, save_svg, training_process_svg};

const CATEGORIES: [&str; 18] = [
    "Arabic",
    "Chinese",
    "Czech",
    "Dutch",
    "English",
    "French",
    "German",
    "Greek",
    "Irish",
    "Italian",
    "Japanese",
    "Korean",
    "Polish",
    "Portuguese",
    "Russian",
    "Scottish",
    "Spanish",
    "Vietnamese",
];

fn categories() -> Vec<String> {
    CATEGORIES.iter().map(|s| s.to_string()).collect()
}

/// Saves `svg` under `$SURNAMES_PLOT_DIR/name` when that variable is set.
fn keep(name: &str, svg: &str) {
    if let Some(dir) = std::env::var_os("SURNAMES_PLOT_DIR") {
        save_svg(&std::path::Path::new(&dir).join(name), svg).unwrap();
    }
}

/// Parses the SVG (panicking if it is not well-formed XML) and returns the trimmed contents of
/// all `<text>` elements.
fn texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("SVG must be well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

fn count(svg: &str, tag: &str) -> usize {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants().filter(|n| n.has_tag_name(tag)).count()
}

fn has(texts: &[String], s: &str) -> bool {
    texts.iter().any(|t| t == s)
}

/// Canvas size from the root element.
fn canvas(svg: &str) -> (f64, f64) {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let r = doc.root_element();
    let num = |a: &str| {
        r.attribute(a)
            .unwrap()
            .trim_end_matches("px")
            .parse::<f64>()
            .unwrap()
    };
    (num("width"), num("height"))
}

/// Checks that every `<text>` fits on the canvas, estimating glyph widths generously (0.62 em)
/// and honouring the anchor, the vertical alignment (`dy`) and the 90°/270° rotations plotters
/// emits.
fn assert_texts_inside(svg: &str) {
    let (w, h) = canvas(svg);
    let doc = roxmltree::Document::parse(svg).unwrap();
    for n in doc.descendants().filter(|n| n.has_tag_name("text")) {
        let attr = |a: &str| n.attribute(a).unwrap_or("0");
        let x: f64 = attr("x").parse().unwrap();
        let y: f64 = attr("y").parse().unwrap();
        let size: f64 = attr("font-size").parse().unwrap();
        let content = n.text().unwrap_or("").trim();
        let len = 0.62 * size * content.chars().count() as f64;
        // Along the text direction, relative to the anchor.
        let (start, end) = match n.attribute("text-anchor") {
            Some("end") => (-len, 0.0),
            Some("middle") => (-len / 2.0, len / 2.0),
            _ => (0.0, len),
        };
        // Across it (downwards in the text's own frame), from the baseline shift plotters uses.
        let (top, bottom) = match n.attribute("dy") {
            Some("0.76em") => (0.0, size),
            Some("0.5ex") => (-0.6 * size, 0.6 * size),
            _ => (-size, 0.25 * size),
        };
        let transform = n.attribute("transform").unwrap_or("");
        let (x0, x1, y0, y1) = if transform.starts_with("rotate(270") {
            // Text runs upwards; its "down" points right.
            (x + top, x + bottom, y - end, y - start)
        } else if transform.starts_with("rotate(90") {
            (x - bottom, x - top, y + start, y + end)
        } else {
            assert!(transform.is_empty(), "unexpected transform {transform}");
            (x + start, x + end, y + top, y + bottom)
        };
        assert!(
            x0 >= 0.0 && y0 >= 0.0 && x1 <= w && y1 <= h,
            "text {content:?} at ({x}, {y}) leaves the {w}x{h} canvas: ({x0}, {y0})..({x1}, {y1})"
        );
    }
}

/// Curves shaped like the tutorial's: loss 0.0525 → 0.0055, train acc 0.08 → 0.93, test acc
/// 0.08 → 0.51, with some noise.
fn realistic_curves(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut loss = Vec::new();
    let mut train = Vec::new();
    let mut test = Vec::new();
    for i in 0..n {
        let t = i as f32 / n as f32;
        let wiggle = ((i * 7919) % 101) as f32 / 101.0 - 0.5;
        loss.push(0.0055 + 0.047 * (-4.0 * t).exp() + 0.002 * wiggle);
        train.push((0.93 - 0.85 * (-4.0 * t).exp() + 0.03 * wiggle).clamp(0.0, 1.0));
        test.push((0.51 - 0.43 * (-6.0 * t).exp() + 0.02 * wiggle).clamp(0.0, 1.0));
    }
    (loss, train, test)
}

#[test]
fn training_process_realistic() {
    let (loss, train, test) = realistic_curves(1000);
    let svg = training_process_svg(1000, &loss, &train, &test).unwrap();
    keep("TrainingProcess.svg", &svg);
    let t = texts(&svg);
    for title in ["Average loss", "Train accuracy", "Test accuracy"] {
        assert!(has(&t, title), "missing title {title}: {t:?}");
    }
    assert_eq!(t.iter().filter(|s| *s == "Epoch (*1000)").count(), 3);
    // Accuracy axes run 0..1.
    assert!(has(&t, "1.0") && has(&t, "0.0"), "{t:?}");
    // One unbroken line per panel, one vertex per point.
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let lines: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| n.attribute("stroke") == Some("#1F77B4"))
        .collect();
    assert_eq!(lines.len(), 3);
    for l in lines {
        assert_eq!(
            l.attribute("points").unwrap().split_whitespace().count(),
            1000
        );
    }
    assert_texts_inside(&svg);
}

#[test]
fn training_process_other_step_sizes() {
    let svg = training_process_svg(500, &[0.05, 0.04], &[0.1, 0.2], &[0.1, 0.15]).unwrap();
    let t = texts(&svg);
    assert_eq!(t.iter().filter(|s| *s == "Steps (*500)").count(), 3);
    assert!(!has(&t, "Epoch (*1000)"));
}

#[test]
fn training_process_edge_cases() {
    // Empty: axes and titles only.
    let svg = training_process_svg(1000, &[], &[], &[]).unwrap();
    let t = texts(&svg);
    assert!(has(&t, "Average loss") && has(&t, "Test accuracy"));
    assert_eq!(count(&svg, "circle"), 0);
    assert_texts_inside(&svg);

    // A single point per panel is drawn as a dot (a one-vertex line would be invisible).
    let svg = training_process_svg(1000, &[0.05], &[0.1], &[0.08]).unwrap();
    texts(&svg);
    assert_eq!(count(&svg, "circle"), 3);
    keep("TrainingProcess-single.svg", &svg);

    // NaN/inf values break the line instead of poisoning the axes.
    let loss = [0.05, f32::NAN, 0.04, 0.03, f32::INFINITY, 0.02, 0.01];
    let acc = [f32::NAN, 0.1, 0.2, f32::NAN, 0.3, 0.4, f32::NAN];
    let svg = training_process_svg(1000, &loss, &acc, &acc).unwrap();
    let t = texts(&svg);
    assert!(
        t.iter().all(|s| !s.contains("NaN") && !s.contains("inf")),
        "{t:?}"
    );
    assert_eq!(count(&svg, "circle"), 1, "isolated 0.05 in the loss panel");
    assert_texts_inside(&svg);
    keep("TrainingProcess-nan.svg", &svg);

    // All NaN, all zero, and series of different lengths.
    training_process_svg(1000, &[f32::NAN; 5], &[f32::NAN; 5], &[]).unwrap();
    let svg = training_process_svg(1000, &[0.0; 5], &[0.0; 5], &[0.0; 5]).unwrap();
    texts(&svg);
    training_process_svg(1, &[0.1; 10], &[0.5; 3], &[1.0]).unwrap();
    training_process_svg(0, &[1e9, -5.0], &[2.0, -1.0], &[0.5]).unwrap();
}

/// A plausible normalised confusion matrix: strong diagonal, Korean↔Chinese and
/// English↔Scottish confusions.
fn realistic_matrix() -> Vec<f32> {
    let n = CATEGORIES.len();
    let mut m = vec![0.0f32; n * n];
    for r in 0..n {
        for c in 0..n {
            m[r * n + c] = if r == c {
                0.5 + 0.4 * (r % 3) as f32 / 2.0
            } else {
                0.02
            };
        }
    }
    m[11 * n + 1] = 0.3; // Korean -> Chinese
    m[4 * n + 15] = 0.25; // English -> Scottish
    m
}

#[test]
fn confusion_matrix_realistic() {
    let svg = confusion_svg(&categories(), &realistic_matrix(), "Confusion matrix").unwrap();
    keep("ConfusionMatrix.svg", &svg);
    assert_eq!(canvas(&svg), (1000.0, 800.0));
    let t = texts(&svg);
    for name in CATEGORIES {
        assert_eq!(
            t.iter().filter(|s| *s == name).count(),
            2,
            "{name} on both axes"
        );
    }
    for label in ["Predicted", "True", "Confusion matrix"] {
        assert!(has(&t, label), "missing {label}");
    }
    // Colour bar from 0 to the maximum (0.9).
    assert!(has(&t, "0.0") && has(&t, "0.8"), "{t:?}");
    // x tick labels are rotated.
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let rotated = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter(|n| {
            n.attribute("transform")
                .is_some_and(|t| t.starts_with("rotate(270"))
        })
        .count();
    assert_eq!(
        rotated,
        18 + 1,
        "18 column labels plus the 'True' axis label"
    );
    assert!(count(&svg, "rect") >= 18 * 18);
    assert_texts_inside(&svg);
}

#[test]
fn confusion_matrix_edge_cases() {
    // All zero: the scale falls back to 0..1.
    let svg = confusion_svg(&categories(), &[0.0; 324], "zeros").unwrap();
    let t = texts(&svg);
    assert!(has(&t, "0.0") && has(&t, "1.0"), "{t:?}");
    assert_texts_inside(&svg);

    // Counts instead of fractions, NaN and negative cells.
    let mut m: Vec<f32> = (0..324).map(|i| (i % 19) as f32 * 37.0).collect();
    m[5] = f32::NAN;
    m[6] = -3.0;
    let svg = confusion_svg(&categories(), &m, "counts").unwrap();
    keep("ConfusionMatrix-counts.svg", &svg);
    let t = texts(&svg);
    assert!(has(&t, "0") && has(&t, "600"), "{t:?}");
    assert!(svg.contains("#C8C8C8"), "NaN cell is grey");
    assert_texts_inside(&svg);

    // One category, names needing XML escaping, many categories.
    let svg = confusion_svg(&["A & <B>".to_string()], &[1.0], "t").unwrap();
    assert_eq!(texts(&svg).iter().filter(|s| *s == "A & <B>").count(), 2);
    let many: Vec<String> = (0..100).map(|i| format!("Category{i}")).collect();
    let svg = confusion_svg(&many, &vec![0.01; 10_000], "many").unwrap();
    keep("ConfusionMatrix-many.svg", &svg);
    assert_eq!(
        texts(&svg)
            .iter()
            .filter(|s| s.starts_with("Category"))
            .count(),
        200
    );
    assert_texts_inside(&svg);

    // Invalid input is an error, not a panic.
    assert!(confusion_svg(&[], &[], "empty").is_err());
    assert!(confusion_svg(&categories(), &[0.0; 17], "short").is_err());
}

#[test]
fn accuracy_bar() {
    let svg = accuracy_bar_svg(0.5118, 1.0 / 18.0).unwrap();
    keep("TestAccuracy.svg", &svg);
    let t = texts(&svg);
    assert!(
        has(&t, "Test accuracy: 0.512, Random guess: 0.056"),
        "{t:?}"
    );
    for tick in ["0", "5", "0.0", "1.0"] {
        assert!(has(&t, tick), "missing tick {tick}: {t:?}");
    }
    assert!(svg.contains("#1F77B4"), "bar drawn");
    assert_texts_inside(&svg);

    for (acc, guess) in [(0.0, 0.0), (1.0, 1.0), (1.5, -0.5), (f32::NAN, f32::NAN)] {
        let svg = accuracy_bar_svg(acc, guess).unwrap();
        texts(&svg);
    }
    let t = texts(&accuracy_bar_svg(f32::NAN, 0.25).unwrap());
    assert!(has(&t, "Test accuracy: NaN, Random guess: 0.250"), "{t:?}");
}

#[test]
fn save_svg_writes_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("TestAccuracy.svg");
    let svg = accuracy_bar_svg(0.5, 0.1).unwrap();
    save_svg(&path, &svg).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), svg);
    let e = save_svg(&dir.path().join("missing").join("x.svg"), &svg).unwrap_err();
    assert!(e.to_string().contains("x.svg"));
}
