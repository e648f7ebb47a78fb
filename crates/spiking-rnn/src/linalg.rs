//! Matrix products. Dense products go to the `gemm` crate (runtime-dispatched SIMD kernels);
//! `rows_matmul` is a hand-written row-combination product for very few rows, where it skips the
//! zero entries of spike vectors and avoids `gemm`'s packing cost.

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
    for (c_row, a_row) in c.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
        let mut sum = RowSum::new(c_row);
        for (j, &w) in a_row.iter().enumerate() {
            if w != 0.0 {
                sum.add(w, &b[j * b_rs..j * b_rs + n]);
            }
        }
        sum.finish();
    }
}

/// `w[k×n] += aᵀ · d` for `a` `[r×k]` and `d` `[r×n]` row-major: row `j` of `w` gets the rows of
/// `d` weighted by column `j` of `a`, skipping zeros (spikes). Each row of `w` is visited once.
pub fn outer_acc(w: &mut [f32], a: &[f32], k: usize, d: &[f32], n: usize) {
    let rows = a.len() / k;
    for (j, w_row) in w.chunks_exact_mut(n).enumerate().take(k) {
        let mut sum = RowSum::new(w_row);
        for r in 0..rows {
            let x = a[r * k + j];
            if x != 0.0 {
                sum.add(x, &d[r * n..(r + 1) * n]);
            }
        }
        sum.finish();
    }
}

/// `w[k×n] += aᵀ·d` for row-major `a` `[r×k]` and `d` `[r×n]` (weight gradients over all time
/// steps). When `a` is mostly zeros (spikes: the forward firing rate is ~0.3) or has few rows,
/// summing the rows of `d` selected by its non-zero entries does less work than `gemm`;
/// otherwise (dense activations) `gemm`.
pub fn add_at_b(w: &mut [f32], a: &[f32], k: usize, d: &[f32], n: usize) {
    let rows = a.len() / k;
    let nonzero = a.iter().filter(|&&x| x != 0.0).count();
    if rows <= 16 || 2 * nonzero <= a.len() {
        outer_acc(w, a, k, d, n);
    } else {
        matmul(w, n, true, Mat::new(a, rows, k).t(), Mat::new(d, rows, n));
    }
}

