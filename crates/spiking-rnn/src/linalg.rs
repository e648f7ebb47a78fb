//! Matrix products. Dense products go to the `gemm` crate (runtime-dispatched SIMD kernels, AVX-512
//! where the CPU has it); `rows_matmul`, `rows_matmul_panels` and the sparse paths of `add_at_b`
//! and `add_a_b` are hand-written products for mostly-zero inputs (spikes, and the gradients
//! they gate), which skip the zero entries: each output row is a sum of the rows of the other
//! operand that its non-zeros select.

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
        s.fill_from_rows(a, k, usize::MAX);
        s.matmul(c, n, b, b_rs);
    });
}

/// `c[m×n] += a[m×k] · b[k×n]` for row-major `a` and `b`: the sums of the rows of `b` selected
/// by the non-zeros of `a` when at most [`SPARSE_A_PERCENT`] of it is non-zero, else gemm. For
/// the gradients of spiking gates, zero wherever the spike or state that multiplies them is.
/// Returns whether it summed rows.
pub fn add_a_b(c: &mut [f32], n: usize, a: &[f32], k: usize, b: &[f32]) -> bool {
    assert_eq!(c.len() / n, a.len() / k, "product rows differ");
    let sparse = SCRATCH.with_borrow_mut(|s| {
        let fits = s.fill_from_rows(a, k, max_summed_nonzero(a.len()));
        if fits {
            s.matmul(c, n, b, n);
        }
        fits
    });
    if !sparse {
        matmul(c, n, true, Mat::new(a, a.len() / k, k), Mat::new(b, k, n));
    }
    sparse
}

/// Up to how many of `len` values of `a` may be non-zero for [`add_a_b`] to sum rows.
pub(crate) fn max_summed_nonzero(len: usize) -> usize {
    len * SPARSE_A_PERCENT / 100
}

/// Up to how much of `a` may be non-zero (percent) for [`add_a_b`] to sum rows. Measured with
/// the tutorial's `W_hh` rows (`b` 1,024 × 256, in L2) on the AVX-512 Xeon, 16 or 32 rows of
/// `a`: the sums take 24 / 52 µs at 5 %, 52 / 105 at 10 %, 72 / 202 at 20 %; gemm 62 / 124
/// whatever the share. The rows come from L2 at ~32 GB/s, so the crossover is low.
const SPARSE_A_PERCENT: usize = 12;

/// [`rows_matmul`] with `b` packed in panels (see [`Panels`]).
pub fn rows_matmul_panels(c: &mut [f32], n: usize, a: &[f32], k: usize, b: &Panels) {
    SCRATCH.with_borrow_mut(|s| {
        s.fill_from_rows(a, k, usize::MAX);
        s.matmul_panels(c, n, b);
    });
}

thread_local! {
    /// Reused so that the per-step products do not allocate.
    static SCRATCH: std::cell::RefCell<SparseRows> = Default::default();
    static PANELS: std::cell::RefCell<Panels> = Default::default();
    /// The selected rows of both operands of [`add_at_b`] when it calls gemm.
    static GATHERED: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = Default::default();
}

/// Columns per panel of [`Panels`].
const PACKED: usize = 32;

/// A `[rows×cols]` matrix stored panel by panel: columns 0..32 of every row, then 32..64, and so
/// on (the last panel may be narrower). Why: [`SparseRows::matmul_panels`] visits one panel for
/// every output row, and a 32-column panel of 256 rows (32 KB) stays in the L1 cache only when it
/// is contiguous. In a row-major matrix with 4 KB rows (G·H = 1024) the lines of a panel all
/// fall into the same two L1 sets, so they come from L2 at every use.
#[derive(Clone, Debug, Default)]
pub struct Panels {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Panels {
    /// Packs the rows of a row-major matrix with `cols` columns.
    pub fn pack(&mut self, m: &[f32], cols: usize) {
        self.pack_rows(m.len() / cols.max(1), cols, m.chunks_exact(cols.max(1)));
    }

