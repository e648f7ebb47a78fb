//! Matrix products. Dense products go to the `gemm` crate (runtime-dispatched SIMD kernels, AVX-512
//! where the CPU has it); `rows_matmul` is a hand-written product for spike inputs, where it
//! skips the zero entries and needs no packing.

/// A read-only strided matrix view: element (r, c) is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows × cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// `c[m×n] = a·b` (or `c += a·b` with `accumulate`); `c` row-major with row stride `c_rs`.
pub fn matmul(c: &mut [f32], c_rs: usize, accumulate: bool, a: Mat, b: Mat) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    a.check();
    b.check();
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * c_rs + n <= c.len(), "output view out of bounds");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * c_rs..r * c_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: all three views were bounds-checked above; `c` is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `c[m×n] += a[m×k] · b[k×n]` with `b` row-major (row stride `b_rs`), as a sum of the rows of `b`
/// weighted by the non-zero entries of `a`. For spike inputs most entries are 0 and are skipped.
pub fn rows_matmul(c: &mut [f32], n: usize, a: &[f32], k: usize, b: &[f32], b_rs: usize) {
    SCRATCH.with_borrow_mut(|s| {
        s.fill_from_rows(a, k);
        s.matmul(c, n, b, b_rs);
    });
}

thread_local! {
    /// Reused so that the per-step products do not allocate.
    static SCRATCH: std::cell::RefCell<SparseRows> = Default::default();
}

/// The non-zero entries of a matrix, row by row (compressed sparse rows).
#[derive(Default)]
struct SparseRows {
    /// Row `r` is `index/value[start[r]..start[r + 1]]`.
    start: Vec<usize>,
    index: Vec<u32>,
    value: Vec<f32>,
}

/// Output columns per pass of [`SparseRows::matmul`]: 64 accumulators fit in registers, and a
/// 64-column panel of `b` stays in cache while every output row visits it.
const PANEL: usize = 64;

impl SparseRows {
    /// From the rows of a row-major `[m×k]` matrix.
    fn fill_from_rows(&mut self, a: &[f32], k: usize) {
        self.clear();
        for row in a.chunks_exact(k) {
            self.push_row(row.iter().copied().enumerate());
        }
    }

    /// From the columns of a row-major `[m×k]` matrix (the rows of its transpose).
    fn fill_from_columns(&mut self, a: &[f32], k: usize) {
        self.clear();
        for j in 0..k {
            self.push_row(a.chunks_exact(k).map(|row| row[j]).enumerate());
        }
    }

    /// Appends one row from its `(column, value)` entries, keeping the non-zero ones.
    /// Branch-free compaction: every entry is written and the end moves past non-zero ones only.
    /// Spikes are unpredictable; a branch per entry mispredicted often enough to cost an eighth
    /// of batch-1 inference.
    #[inline]
    fn push_row(&mut self, entries: impl ExactSizeIterator<Item = (usize, f32)>) {
        let mut end = self.index.len();
        self.index.resize(end + entries.len(), 0);
        self.value.resize(end + entries.len(), 0.0);
        for (j, x) in entries {
            self.index[end] = j as u32;
            self.value[end] = x;
            end += (x != 0.0) as usize;
        }
        self.index.truncate(end);
        self.value.truncate(end);
        self.start.push(end);
    }

    fn clear(&mut self) {
        self.start.clear();
        self.start.push(0);
        self.index.clear();
        self.value.clear();
    }

    /// `c[m×n] += self · b` for row-major `b` (row stride `b_rs`), one output panel at a time.
    fn matmul(&self, c: &mut [f32], n: usize, b: &[f32], b_rs: usize) {
        let mut c0 = 0;
        while c0 + PANEL <= n {
            for (r, c_row) in c.chunks_exact_mut(n).enumerate() {
                let (idx, val) = self.row(r);
                if !idx.is_empty() {
                    panel::<PANEL>(&mut c_row[c0..c0 + PANEL], idx, val, b, b_rs, c0);
                }
            }
            c0 += PANEL;
        }
        if c0 < n {
            for (r, c_row) in c.chunks_exact_mut(n).enumerate() {
                let (idx, val) = self.row(r);
                for (&j, &w) in idx.iter().zip(val) {
                    let j = j as usize * b_rs;
                    axpy(&mut c_row[c0..], w, &b[j + c0..j + n]);
                }
            }
        }
    }

    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let range = self.start[r]..self.start[r + 1];
        (&self.index[range.clone()], &self.value[range])
    }
}

