//! The tutorial's figures as SVG: training curves, confusion matrix and the test-accuracy bar.
//!
//! Everything is rendered with plotters' SVG backend into a `String`. Without the `ttf` feature
//! plotters emits text as plain `<text>` elements and only estimates text extents, so no system
//! fonts are needed (CI machines may have none); the viewer picks a sans-serif font. Layouts
//! therefore leave generous room around labels rather than relying on measured text widths.
//!
//! Renderers return `Result<String, String>` so a plotting problem can be reported without
//! aborting a long training run; [`save_svg`] writes atomically.

use std::io;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::fsutil::write_atomic;

/// Matplotlib's default line colour ("C0"), to look like the tutorial's figures.
const C0: RGBColor = RGBColor(31, 119, 180);
const FONT: &str = "sans-serif";
/// Colour for matrix cells without a finite value.
const NAN_GREY: RGBColor = RGBColor(200, 200, 200);
/// Rough width of one character relative to the font size, for sans-serif fonts; used only to
/// reserve space for labels.
const CHAR_WIDTH_EM: f64 = 0.62;
/// plotters divides the requested font size by this before writing `font-size` into the SVG.
const PLOTTERS_FONT_SCALE: f64 = 1.24;

/// Writes an SVG document to `path` atomically.
pub fn save_svg(path: &Path, svg: &str) -> io::Result<()> {
    write_atomic(path, svg.as_bytes())
}