    /// Packs `rows` rows of length `cols` given one by one.
    pub fn pack_rows<'a>(&mut self, rows: usize, cols: usize, it: impl Iterator<Item = &'a [f32]>) {
        self.rows = rows;
        self.cols = cols;
        self.data.resize(rows * cols, 0.0);
        let full = cols / PACKED * PACKED;
        for (i, row) in it.take(rows).enumerate() {
            // Fixed-size copies compile to a few vector moves (not a call each).
            for (p, chunk) in row[..full].as_chunks::<PACKED>().0.iter().enumerate() {
                let at = p * PACKED * rows + i * PACKED;
                self.data[at..at + PACKED].copy_from_slice(chunk);
            }
            let w = cols - full;
            let at = full * rows + i * w;
            self.data[at..at + w].copy_from_slice(&row[full..cols]);
        }
    }

    /// Nothing packed yet.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Panel starting at column `c0`: `rows × width`, row-major.
    fn panel(&self, c0: usize) -> (&[f32], usize) {
        let w = PACKED.min(self.cols - c0);
        (&self.data[c0 * self.rows..(c0 + w) * self.rows], w)
    }
}

/// The non-zero entries of a matrix, row by row (compressed sparse rows).
#[derive(Default)]
struct SparseRows {
    /// Row `r` is `index/value[start[r]..start[r + 1]]`.
    start: Vec<usize>,
    index: Vec<u32>,
    value: Vec<f32>,
    /// Every stored value is 1 (spikes).
    ones: bool,
    /// Every stored index is below it.
    cols: usize,
    /// Per column, where its next entry goes ([`Self::fill_from_columns`]).
    next: Vec<u32>,
    /// Non-zero bits of 16 values each ([`Self::fill_from_rows`]).
    masks: Vec<u32>,
}

/// Output columns per pass of [`SparseRows::matmul`]: 64 accumulators fit in registers, and a
/// 64-column panel of `b` stays in cache while every output row visits it.
const PANEL: usize = 64;