/// `acc[..P] += Σ val[i] · b[idx[i]·b_rs + c0 ..][..P]`, the sum held in registers. A spike
/// (`val` 1) adds its row exactly: `1·x` is `x`.
#[inline(always)]
fn panel<const P: usize>(
    acc: &mut [f32],
    idx: &[u32],
    val: &[f32],
    b: &[f32],
    b_rs: usize,
    c0: usize,
) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    if P == 64 {
        return panel64_avx512(acc, idx, val, b, b_rs, c0);
    }
    panel_portable::<P>(acc, idx, val, b, b_rs, c0)
}

/// [`panel`] in portable Rust (LLVM vectorises the inner loop).
#[inline(always)]
fn panel_portable<const P: usize>(
    acc: &mut [f32],
    idx: &[u32],
    val: &[f32],
    b: &[f32],
    b_rs: usize,
    c0: usize,
) {
    let mut sum = [0.0f32; P];
    sum.copy_from_slice(&acc[..P]);
    for (&j, &w) in idx.iter().zip(val) {
        let row = &b[j as usize * b_rs + c0..][..P];
        for l in 0..P {
            sum[l] += w * row[l];
        }
    }
    acc[..P].copy_from_slice(&sum);
}

/// [`panel`] for 64 columns in four 512-bit registers, the same products and sums in the same
/// order. Why by hand: LLVM vectorises the portable loop with 256-bit registers on these CPUs
/// (its tuning for AVX-512 Xeons), and each row is then eight loads instead of four. The sums
/// are bound by how fast rows arrive from L2; full-line loads measured `infer_b1` ~1.25× faster
/// (README, Speed).
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
fn panel64_avx512(acc: &mut [f32], idx: &[u32], val: &[f32], b: &[f32], b_rs: usize, c0: usize) {
    use std::arch::x86_64::{__m512, _mm512_add_ps, _mm512_loadu_ps, _mm512_mul_ps};
    use std::arch::x86_64::{_mm512_set1_ps, _mm512_storeu_ps};
    let acc = &mut acc[..64];
    // SAFETY: every load and store covers 16 floats inside a slice of exactly 64 (bounds
    // checked when slicing); the unaligned forms accept any address.
    unsafe {
        let load = |p: &[f32], k: usize| _mm512_loadu_ps(p[16 * k..][..16].as_ptr());
        let mut sum: [__m512; 4] = std::array::from_fn(|k| load(acc, k));
        for (&j, &w) in idx.iter().zip(val) {
            let row = &b[j as usize * b_rs + c0..][..64];
            let w = _mm512_set1_ps(w);
            for (k, s) in sum.iter_mut().enumerate() {
                *s = _mm512_add_ps(*s, _mm512_mul_ps(w, load(row, k)));
            }
        }
        for (k, s) in sum.iter().enumerate() {
            _mm512_storeu_ps(acc[16 * k..][..16].as_mut_ptr(), *s);
        }
    }
}

/// `w[k×n] += aᵀ·d` for row-major `a` `[r×k]` and `d` `[r×n]` (weight gradients over all time
/// steps in one product).
pub fn add_at_b(w: &mut [f32], a: &[f32], k: usize, d: &[f32], n: usize) {
    let rows = a.len() / k;
    let done = SCRATCH.with_borrow_mut(|s| {
        // Few rows: the list is cheap, and its length decides. Many: count first, as a dense
        // `a` would make building the list wasted work.
        if rows > FEW_ROWS {
            let nonzero = a.iter().filter(|&&x| x != 0.0).count();
            if !sum_selected_rows(rows, nonzero, a.len()) {
                return false;
            }
        }
        s.fill_from_columns(a, k);
        if !sum_selected_rows(rows, s.index.len(), a.len()) {
            return false;
        }
        s.matmul(w, n, d, n);
        true
    });
    if !done {
        matmul(w, n, true, Mat::new(a, rows, k).t(), Mat::new(d, rows, n));
    }
}