/// Adds weighted rows into an accumulator row four at a time, so the accumulator is loaded and
/// stored once per four rows instead of once per row.
struct RowSum<'a, 'b> {
    acc: &'a mut [f32],
    pending: [(f32, &'b [f32]); 4],
    count: usize,
}

impl<'a, 'b> RowSum<'a, 'b> {
    fn new(acc: &'a mut [f32]) -> Self {
        Self {
            acc,
            pending: [(0.0, &[]); 4],
            count: 0,
        }
    }

    #[inline]
    fn add(&mut self, w: f32, row: &'b [f32]) {
        self.pending[self.count] = (w, row);
        self.count += 1;
        if self.count == 4 {
            let [(w0, r0), (w1, r1), (w2, r2), (w3, r3)] = self.pending;
            let n = self.acc.len();
            let (r0, r1, r2, r3) = (&r0[..n], &r1[..n], &r2[..n], &r3[..n]);
            for i in 0..n {
                self.acc[i] += w0 * r0[i] + w1 * r1[i] + w2 * r2[i] + w3 * r3[i];
            }
            self.count = 0;
        }
    }

    fn finish(self) {
        for &(w, row) in &self.pending[..self.count] {
            axpy(self.acc, w, row);
        }
    }
}

/// `c[m×k] += d[m×n] · wᵀ` for row-major `w` `[k×n]`: every entry is a dot product of a row of
/// `d` with a row of `w`. Four rows of `d` share each pass over a row of `w`, and nothing is
/// packed, which beats `gemm` for the few rows of one time step.
pub fn matmul_bt(c: &mut [f32], k: usize, d: &[f32], n: usize, w: &[f32]) {
    let m = d.len() / n;
    let mut r = 0;
    while r + 4 <= m {
        let (d0, d1, d2, d3) = (
            &d[r * n..(r + 1) * n],
            &d[(r + 1) * n..(r + 2) * n],
            &d[(r + 2) * n..(r + 3) * n],
            &d[(r + 3) * n..(r + 4) * n],
        );
        for j in 0..k {
            let s = dot4(&w[j * n..(j + 1) * n], [d0, d1, d2, d3]);
            for (q, v) in s.iter().enumerate() {
                c[(r + q) * k + j] += v;
            }
        }
        r += 4;
    }
    for r in r..m {
        for j in 0..k {
            c[r * k + j] += dot(&w[j * n..(j + 1) * n], &d[r * n..(r + 1) * n]);
        }
    }
}

/// Four dot products of `w` with `d[0..4]`, 16 partial sums each.
#[inline]
fn dot4(w: &[f32], d: [&[f32]; 4]) -> [f32; 4] {
    const W: usize = 16;
    let n = w.len() / W * W;
    let (mut a0, mut a1, mut a2, mut a3) = ([0.0f32; W], [0.0f32; W], [0.0f32; W], [0.0f32; W]);
    let chunks = w[..n]
        .chunks_exact(W)
        .zip(d[0][..n].chunks_exact(W))
        .zip(d[1][..n].chunks_exact(W))
        .zip(d[2][..n].chunks_exact(W))
        .zip(d[3][..n].chunks_exact(W));
    for ((((wc, x0), x1), x2), x3) in chunks {
        for l in 0..W {
            a0[l] += wc[l] * x0[l];
            a1[l] += wc[l] * x1[l];
            a2[l] += wc[l] * x2[l];
            a3[l] += wc[l] * x3[l];
        }
    }
    let tail = |q: usize| {
        w[n..]
            .iter()
            .zip(&d[q][n..])
            .map(|(a, b)| a * b)
            .sum::<f32>()
    };
    [
        tree_sum(a0) + tail(0),
        tree_sum(a1) + tail(1),
        tree_sum(a2) + tail(2),
        tree_sum(a3) + tail(3),
    ]
}

/// Sum of the partial sums by halving: log2(N) dependent vector additions instead of a chain of
/// N scalar ones (which took longer than the products themselves for 1,024-long dots).
#[inline(always)]
fn tree_sum<const N: usize>(mut acc: [f32; N]) -> f32 {
    let mut width = N;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// `Σ a[i]·b[i]` with 64 independent partial sums, so the additions do not wait on each other.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const W: usize = 64;
    let n = a.len().min(b.len()) / W * W;
    let mut acc = [0.0f32; W];
    for (x, y) in a[..n].chunks_exact(W).zip(b[..n].chunks_exact(W)) {
        for i in 0..W {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = tree_sum(acc);
    for (x, y) in a[n..].iter().zip(&b[n..]) {
        s += x * y;
    }
    s
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
        let want: Vec<f32> = naive(am.t(), bt).iter().map(|x| x + 1.0).collect();
        assert_eq!(c2, want);
        let mut c3 = vec![0.0; 15];
        rows_matmul(&mut c3, 5, &a, 4, &b, 5);
        assert_eq!(c3, naive(am, bm));
        // outer_acc = aᵀ·d, with enough non-zeros per column to use the four-row path
        let a2: Vec<f32> = (0..6 * 3)
            .map(|x| if x % 4 == 0 { 0.0 } else { (x % 5) as f32 })
            .collect();
        let d: Vec<f32> = (0..6 * 5).map(|x| x as f32 * 0.25 - 3.0).collect();
        let mut w = vec![1.0; 15];
        outer_acc(&mut w, &a2, 3, &d, 5);
        let want: Vec<f32> = naive(Mat::new(&a2, 6, 3).t(), Mat::new(&d, 6, 5))
            .iter()
            .map(|x| x + 1.0)
            .collect();
        assert_eq!(w, want);
        // matmul_bt = d·wᵀ, with a row count that is not a multiple of four
        let dm: Vec<f32> = (0..7 * 19).map(|x| ((x * 7) % 13) as f32 - 6.0).collect();
        let wm: Vec<f32> = (0..5 * 19).map(|x| ((x * 5) % 11) as f32 * 0.5).collect();
        let mut cm = vec![1.0; 7 * 5];
        matmul_bt(&mut cm, 5, &dm, 19, &wm);
        let want: Vec<f32> = naive(Mat::new(&dm, 7, 19), Mat::new(&wm, 5, 19).t())
            .iter()
            .map(|x| x + 1.0)
            .collect();
        assert_eq!(cm, want);
        let x: Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
        assert_eq!(dot(&x, &x), x.iter().map(|v| v * v).sum::<f32>());
    }
}