impl SparseRows {
    /// From the columns of a matrix with `k` columns, given row by row (the rows of its
    /// transpose). A counting sort: count each column's non-zeros, then place them row by row.
    /// Reading the rows in memory order and visiting only the non-zeros (16 columns at a time,
    /// through a bit mask) is several times faster than one strided pass per column.
    /// Stops after counting, returning false, when there are more than `max_nonzero`.
    fn fill_from_columns<'a>(
        &mut self,
        rows: impl ExactSizeIterator<Item = &'a [f32]> + Clone,
        k: usize,
        max_nonzero: usize,
    ) -> bool {
        self.clear();
        self.cols = rows.len();
        let next = &mut self.next;
        next.clear();
        next.resize(k, 0);
        for row in rows.clone() {
            for (n, &x) in next.iter_mut().zip(row) {
                *n += (x != 0.0) as u32;
            }
        }
        // Column j's entries start where the columns before it end.
        let mut total = 0;
        for n in next.iter_mut() {
            let count = *n;
            *n = total;
            total += count;
            self.start.push(total as usize);
        }
        if total as usize > max_nonzero {
            return false;
        }
        self.index.resize(total as usize, 0);
        self.value.resize(total as usize, 0.0);
        let mut ones = true;
        for (r, row) in rows.enumerate() {
            for (c, chunk) in row.chunks(16).enumerate() {
                let mut mask = nonzero_mask(chunk);
                while mask != 0 {
                    let l = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let at = &mut next[c * 16 + l];
                    self.index[*at as usize] = r as u32;
                    self.value[*at as usize] = chunk[l];
                    ones &= chunk[l] == 1.0;
                    *at += 1;
                }
            }
        }
        self.ones = ones;
        true
    }

    /// From the rows of a row-major `[m×k]` matrix: one bit mask per 16 values first, whose
    /// counts decide (returning false when there are more than `max_nonzero` non-zeros); then
    /// only the non-zeros are stored, 16 values at a time (no branch per value: spikes would
    /// mispredict).
    fn fill_from_rows(&mut self, a: &[f32], k: usize, max_nonzero: usize) -> bool {
        let masks = &mut self.masks;
        masks.clear();
        let mut total = 0;
        for row in a.chunks_exact(k) {
            for chunk in row.chunks(16) {
                let mask = nonzero_mask(chunk);
                total += mask.count_ones() as usize;
                masks.push(mask);
            }
        }
        if total > max_nonzero {
            return false;
        }
        self.clear();
        self.cols = k;
        // 16 spare entries: each chunk's non-zeros are written as a whole vector.
        self.index.resize(total + 16, 0);
        self.value.resize(total + 16, 0.0);
        let mut end = 0;
        let mut ones = true;
        let mut masks = self.masks.iter();
        for row in a.chunks_exact(k) {
            for ((c, chunk), &mask) in row.chunks(16).enumerate().zip(&mut masks) {
                let (index, value) = (&mut self.index[end..], &mut self.value[end..]);
                ones &= compress_chunk(chunk, mask, c as u32 * 16, index, value);
                end += mask.count_ones() as usize;
            }
            self.start.push(end);
        }
        self.index.truncate(total);
        self.value.truncate(total);
        self.ones = ones;
        true
    }

    fn clear(&mut self) {
        self.start.clear();
        self.start.push(0);
        self.index.clear();
        self.value.clear();
        self.ones = true;
    }

    /// `c[m×n] += self · b` for row-major `b` (row stride `b_rs`), one output panel at a time.
    fn matmul(&self, c: &mut [f32], n: usize, b: &[f32], b_rs: usize) {
        let mut c0 = 0;
        while c0 + PANEL <= n {
            self.panel_all_rows::<PANEL>(c, n, b, b_rs, c0, c0);
            c0 += PANEL;
        }
        if c0 < n {
            self.narrow_panel(c, n, b, b_rs, c0, c0);
        }
    }

    /// `c[m×n] += self · b`, one packed panel at a time.
    fn matmul_panels(&self, c: &mut [f32], n: usize, b: &Panels) {
        assert_eq!(b.cols, n, "packed matrix has another width");
        for c0 in (0..n).step_by(PACKED) {
            let (data, w) = b.panel(c0);
            if w == PACKED {
                self.panel_all_rows::<PACKED>(c, n, data, PACKED, c0, 0);
            } else {
                self.narrow_panel(c, n, data, w, c0, 0);
            }
        }
    }

    /// Columns `c0..n` of every output row (fewer than a panel), from `b` read at column `b_c0`,
    /// with `axpy`.
    fn narrow_panel(
        &self,
        c: &mut [f32],
        n: usize,
        b: &[f32],
        b_rs: usize,
        c0: usize,
        b_c0: usize,
    ) {
        let w = n - c0;
        for (r, c_row) in c.chunks_exact_mut(n).enumerate() {
            let (idx, val) = self.row(r);
            for (&j, &v) in idx.iter().zip(val) {
                let j = j as usize * b_rs + b_c0;
                axpy(&mut c_row[c0..], v, &b[j..j + w]);
            }
        }
    }

    /// Columns `c0..c0 + P` of every output row, from `b` read at column `b_c0`.
    #[inline(always)]
    fn panel_all_rows<const P: usize>(
        &self,
        c: &mut [f32],
        n: usize,
        b: &[f32],
        b_rs: usize,
        c0: usize,
        b_c0: usize,
    ) {
        if self.ones {
            self.panel_all_rows_as::<P, true>(c, n, b, b_rs, c0, b_c0)
        } else {
            self.panel_all_rows_as::<P, false>(c, n, b, b_rs, c0, b_c0)
        }
    }

    /// [`Self::panel_all_rows`] with `ONES` (every value is 1) known at compile time.
    #[inline(always)]
    fn panel_all_rows_as<const P: usize, const ONES: bool>(
        &self,
        c: &mut [f32],
        n: usize,
        b: &[f32],
        b_rs: usize,
        c0: usize,
        b_c0: usize,
    ) {
        #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
        {
            // The kernel reads rows of `b` unchecked: every index is below `cols`.
            let last = self.cols.max(1) - 1;
            assert!(
                last * b_rs + b_c0 + P <= b.len(),
                "matrix rows out of bounds"
            );
            // Four rows at a time when all four have entries; otherwise, and for the last rows,
            // one by one, skipping rows without entries (their output is unchanged).
            let rows = c.len() / n;
            let mut r = 0;
            while r < rows {
                let group = rows - r >= 4 && (r..r + 4).all(|i| !self.row(i).0.is_empty());
                if group {
                    let lists = std::array::from_fn(|i| self.row(r + i));
                    let mut acc = c[r * n..(r + 4) * n].chunks_exact_mut(n);
                    let acc = std::array::from_fn(|_| match acc.next() {
                        Some(row) => &mut row[c0..c0 + P],
                        None => unreachable!("four rows were sliced"),
                    });
                    // SAFETY: checked above.
                    unsafe { panel_avx512::<P, 4, ONES>(acc, lists, b, b_rs, b_c0) };
                    r += 4;
                    continue;
                }
                let list = self.row(r);
                if !list.0.is_empty() {
                    let acc = &mut c[r * n + c0..r * n + c0 + P];
                    // SAFETY: checked above.
                    unsafe { panel_avx512::<P, 1, ONES>([acc], [list], b, b_rs, b_c0) };
                }
                r += 1;
            }
        }
        #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
        for (r, c_row) in c.chunks_exact_mut(n).enumerate() {
            let (idx, val) = self.row(r);
            if !idx.is_empty() {
                panel_portable::<P>(&mut c_row[c0..c0 + P], idx, val, b, b_rs, b_c0);
            }
        }
    }

    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let range = self.start[r]..self.start[r + 1];
        (&self.index[range.clone()], &self.value[range])
    }
}