/// Whether [`add_at_b`] sums, for each row j of `w`, the rows of `d` selected by the non-zeros
/// of column j of `a` (spike inputs), instead of calling gemm. The sums cost about four times as
/// much per non-zero as gemm costs per entry of `a` (the rows come from L2, gemm's packed panels
/// stay in L1), so they win when at most about a fifth of `a` is non-zero: trained models fire
/// `h` at 0.08–0.2. With few rows (one name: its time steps) they win up to half full, as gemm
/// reads and writes all of `w` however few the rows.
fn sum_selected_rows(rows: usize, nonzero: usize, len: usize) -> bool {
    let max_share = if rows <= FEW_ROWS { 0.5 } else { 0.2 };
    nonzero as f64 <= max_share * len as f64
}

/// Up to this many rows, [`add_at_b`] sums selected rows for `a` up to half full.
const FEW_ROWS: usize = 32;

/// `dst[cols×rows] = srcᵀ` for row-major `src` `[rows×cols]`.
pub fn transpose(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    transpose::transpose(&src[..rows * cols], &mut dst[..rows * cols], cols, rows);
}

/// `y += a·x`.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    if a == 1.0 {
        for (y, x) in y.iter_mut().zip(x) {
            *y += *x;
        }
    } else {
        for (y, x) in y.iter_mut().zip(x) {
            *y += a * *x;
        }
    }
}

