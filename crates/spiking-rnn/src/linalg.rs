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
        Self { data, rows, cols, rs: cols, cs: 1 }
    }
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
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
        for (j, &w) in a_row.iter().enumerate() {
            if w != 0.0 {
                axpy(c_row, w, &b[j * b_rs..j * b_rs + n]);
            }
        }
    }
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
    }
}