/// Bit `l` set where `chunk[l]` (up to 16 values) is non-zero (or NaN).
#[inline(always)]
fn nonzero_mask(chunk: &[f32]) -> u32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    if let Ok(x) = <&[f32; 16]>::try_from(chunk) {
        use std::arch::x86_64::{
            _mm512_cmp_ps_mask, _mm512_loadu_ps, _mm512_setzero_ps, _CMP_NEQ_UQ,
        };
        // SAFETY: 16 floats are read from a reference to 16 floats; the build has AVX-512.
        return unsafe {
            _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(_mm512_loadu_ps(x.as_ptr()), _mm512_setzero_ps())
        } as u32;
    }
    let mut mask = 0u32;
    for (l, &x) in chunk.iter().enumerate() {
        mask |= ((x != 0.0) as u32) << l;
    }
    mask
}

/// Writes the values of `chunk` (up to 16) whose bit is set in `mask`, and their column
/// (`col0` + position), to the front of `value` and `index`, which have room for 16. Returns
/// whether all of them are 1.
#[inline(always)]
fn compress_chunk(
    chunk: &[f32],
    mask: u32,
    col0: u32,
    index: &mut [u32],
    value: &mut [f32],
) -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    if let (Ok(x), Some(index), Some(value)) = (
        <&[f32; 16]>::try_from(chunk),
        index.first_chunk_mut::<16>(),
        value.first_chunk_mut::<16>(),
    ) {
        use std::arch::x86_64::*;
        // SAFETY: each load and store covers 16 values of a reference to 16; the build has
        // AVX-512. Compressing in registers and storing whole vectors avoids the slow
        // compress-to-memory form.
        return unsafe {
            let k = mask as u16;
            let x = _mm512_loadu_ps(x.as_ptr());
            let cols = _mm512_add_epi32(
                _mm512_set1_epi32(col0 as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            );
            _mm512_storeu_ps(value.as_mut_ptr(), _mm512_maskz_compress_ps(k, x));
            _mm512_storeu_si512(
                index.as_mut_ptr().cast(),
                _mm512_maskz_compress_epi32(k, cols),
            );
            _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(k, x, _mm512_set1_ps(1.0)) == 0
        };
    }
    let mut ones = true;
    let mut mask = mask;
    let mut at = 0;
    while mask != 0 {
        let l = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        index[at] = col0 + l as u32;
        value[at] = chunk[l];
        ones &= chunk[l] == 1.0;
        at += 1;
    }
    ones
}

/// `acc[..P] += Σ val[i] · b[idx[i]·b_rs + c0 ..][..P]`, the sum held in registers (LLVM
/// vectorises the inner loop). A spike (`val` 1) adds its row exactly: `1·x` is `x`.
#[inline(always)]
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "avx512f"),
    allow(dead_code)
)]
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