/// `out[j] += Σ_r m[r, j]` for a row-major matrix with `n` columns (bias gradients).
pub fn add_column_sums(out: &mut [f32], m: &[f32], n: usize) {
    for row in m.chunks_exact(n) {
        axpy(out, 1.0, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat, b: Mat) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for k in 0..a.cols {
                    c[i * b.cols + j] += a.data[i * a.rs + k * a.cs] * b.data[k * b.rs + j * b.cs];
                }
            }
        }
        c
    }

    /// `v` with `c` added to every entry: the expectation for a product accumulated onto `c`.
    fn plus(v: Vec<f32>, c: f32) -> Vec<f32> {
        v.into_iter().map(|x| x + c).collect()
    }

    #[test]
    fn matmul_matches_naive_with_transposes() {
        let a: Vec<f32> = (0..12).map(|x| x as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..20).map(|x| (x % 7) as f32 - 3.0).collect();
        let am = Mat::new(&a, 3, 4);
        let bm = Mat::new(&b, 4, 5);
        let mut c = vec![1.0; 15];
        matmul(&mut c, 5, false, am, bm);
        assert_eq!(c, naive(am, bm));
        // a^T (4x3) · [3 rows of b] with accumulate
        let bt = Mat::new(&b[..15], 3, 5);
        let mut c2 = vec![1.0; 20];
        matmul(&mut c2, 5, true, am.t(), bt);
        let want = plus(naive(am.t(), bt), 1.0);
        assert_eq!(c2, want);
        let mut c3 = vec![0.0; 15];
        rows_matmul(&mut c3, 5, &a, 4, &b, 5);
        assert_eq!(c3, naive(am, bm));
        // add_at_b = aᵀ·d, accumulated
        let a2: Vec<f32> = (0..6 * 3)
            .map(|x| if x % 4 == 0 { 0.0 } else { (x % 5) as f32 })
            .collect();
        let d: Vec<f32> = (0..6 * 5).map(|x| x as f32 * 0.25 - 3.0).collect();
        let mut w = vec![1.0; 15];
        add_at_b(&mut w, &a2, 3, &d, 5);
        let want = plus(naive(Mat::new(&a2, 6, 3).t(), Mat::new(&d, 6, 5)), 1.0);
        assert_eq!(w, want);
        // the sparse path (few rows, mostly zero `a`): spikes, another weight, empty columns
        let a3: Vec<f32> = (0..7 * 6)
            .map(|x| match x % 9 {
                1 | 4 => 1.0,
                7 => -2.0,
                _ => 0.0,
            })
            .collect();
        let d3: Vec<f32> = (0..7 * 70).map(|x| ((x * 3) % 13) as f32 - 6.0).collect();
        let mut w3 = vec![0.5; 6 * 70];
        add_at_b(&mut w3, &a3, 6, &d3, 70);
        let want = plus(naive(Mat::new(&a3, 7, 6).t(), Mat::new(&d3, 7, 70)), 0.5);
        assert_eq!(w3, want);
        // many rows (a batch of names × steps): the sparse path up to a fifth non-zero, gemm above
        assert!(sum_selected_rows(40, 40 * 8 / 9 + 1, 40 * 8));
        assert!(!sum_selected_rows(40, 40 * 8 / 3, 40 * 8));
        assert!(
            sum_selected_rows(7, 7 * 6 / 2, 7 * 6) && !sum_selected_rows(7, 7 * 6 / 2 + 1, 7 * 6)
        );
        for (every, path) in [(9, "sparse"), (3, "gemm")] {
            let a4: Vec<f32> = (0..40 * 8)
                .map(|x| if x % every == 1 { 1.0 } else { 0.0 })
                .collect();
            let d4: Vec<f32> = (0..40 * 67).map(|x| ((x * 7) % 17) as f32 - 8.0).collect();
            let mut w4 = vec![2.0; 8 * 67];
            add_at_b(&mut w4, &a4, 8, &d4, 67);
            let want = plus(naive(Mat::new(&a4, 40, 8).t(), Mat::new(&d4, 40, 67)), 2.0);
            assert_eq!(w4, want, "{path} path");
        }
        let wm: Vec<f32> = (0..5 * 19).map(|x| ((x * 5) % 11) as f32 * 0.5).collect();
        let mut wt = vec![0.0; 5 * 19];
        transpose(&mut wt, &wm, 5, 19);
        for r in 0..5 {
            for c in 0..19 {
                assert_eq!(wt[c * 5 + r], wm[r * 19 + c]);
            }
        }
    }

    /// The register-panel path (64 columns at a time) plus a partial panel, with spikes (1.0),
    /// other weights and zero rows; small integers so every order of summation is exact.
    #[test]
    fn rows_matmul_panels_match_naive() {
        let (m, k, n) = (5, 9, 64 + 13);
        let a: Vec<f32> = (0..m * k)
            .map(|x| match x % 5 {
                0 | 3 => 0.0,
                1 => 1.0,
                2 => 2.0,
                _ => -1.5,
            })
            .chain(std::iter::repeat_n(0.0, k)) // an all-zero row
            .collect();
        let b: Vec<f32> = (0..k * n).map(|x| ((x * 7) % 11) as f32 - 5.0).collect();
        let mut c = vec![0.5; (m + 1) * n];
        rows_matmul(&mut c, n, &a, k, &b, n);
        let want = plus(naive(Mat::new(&a, m + 1, k), Mat::new(&b, k, n)), 0.5);
        assert_eq!(c, want);
    }

    /// The AVX-512 panel gives exactly the portable loop's result (same products, same order),
    /// for spikes (1) and other values, at unaligned offsets.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    #[test]
    fn avx512_panel_equals_the_portable_loop_bit_for_bit() {
        let (rows, b_rs) = (40, 200);
        let b: Vec<f32> = (0..rows * b_rs)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.37e-3)
            .collect();
        let idx: Vec<u32> = (0..rows as u32).filter(|j| j % 3 != 1).collect();
        let val: Vec<f32> = idx
            .iter()
            .map(|&j| {
                if j % 2 == 0 {
                    1.0
                } else {
                    0.1 + j as f32 * 0.37
                }
            })
            .collect();
        for c0 in [0, 5, 17, 136] {
            let start: Vec<f32> = (0..64).map(|l| l as f32 * 0.01 - 0.3).collect();
            let (mut fast, mut plain) = (start.clone(), start);
            panel64_avx512(&mut fast, &idx, &val, &b, b_rs, c0);
            panel_portable::<64>(&mut plain, &idx, &val, &b, b_rs, c0);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&plain), "c0 = {c0}");
        }
    }
}