/// The tutorial's `TrainingProcess.svg`: three stacked panels ("Average loss", "Train accuracy",
/// "Test accuracy"), one point per `steps_per_point` training steps.
///
/// Point `i` is drawn at x = `i + 1` (it summarises the steps up to `(i + 1) * steps_per_point`).
/// Non-finite values are left out (the line is broken there); empty series give empty panels.
pub fn training_process_svg(
    steps_per_point: usize,
    avg_loss: &[f32],
    train_acc: &[f32],
    test_acc: &[f32],
) -> Result<String, String> {
    let x_desc = if steps_per_point == 1000 {
        "Epoch (*1000)".to_string()
    } else {
        format!("Steps (*{steps_per_point})")
    };
    let n = avg_loss.len().max(train_acc.len()).max(test_acc.len());
    let x_max = n.max(2) as f64;
    let loss_max = avg_loss
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max);
    let loss_top = if loss_max > 0.0 {
        f64::from(loss_max) * 1.05
    } else {
        1.0
    };
    let panels: [(&str, &[f32], f64); 3] = [
        ("Average loss", avg_loss, loss_top),
        ("Train accuracy", train_acc, 1.0),
        ("Test accuracy", test_acc, 1.0),
    ];

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 1050)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let areas = root.split_evenly((3, 1));
        for (area, (title, values, y_top)) in areas.iter().zip(panels) {
            draw_curve_panel(area, title, &x_desc, values, x_max, y_top)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn draw_curve_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    x_desc: &str,
    values: &[f32],
    x_max: f64,
    y_top: f64,
) -> Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 26))
        .margin_top(8)
        // The gap between panels (matplotlib's hspace=0.6 in the tutorial).
        .margin_bottom(28)
        .margin_left(12)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_top)
        .map_err(err)?;
    let y_dec = decimals(y_top, 5);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        // x counts whole reporting intervals: integer ticks only, and never more than exist.
        .x_labels((x_max as usize + 1).min(11))
        .y_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.y_dec$}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()
        .map_err(err)?;
    for segment in finite_segments(values) {
        if let [single] = segment.as_slice() {
            chart
                .draw_series(std::iter::once(Circle::new(*single, 3, C0.filled())))
                .map_err(err)?;
        } else {
            chart
                .draw_series(LineSeries::new(segment, C0.stroke_width(1)))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Splits a series into runs of finite values, as (x, y) points with x = index + 1.
fn finite_segments(values: &[f32]) -> Vec<Vec<(f64, f64)>> {
    let mut segments = Vec::new();
    let mut current = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() {
            current.push(((i + 1) as f64, f64::from(v)));
        } else if !current.is_empty() {
            segments.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// Decimal places that distinguish ticks over `0..range` with about `ticks` ticks.
fn decimals(range: f64, ticks: usize) -> usize {
    let step = range / ticks.max(1) as f64;
    if !(step.is_finite() && step > 0.0) {
        return 0;
    }
    (-step.log10()).ceil().clamp(0.0, 6.0) as usize
}

/// The tutorial's `ConfusionMatrix.svg`: `matrix` is row-major `n × n` with rows = true
/// category and columns = predicted category, drawn as a heat map (row 0 at the top) with every
/// tick labelled and a colour bar scaled `0..max`.
///
/// Non-finite cells are drawn grey; negative values are clamped to the bottom of the scale.
pub fn confusion_svg(categories: &[String], matrix: &[f32], title: &str) -> Result<String, String> {
    let n = categories.len();
    if n == 0 {
        return Err("confusion matrix: no categories".into());
    }
    if matrix.len() != n * n {
        return Err(format!(
            "confusion matrix: {} values for {n} categories (need {})",
            matrix.len(),
            n * n
        ));
    }
    let max = matrix
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max);
    let scale_max = if max > 0.0 { f64::from(max) } else { 1.0 };

    const W: i32 = 1000;
    const H: i32 = 800;
    const MARGIN: i32 = 12;
    const TITLE_H: i32 = 56;
    const AXIS_DESC_H: i32 = 26;
    const TICK: i32 = 5;
    const BAR_GAP: i32 = 30;
    const BAR_W: i32 = 24;
    const BAR_LABEL_W: i32 = 64;

    // Tick labels must fit the cell pitch; start from 13 px text and shrink for many categories.
    let longest = categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(1);
    let provisional_side = H - TITLE_H - 2 * MARGIN - AXIS_DESC_H;
    let pitch = f64::from(provisional_side) / n as f64;
    let label_px = (pitch * 0.8).clamp(5.0, 13.0);
    let label_w = (label_px * CHAR_WIDTH_EM * longest as f64).ceil() as i32;

    let left = MARGIN + AXIS_DESC_H + 8 + label_w + 4 + TICK;
    let bottom = TICK + 4 + label_w + 8 + AXIS_DESC_H + MARGIN;
    let right = BAR_GAP + BAR_W + TICK + BAR_LABEL_W + MARGIN;
    let side = (H - TITLE_H - bottom).min(W - left - right).max(n as i32);
    // Centre the block (labels + matrix + colour bar) horizontally.
    let x0 = left + (W - left - side - right) / 2;
    let y0 = TITLE_H;
    let cell = |i: usize| (f64::from(side) * i as f64 / n as f64).round() as i32;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W as u32, H as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let text = |px: f64| (FONT, px * PLOTTERS_FONT_SCALE).into_font().color(&BLACK);

        root.draw_text(
            title,
            &text(18.0).pos(Pos::new(HPos::Center, VPos::Center)),
            (x0 + side / 2, TITLE_H / 2),
        )
        .map_err(err)?;

        for (r, row) in matrix.chunks_exact(n).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let colour = if v.is_finite() {
                    viridis(f64::from(v) / scale_max)
                } else {
                    NAN_GREY
                };
                root.draw(&Rectangle::new(
                    [
                        (x0 + cell(c), y0 + cell(r)),
                        (x0 + cell(c + 1), y0 + cell(r + 1)),
                    ],
                    colour.filled(),
                ))
                .map_err(err)?;
            }
        }
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + side, y0 + side)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;

        let label_style = text(label_px);
        for (i, name) in categories.iter().enumerate() {
            let mid = (cell(i) + cell(i + 1)) / 2;
            // Rows (true category) on the left.
            root.draw(&PathElement::new(
                vec![(x0 - TICK, y0 + mid), (x0, y0 + mid)],
                BLACK,
            ))
            .map_err(err)?;
            root.draw_text(
                name,
                &label_style.pos(Pos::new(HPos::Right, VPos::Center)),
                (x0 - TICK - 4, y0 + mid),
            )
            .map_err(err)?;
            // Columns (predicted category) below, reading bottom to top like matplotlib's
            // rotation=90.
            let yb = y0 + side;
            root.draw(&PathElement::new(
                vec![(x0 + mid, yb), (x0 + mid, yb + TICK)],
                BLACK,
            ))
            .map_err(err)?;
            root.draw_text(
                name,
                &label_style
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
                (x0 + mid, yb + TICK + 4),
            )
            .map_err(err)?;
        }

        let desc = text(15.0);
        root.draw_text(
            "Predicted",
            &desc.pos(Pos::new(HPos::Center, VPos::Bottom)),
            (x0 + side / 2, H - MARGIN),
        )
        .map_err(err)?;
        root.draw_text(
            "True",
            &desc
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (x0 - left + MARGIN, y0 + side / 2),
        )
        .map_err(err)?;

        draw_colour_bar(
            &root,
            x0 + side + BAR_GAP,
            y0,
            BAR_W,
            side,
            scale_max,
            &text(12.0),
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A vertical viridis gradient from 0 (bottom) to `max` (top) with labelled ticks.
fn draw_colour_bar(
    root: &DrawingArea<SVGBackend, Shift>,
    x: i32,
    y: i32,
    width: i32,
    height: i32,
    max: f64,
    style: &TextStyle,
) -> Result<(), String> {
    let strips = height.clamp(1, 128);
    for s in 0..strips {
        let top = y + height * s / strips;
        let bottom = y + height * (s + 1) / strips;
        // Strip 0 is at the top, i.e. the high end of the scale.
        let t = 1.0 - (f64::from(s) + 0.5) / f64::from(strips);
        root.draw(&Rectangle::new(
            [(x, top), (x + width, bottom)],
            viridis(t).filled(),
        ))
        .map_err(err)?;
    }
    root.draw(&Rectangle::new(
        [(x, y), (x + width, y + height)],
        BLACK.stroke_width(1),
    ))
    .map_err(err)?;

    let step = nice_step(max / 5.0);
    let dec = decimals(step, 1);
    let mut k = 0u32;
    loop {
        let v = step * f64::from(k);
        if v > max * (1.0 + 1e-9) {
            break;
        }
        let ty = y + height - (f64::from(height) * v / max).round() as i32;
        root.draw(&PathElement::new(
            vec![(x + width, ty), (x + width + 5, ty)],
            BLACK,
        ))
        .map_err(err)?;
        root.draw_text(
            &format!("{v:.dec$}"),
            &style.pos(Pos::new(HPos::Left, VPos::Center)),
            (x + width + 8, ty),
        )
        .map_err(err)?;
        k += 1;
    }
    Ok(())
}

/// The smallest 1, 2, 2.5 or 5 × 10^k that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}

/// Matplotlib's default colour map, piecewise-linear through nine samples (close enough for a
/// heat map, and avoids plotters' optional colormaps feature).
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (40, 174, 128),
        (94, 201, 98),
        (173, 220, 48),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The tutorial's test-accuracy chart: one bar at x = 1 with the test accuracy, x range 0–5,
/// y range 0–1, titled `Test accuracy: 0.512, Random guess: 0.056`. A dashed line marks the
/// random-guess level for reference.
pub fn accuracy_bar_svg(accuracy: f32, random_guess: f32) -> Result<String, String> {
    let title = format!("Test accuracy: {accuracy:.3}, Random guess: {random_guess:.3}");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, (FONT, 24))
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0f64..5.0, 0.0f64..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style((FONT, 16))
            .draw()
            .map_err(err)?;
        if accuracy.is_finite() {
            let height = f64::from(accuracy).clamp(0.0, 1.0);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.6, 0.0), (1.4, height)],
                    C0.filled(),
                )))
                .map_err(err)?;
        }
        if random_guess.is_finite() {
            let level = f64::from(random_guess).clamp(0.0, 1.0);
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, level), (5.0, level)],
                    6,
                    4,
                    RGBColor(120, 120, 120).stroke_width(1),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("plot rendering failed: {e}")
}