/// [`panel_portable`] for `R` output rows at once (`acc[r][..P] += Σ` over `lists[r]`), in
/// 512-bit registers, with the same products and sums in the same order for each row, so the
/// same results.
/// Why by hand:
/// - LLVM vectorises the portable loop with 256-bit registers on these CPUs (its tuning for
///   AVX-512 Xeons): each row is then twice as many loads.
/// - A row's sum is a chain of additions, each waiting for the last; interleaving the
///   independent sums of `R` rows keeps the adder busy.
/// - `ONES` (every `val` is 1, i.e. spikes): the products are the rows themselves, and skipping
///   the multiplications halves the work per row.
/// - The rows of `b` are read without bounds checks, which were half the instructions.
///
/// # Safety
/// Every row read, `b[j·b_rs + b_c0..][..P]` for each index `j` of `lists`, lies inside `b`.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
unsafe fn panel_avx512<const P: usize, const R: usize, const ONES: bool>(
    acc: [&mut [f32]; R],
    lists: [(&[u32], &[f32]); R],
    b: &[f32],
    b_rs: usize,
    b_c0: usize,
) {
    use std::arch::x86_64::{__m512, _mm512_add_ps, _mm512_loadu_ps, _mm512_mul_ps};
    use std::arch::x86_64::{_mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps};
    const { assert!(P == 32 || P == 64) };
    // SAFETY: the rows of `b` are inside it (the caller's promise); every other load and store
    // covers 16 floats inside a slice of exactly P (bounds checked when slicing); the unaligned
    // forms accept any address; `i < common` is inside every list, and `val` is as long as `idx`.
    unsafe {
        let load = |p: &[f32], k: usize| _mm512_loadu_ps(p[16 * k..][..16].as_ptr());
        let add_row = |s: &mut [__m512], row: *const f32, w: f32| {
            let wv = _mm512_set1_ps(w);
            for (k, s) in s.iter_mut().enumerate() {
                let x = _mm512_loadu_ps(row.add(16 * k));
                let x = if ONES { x } else { _mm512_mul_ps(wv, x) };
                *s = _mm512_add_ps(*s, x);
            }
        };
        let mut sum = [[_mm512_setzero_ps(); 4]; R];
        for (r, s) in sum.iter_mut().enumerate() {
            let a = &acc[r][..P];
            for (k, s) in s[..P / 16].iter_mut().enumerate() {
                *s = load(a, k);
            }
        }
        let common = lists.iter().map(|l| l.0.len()).min().unwrap_or(0);
        for i in 0..common {
            for (s, (idx, val)) in sum.iter_mut().zip(&lists) {
                let row = b.as_ptr().add(*idx.get_unchecked(i) as usize * b_rs + b_c0);
                add_row(&mut s[..P / 16], row, *val.get_unchecked(i));
            }
        }
        for ((s, (idx, val)), a) in sum.iter_mut().zip(&lists).zip(acc) {
            for (&j, &w) in idx[common..].iter().zip(&val[common..]) {
                let row = b.as_ptr().add(j as usize * b_rs + b_c0);
                add_row(&mut s[..P / 16], row, w);
            }
            let a = &mut a[..P];
            for (k, s) in s[..P / 16].iter().enumerate() {
                _mm512_storeu_ps(a[16 * k..][..16].as_mut_ptr(), *s);
            }
        }
    }
}

/// `w[k×n] += aᵀ·d` for row-major `a` `[r×k]` and `d` `[r×n]` over the rows listed in `rows`
/// (all rows if `None`): weight gradients over all time steps in one product, skipping the
/// steps past each sequence's end.
pub fn add_at_b(w: &mut [f32], a: &[f32], k: usize, d: &[f32], n: usize, rows: Option<&[u32]>) {
    let count = rows.map_or(a.len() / k, |r| r.len());
    let a_rows = selected_rows(a, k, rows);
    let d_rows = selected_rows(d, n, rows);
    let entries = count * k;
    let done = SCRATCH.with_borrow_mut(|s| {
        if !s.fill_from_columns(a_rows.clone(), k, max_nonzero(count, entries)) {
            return false;
        }
        match rows {
            // A few rows of `d` stay in L1 as they are (one name: its steps); packing them
            // would only cost time.
            None if count <= FEW_ROWS => s.matmul(w, n, d, n),
            _ => PANELS.with_borrow_mut(|p| {
                p.pack_rows(count, n, d_rows.clone());
                s.matmul_panels(w, n, p);
            }),
        }
        true
    });
    if !done {
        GATHERED.with_borrow_mut(|(ga, gd)| {
            let (a, d) = match rows {
                None => (a, d),
                Some(_) => {
                    ga.clear();
                    gd.clear();
                    a_rows.for_each(|r| ga.extend_from_slice(r));
                    d_rows.for_each(|r| gd.extend_from_slice(r));
                    (&ga[..], &gd[..])
                }
            };
            matmul(w, n, true, Mat::new(a, count, k).t(), Mat::new(d, count, n));
        });
    }
}

/// Rows of a row-major matrix with `width` columns: those listed in `rows`, or all.
fn selected_rows<'a>(
    m: &'a [f32],
    width: usize,
    rows: Option<&'a [u32]>,
) -> impl ExactSizeIterator<Item = &'a [f32]> + Clone + 'a {
    row_indices(m.len() / width, rows).map(move |r| &m[r * width..(r + 1) * width])
}

/// The row indices listed in `rows`, or `0..all`.
pub fn row_indices(
    all: usize,
    rows: Option<&[u32]>,
) -> impl ExactSizeIterator<Item = usize> + Clone + '_ {
    let count = rows.map_or(all, |r| r.len());
    (0..count).map(move |i| rows.map_or(i, |r| r[i] as usize))
}

/// Up to how many non-zeros of `a` (`rows` × `len / rows`) [`add_at_b`] sums, for each row j of
/// `w`, the rows of `d` selected by the non-zeros of column j of `a` (spike inputs), instead of
/// calling gemm. Measured with `w` 256 × 1024 (the
/// tutorial's `W_hh`) on an AVX-512 Xeon, spikes: with 230 rows (a batch of 32 names) the sums
/// win up to about half non-zero, with 600 rows up to about a third (the panels of `d` no longer
/// fit in L1), hence 35 %; trained models fire `h` at 0.08–0.2. With few rows (one name: its
/// time steps) they win up to half full, as gemm reads and writes all of `w` however few the
/// rows.
fn max_nonzero(rows: usize, len: usize) -> usize {
    let percent = if rows <= FEW_ROWS { 50 } else { 35 };
    len * percent / 100
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

/// `out[j] += Σ_r m[r, j]` for a row-major matrix with `n` columns over the rows listed in
/// `rows` (all rows if `None`), in order (bias gradients).
pub fn add_column_sums(out: &mut [f32], m: &[f32], n: usize, rows: Option<&[u32]>) {
    for row in selected_rows(m, n, rows) {
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
        add_at_b(&mut w, &a2, 3, &d, 5, None);
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
        add_at_b(&mut w3, &a3, 6, &d3, 70, None);
        let want = plus(naive(Mat::new(&a3, 7, 6).t(), Mat::new(&d3, 7, 70)), 0.5);
        assert_eq!(w3, want);
        // many rows (a batch of names × steps): the sparse path up to 35 % non-zero, gemm above
        assert_eq!(max_nonzero(40, 40 * 8), 112);
        assert_eq!(max_nonzero(7, 7 * 6), 21); // few rows: up to half
        for (every, path) in [(9, "sparse"), (2, "gemm")] {
            let a4: Vec<f32> = (0..40 * 8)
                .map(|x| if x % every == 1 { 1.0 } else { 0.0 })
                .collect();
            let d4: Vec<f32> = (0..40 * 67).map(|x| ((x * 7) % 17) as f32 - 8.0).collect();
            let mut w4 = vec![2.0; 8 * 67];
            add_at_b(&mut w4, &a4, 8, &d4, 67, None);
            let want = plus(naive(Mat::new(&a4, 40, 8).t(), Mat::new(&d4, 40, 67)), 2.0);
            assert_eq!(w4, want, "{path} path");
        }
    }

    #[test]
    fn transpose_moves_every_value() {
        for (rows, cols) in [(5, 19), (16, 16), (17, 35)] {
            let m: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
            let mut t = vec![-1.0; rows * cols];
            transpose(&mut t, &m, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        m[r * cols + c],
                        "{rows}×{cols} at ({r}, {c})"
                    );
                }
            }
        }
    }

    /// The lists of non-zeros (16 values per compare, partial chunks, empty rows, −0 as zero,
    /// NaN as non-zero) against a plain loop, and the `ones` flag for spikes and for values.
    #[test]
    fn fill_from_rows_lists_every_non_zero() {
        // 64: whole chunks only; 70: a partial one at the end of each row.
        for k in [64, 70] {
            let values: Vec<f32> = (0..5 * k)
                .map(|x| match (x / k, x % 13) {
                    (2, _) => 0.0,
                    (_, 0) => -0.0,
                    (_, 3) => 1.0,
                    (_, 7) => x as f32 * 0.5,
                    (4, 11) => f32::NAN,
                    _ => 0.0,
                })
                .collect();
            let spikes: Vec<f32> = (0..5 * k).map(|x| (x % 9 == 2) as u8 as f32).collect();
            for (a, ones) in [(values, false), (spikes, true)] {
                let mut s = SparseRows::default();
                let nonzero = a.iter().filter(|&&x| x != 0.0).count();
                assert!(!s.fill_from_rows(&a, k, nonzero - 1), "over the limit");
                assert!(s.fill_from_rows(&a, k, nonzero));
                assert_eq!((s.ones, s.cols, s.start.len()), (ones, k, 6));
                for (r, row) in a.chunks(k).enumerate() {
                    let (idx, val) = s.row(r);
                    let want: Vec<(u32, f32)> = (0..k as u32)
                        .filter(|&j| row[j as usize] != 0.0)
                        .map(|j| (j, row[j as usize]))
                        .collect();
                    let got: Vec<(u32, f32)> =
                        idx.iter().copied().zip(val.iter().copied()).collect();
                    assert_eq!(format!("{got:?}"), format!("{want:?}"), "k {k}, row {r}");
                }
            }
        }
    }

    /// Both paths of `add_a_b`: rows of `a` with few non-zeros (some rows empty, some values 1, or
    /// spikes only) summed, and a dense `a` through gemm; each against the naive product.
    #[test]
    fn add_a_b_sparse_and_dense() {
        // n spans a full 64-column panel (the AVX-512 kernel) and a narrow one.
        let (m, k, n) = (9, 70, 64 + 37);
        let b: Vec<f32> = (0..k * n)
            .map(|x| ((x * 13) % 23) as f32 * 0.25 - 2.0)
            .collect();
        let sparse: Vec<f32> = (0..m * k)
            .map(|x| match (x / k, x % 17) {
                (3, _) => 0.0,
                (_, 1) => 1.0,
                (_, 4) => (x % 7) as f32 - 3.5,
                _ => 0.0,
            })
            .collect();
        let spikes: Vec<f32> = (0..m * k).map(|x| (x % 11 == 1) as u8 as f32).collect();
        let dense: Vec<f32> = (0..m * k).map(|x| (x % 5) as f32 - 1.5).collect();
        for (a, summed) in [(sparse, true), (spikes, true), (dense, false)] {
            let mut c = vec![0.5; m * n];
            assert_eq!(add_a_b(&mut c, n, &a, k, &b), summed);
            let want = plus(naive(Mat::new(&a, m, k), Mat::new(&b, k, n)), 0.5);
            for (got, want) in c.iter().zip(&want) {
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{got} vs {want}"
                );
            }
        }
    }

    /// Only the listed rows count (steps past a sequence's end): the same as the product of
    /// the gathered rows, on the sparse path (spikes, and other values) and on the gemm path.
    #[test]
    fn add_at_b_and_column_sums_over_listed_rows() {
        let (r, k, n) = (60, 8, 67);
        let listed: Vec<u32> = (0..r as u32).filter(|i| i % 3 != 0).collect();
        let gather = |m: &[f32], w: usize| -> Vec<f32> {
            listed
                .iter()
                .flat_map(|&i| m[i as usize * w..][..w].to_vec())
                .collect()
        };
        let d: Vec<f32> = (0..r * n).map(|x| ((x * 7) % 17) as f32 - 8.0).collect();
        for (every, value, path) in [(9, 1.0, "sparse"), (7, -2.5, "sparse"), (3, 1.0, "gemm")] {
            let a: Vec<f32> = (0..r * k)
                .map(|x| if x % every == 1 { value } else { 0.0 })
                .collect();
            let mut w = vec![2.0; k * n];
            add_at_b(&mut w, &a, k, &d, n, Some(&listed));
            let (ga, gd) = (gather(&a, k), gather(&d, n));
            let rows = listed.len();
            let want = plus(
                naive(Mat::new(&ga, rows, k).t(), Mat::new(&gd, rows, n)),
                2.0,
            );
            assert_eq!(w, want, "{path} path, values {value}");
        }
        let mut sums = vec![0.5; n];
        add_column_sums(&mut sums, &d, n, Some(&listed));
        let gd = gather(&d, n);
        let want: Vec<f32> = (0..n)
            .map(|j| 0.5 + (0..listed.len()).map(|i| gd[i * n + j]).sum::<f32>())
            .collect();
        assert_eq!(sums, want);
    }

    /// The register-panel paths (64 columns at a time, or 32 from packed panels) plus a partial
    /// panel, with spikes (1.0), other weights and zero rows; small integers so every order of
    /// summation is exact.
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
        // (rows differ: 7·77 is not a multiple of 13)
        let b: Vec<f32> = (0..k * n).map(|x| ((x * 7) % 13) as f32 - 6.0).collect();
        let mut c = vec![0.5; (m + 1) * n];
        rows_matmul(&mut c, n, &a, k, &b, n);
        let want = plus(naive(Mat::new(&a, m + 1, k), Mat::new(&b, k, n)), 0.5);
        assert_eq!(c, want);
        // b packed in 32-column panels (two full, one of 13)
        let mut packed = Panels::default();
        packed.pack(&b, n);
        let mut c = vec![0.5; (m + 1) * n];
        rows_matmul_panels(&mut c, n, &a, k, &packed);
        assert_eq!(c, want);
        // spikes only: the path without multiplications
        let spikes: Vec<f32> = a.iter().map(|&x| (x != 0.0) as u8 as f32).collect();
        let want = plus(naive(Mat::new(&spikes, m + 1, k), Mat::new(&b, k, n)), 0.5);
        for packed in [None, Some(&packed)] {
            let mut c = vec![0.5; (m + 1) * n];
            match packed {
                None => rows_matmul(&mut c, n, &spikes, k, &b, n),
                Some(p) => rows_matmul_panels(&mut c, n, &spikes, k, p),
            }
            assert_eq!(c, want);
        }
    }

    /// The AVX-512 panels give exactly the portable loop's result (same products, same order),
    /// for spikes (1, with and without the multiplications) and other values, one row or four
    /// rows of different lengths at a time, at unaligned offsets.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    #[test]
    fn avx512_panels_equal_the_portable_loop_bit_for_bit() {
        fn check<const P: usize, const R: usize, const ONES: bool>() {
            let (rows, b_rs, n) = (40, 200, 150);
            let b: Vec<f32> = (0..rows * b_rs)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.37e-3)
                .collect();
            // Row r of the output sums every (r + 2)-th row of b: lengths 20, 14, 10, 8.
            let idx: Vec<Vec<u32>> = (0..R as u32)
                .map(|r| (0..rows as u32).filter(|j| j % (r + 2) == 0).collect())
                .collect();
            let val: Vec<Vec<f32>> = idx
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|&j| match ONES || j % 4 == 0 {
                            true => 1.0,
                            false => 0.1 + j as f32 * 0.37,
                        })
                        .collect()
                })
                .collect();
            for (c0, b_c0) in [(0, 0), (7, 5), (3, 17), (80, 136)] {
                let start: Vec<f32> = (0..R * n).map(|l| (l % 97) as f32 * 0.01 - 0.3).collect();
                let (mut fast, mut plain) = (start.clone(), start);
                let lists = std::array::from_fn(|r| (&idx[r][..], &val[r][..]));
                let mut rows = fast.chunks_exact_mut(n).map(|row| &mut row[c0..c0 + P]);
                let acc = std::array::from_fn(|_| rows.next().expect("R rows"));
                // SAFETY: indices below `rows`, `b_c0 + P <= b_rs`.
                unsafe { panel_avx512::<P, R, ONES>(acc, lists, &b, b_rs, b_c0) };
                for r in 0..R {
                    let acc = &mut plain[r * n + c0..];
                    panel_portable::<P>(acc, &idx[r], &val[r], &b, b_rs, b_c0);
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&fast),
                    bits(&plain),
                    "P {P} R {R} ones {ONES} at {c0}, {b_c0}"
                );
            }
        }
        check::<64, 1, false>();
        check::<64, 4, false>();
        check::<32, 1, false>();
        check::<32, 4, false>();
        check::<64, 1, true>();
        check::<64, 4, true>();
        check::<32, 4, true>();
    }
}
