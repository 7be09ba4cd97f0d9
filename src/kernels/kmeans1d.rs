//! Exact weighted optimal 1-D k-means (the dynamic program of Grønlund et al. 2017).
//!
//! The main path is the Lagrangian search ([`lagrangian_starts`]): the least SSE plus a penalty
//! per cluster, over all partitions, in one O(n log n) pass whatever k is, with the penalty
//! searched until the minimiser has k clusters. The layered DP (layer `l` holds, for every
//! prefix, the least SSE of `l + 1` clusters; each row's minimum by divide and conquer over rows
//! with a bound from the previous layer, the cells four at a time without branches, which the
//! compiler turns into vector divisions) is the fallback and solves the hull-edge case on a few
//! candidate cluster ends. Measured against SMAWK and alternatives in docs/DECISIONS.md
//! ("Grouped k-means: the optimal LUT without replaying kmeans1d").
//!
//! The result is an optimal partition in exact arithmetic up to float rounding: coremltools'
//! vendored `kmeans1d` (SMAWK) finds the same one except where two partitions' SSEs tie within
//! rounding, and the centroids are the same running weighted means, so outside such ties the
//! LUT is the same bit for bit. Every operation is an IEEE f64 add, multiply or divide in a
//! fixed order, so the result is the same on every CPU, vector width and thread count.
//!
//! Time O(n log n) per penalty (a few penalties); the layered DP O(k·n·log n) worst case with
//! one back-pointer per (layer, value) (u16 when n ≤ 65,536: at most 32 MB for k = 256).
//!
//! [`kmeans_1d_large`] handles inputs with many more distinct values (f32 weights): the exact DP on
//! at most `max_points` equal-weight buckets, refined by Lloyd steps on all values.

use std::ops::Range;

use super::fp16::{dispatch, HalfLanes, LaneKernel};

/// A clustering of sorted 1-D values.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters1d {
    /// Cluster id of each input value, in input order.
    pub labels: Vec<u32>,
    /// Centroid of each cluster (`min(k, n)` of them); ascending for non-degenerate inputs.
    pub centroids: Vec<f64>,
}

/// Prefix sums of w, w·x and w·x·x (entry `i` sums the first `i` values), one array each so that
/// a row's cells read them contiguously.
struct Prefix {
    w: Vec<f64>,
    s: Vec<f64>,
    q: Vec<f64>,
}

impl Prefix {
    fn new(x: &[f64], wt: &[f64]) -> Self {
        let n = x.len();
        let (mut w, mut s, mut q) = (
            Vec::with_capacity(n + 1),
            Vec::with_capacity(n + 1),
            Vec::with_capacity(n + 1),
        );
        let mut acc = [0.0f64; 3];
        w.push(0.0);
        s.push(0.0);
        q.push(0.0);
        for (&xi, &wi) in x.iter().zip(wt) {
            acc = [wi + acc[0], wi * xi + acc[1], wi * xi * xi + acc[2]];
            w.push(acc[0]);
            s.push(acc[1]);
            q.push(acc[2]);
        }
        Prefix { w, s, q }
    }

    /// Total weight of values `i..=j` (0 when empty).
    #[inline]
    fn weight(&self, i: usize, j: usize) -> f64 {
        if i <= j {
            self.w[j + 1] - self.w[i]
        } else {
            0.0
        }
    }

    /// Sum of squared distances of values `i..=j` to their weighted mean (`i <= j`).
    #[inline(always)]
    fn cost(&self, i: usize, j: usize) -> f64 {
        self.q[j + 1]
            - self.q[i]
            - scatter_drop(self.s[j + 1] - self.s[i], self.w[j + 1] - self.w[i])
    }
}

/// `sum² / weight`, what a cluster's mean removes from its Σw·x². A weightless cluster (zero
/// weights are allowed) has sum = weight = 0: dividing by the smallest normal instead gives its
/// 0 without a branch.
#[inline(always)]
fn scatter_drop(sum: f64, weight: f64) -> f64 {
    let weight = if weight > f64::MIN_POSITIVE {
        weight
    } else {
        f64::MIN_POSITIVE
    };
    sum * sum / weight
}

/// Back-pointers of the DP, one per (layer, value).
enum BackPtr {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl BackPtr {
    fn new(k: usize, n: usize) -> Self {
        if n <= 1 << 16 {
            BackPtr::Narrow(vec![0; k * n])
        } else {
            BackPtr::Wide(vec![0; k * n])
        }
    }
    /// Stores the back-pointers of one layer.
    fn set_layer(&mut self, layer: usize, argmin: &[u32]) {
        let n = argmin.len();
        match self {
            BackPtr::Narrow(t) => {
                for (b, &a) in t[layer * n..(layer + 1) * n].iter_mut().zip(argmin) {
                    *b = a as u16;
                }
            }
            BackPtr::Wide(t) => t[layer * n..(layer + 1) * n].copy_from_slice(argmin),
        }
    }
    #[inline]
    fn get(&self, at: usize) -> usize {
        match self {
            BackPtr::Narrow(t) => t[at] as usize,
            BackPtr::Wide(t) => t[at] as usize,
        }
    }
}

/// Cells compared side by side in a row minimum. The lanes are part of the definition (each
/// lane keeps its least cell, then the least of those wins), so the result is the same whatever
/// vector width the compiler uses.
const LANES: usize = 4;
/// Rows with at most this many candidate columns are scanned in one scalar pass.
const SHORT_ROW: usize = 16;

/// The least cell of row `i` over the columns `cols` (where the row's last cluster may start),
/// and its first column: cell `j` is `part[j] − (Σw·x)²/Σw over values j..=i`, where `part[j]`
/// is the previous layer's minimum at `j − 1` less `q[j]`; adding `q[i + 1]` gives the layer's
/// value. Long rows write their cells to `cells` in one branch-free pass (vector divisions),
/// then take the minimum and its first position.
#[inline(always)]
fn row_minimum(
    pre: &Prefix,
    part: &[f64],
    i: usize,
    cols: Range<usize>,
    cells: &mut [f64],
) -> (f64, usize) {
    let (wi, si) = (pre.w[i + 1], pre.s[i + 1]);
    let start = cols.start;
    let (w, s, p) = (&pre.w[cols.clone()], &pre.s[cols.clone()], &part[cols]);
    let cell = |j: usize| p[j] - scatter_drop(si - s[j], wi - w[j]);
    if w.len() <= SHORT_ROW {
        let mut m = (f64::INFINITY, 0usize);
        for j in 0..w.len() {
            let v = cell(j);
            let better = v < m.0;
            m = (if better { v } else { m.0 }, if better { j } else { m.1 });
        }
        return (m.0, m.1 + start);
    }
    let cells = &mut cells[..w.len()];
    for (j, c) in cells.iter_mut().enumerate() {
        *c = cell(j);
    }
    let mut lanes = [f64::INFINITY; LANES];
    let mut chunks = cells.chunks_exact(LANES);
    for ch in &mut chunks {
        for l in 0..LANES {
            lanes[l] = if ch[l] < lanes[l] { ch[l] } else { lanes[l] };
        }
    }
    let m = lanes
        .iter()
        .chain(chunks.remainder())
        .fold(f64::INFINITY, |m, &v| if v < m { v } else { m });
    let at = cells.iter().position(|&v| v == m).unwrap_or(0);
    (m, at + start)
}

/// One layer's row minima, with the buffers every layer reuses.
struct LayerMinima {
    /// Row → argmin column (the next layer's lower bounds) and the minimum (its `d`).
    argmin: Vec<u32>,
    min: Vec<f64>,
    /// Divide-and-conquer work list: [first row, last row, first column, last column].
    stack: Vec<[usize; 4]>,
    /// The cells of one long row.
    cells: Vec<f64>,
}

impl LayerMinima {
    /// The row minima of the rows `rows` by divide and conquer: the middle row's minimum bounds
    /// the columns of the rows above and below it. `lower[i]` is the previous layer's argmin of
    /// row `i`, a lower bound on this one's; `first_col` the first column any row may use.
    #[inline(always)]
    fn solve(
        &mut self,
        pre: &Prefix,
        part: &[f64],
        lower: &[u32],
        rows: Range<usize>,
        first_col: usize,
    ) {
        if rows.is_empty() {
            return;
        }
        let stack = &mut self.stack;
        stack.clear();
        stack.push([rows.start, rows.end - 1, first_col, rows.end - 1]);
        while let Some([lo, hi, clo, chi]) = stack.pop() {
            let mid = (lo + hi) / 2;
            let last = chi.min(mid);
            let first = clo.max(lower[mid] as usize).min(last);
            let (v, j) = row_minimum(pre, part, mid, first..last + 1, &mut self.cells);
            self.argmin[mid] = j as u32;
            self.min[mid] = v + pre.q[mid + 1];
            if mid > lo {
                stack.push([lo, mid - 1, clo, j]);
            }
            if mid < hi {
                stack.push([mid + 1, hi, j, chi]);
            }
        }
    }
}

/// The whole DP, run through [`dispatch`] so that the row minima are compiled for the widest
/// vectors the CPU has (the arithmetic, hence the result, is the same on every path).
struct KmeansDp<'a> {
    pre: &'a Prefix,
    k: usize,
}

impl LaneKernel for KmeansDp<'_> {
    type Output = BackPtr;

    #[inline(always)]
    fn run<H: HalfLanes>(self, _: H) -> BackPtr {
        let (pre, k) = (self.pre, self.k);
        let n = pre.w.len() - 1;
        let mut back = BackPtr::new(k, n);
        // Layer l needs rows l..=n−k+l: fewer values than clusters never occur in the answer,
        // and the clusters after row i need at least one value each.
        let mut d: Vec<f64> = (0..=n - k).map(|i| pre.cost(0, i)).collect();
        d.resize(n, 0.0);
        let mut part = vec![0.0f64; n];
        let mut lower = vec![0u32; n];
        let mut layer_minima = LayerMinima {
            argmin: vec![0; n],
            min: vec![0.0; n],
            stack: Vec::new(),
            cells: vec![0.0; n],
        };
        for layer in 1..k {
            let rows = layer..n - k + layer + 1;
            for j in rows.clone() {
                part[j] = d[j - 1] - pre.q[j];
            }
            layer_minima.solve(pre, &part, &lower, rows, layer);
            back.set_layer(layer, &layer_minima.argmin);
            std::mem::swap(&mut d, &mut layer_minima.min);
            std::mem::swap(&mut lower, &mut layer_minima.argmin);
        }
        back
    }
}

/// The layered DP's back-pointers for `k` clusters of the values whose prefix sums are `pre`.
fn layered_dp(pre: &Prefix, k: usize) -> BackPtr {
    dispatch(KmeansDp { pre, k })
}

/// The least penalized cost of every prefix, for a penalty `lambda` per cluster: `cost[i]` is
/// the least `SSE + lambda · clusters` over partitions of values `0..=i`, whose last cluster
/// starts at `start[i]` and which has `count[i]` clusters.
///
/// The candidates "the last cluster starts at j" are kept in a queue, each with the first row
/// from which it is the best: a later start, once better, stays better (the cost matrix is
/// Monge), so a new candidate drops the queue's tail while it beats it there, then finds the
/// row from which it beats the new tail (galloping from the tail's first row, then bisection).
/// O(n log n) cost evaluations; a tie keeps the earlier start.
#[derive(Default)]
struct Penalized {
    cost: Vec<f64>,
    start: Vec<u32>,
    count: Vec<u32>,
    /// `offset[j]`: what a last cluster starting at `j` adds besides its scatter,
    /// `cost[j − 1] + lambda − q[j]` (the row's own `q[i + 1]` is the same for every start).
    offset: Vec<f64>,
    /// (candidate start, first row where it is the best), from `head` on.
    queue: Vec<(u32, u32)>,
}

impl Penalized {
    /// Row `i`'s cell for a last cluster starting at `j`, less `q[i + 1]`.
    #[inline(always)]
    fn cell(pre: &Prefix, offset: &[f64], j: usize, i: usize) -> f64 {
        offset[j] - scatter_drop(pre.s[i + 1] - pre.s[j], pre.w[i + 1] - pre.w[j])
    }

    /// Whether at row `r` the start `new` beats the start `old` (`old < new <= r`): `cell(new)
    /// < cell(old)`, multiplied through by both clusters' weights. Divisions are what a cell
    /// costs (the search is bound by their throughput, not by its chain of comparisons, measured
    /// in docs/DECISIONS.md); the products compare the same quantities. A weightless cluster
    /// takes the cells' own form.
    #[inline(always)]
    fn beats(pre: &Prefix, offset: &[f64], new: usize, old: usize, r: usize) -> bool {
        let (wn, wo) = (pre.w[r + 1] - pre.w[new], pre.w[r + 1] - pre.w[old]);
        if wn > 0.0 && wo > 0.0 {
            let (sn, so) = (pre.s[r + 1] - pre.s[new], pre.s[r + 1] - pre.s[old]);
            (offset[new] - offset[old]) * wn * wo < sn * sn * wo - so * so * wn
        } else {
            Self::cell(pre, offset, new, r) < Self::cell(pre, offset, old, r)
        }
    }

    fn solve(&mut self, pre: &Prefix, lambda: f64) {
        #[cfg(test)]
        tests::SOLVES.with(|c| c.set(c.get() + 1));
        let n = pre.w.len() - 1;
        let Penalized {
            cost,
            start,
            count,
            offset,
            queue,
        } = self;
        cost.resize(n, 0.0);
        start.resize(n, 0);
        count.resize(n, 0);
        offset.resize(n, 0.0);
        queue.clear();
        let mut head = 0usize;
        for i in 0..n {
            offset[i] = if i == 0 { 0.0 } else { cost[i - 1] } + lambda - pre.q[i];
            loop {
                let Some(&(tail, from)) = queue[head..].last() else {
                    queue.push((i as u32, i as u32));
                    break;
                };
                let (tail, from) = (tail as usize, (from as usize).max(i));
                if Self::beats(pre, offset, i, tail, from) {
                    queue.pop();
                    continue;
                }
                // The first row from which `i` beats the tail: usually within a few rows of
                // `from` (measured), so steps of 1, 2, 4, … bracket it, then a bisection.
                let (mut lo, mut step) = (from + 1, 1);
                let mut hi = loop {
                    let r = from + step;
                    if r >= n {
                        break n;
                    }
                    if Self::beats(pre, offset, i, tail, r) {
                        break r;
                    }
                    lo = r + 1;
                    step *= 2;
                };
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if Self::beats(pre, offset, i, tail, mid) {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                if lo < n {
                    queue.push((i as u32, lo as u32));
                }
                break;
            }
            while queue.len() - head >= 2 && queue[head + 1].1 as usize <= i {
                head += 1;
            }
            let best = queue[head].0 as usize;
            cost[i] = Self::cell(pre, offset, best, i) + pre.q[i + 1];
            start[i] = best as u32;
            count[i] = if best == 0 { 1 } else { count[best - 1] + 1 };
        }
    }

    /// The first value of each cluster of the whole input's solution, in order.
    fn starts(&self) -> Vec<u32> {
        let mut starts = Vec::new();
        let mut end = self.start.len();
        while end > 0 {
            let s = self.start[end - 1];
            starts.push(s);
            end = s as usize;
        }
        starts.reverse();
        starts
    }
}

/// Bound on the penalties tried by [`lagrangian_starts`] before it gives up.
const MAX_PENALTIES: usize = 100;

/// The first value of each cluster of an optimal k-partition, by the Lagrangian ("WQS", "aliens
/// trick") search: the least `SSE + λ·clusters` over all partitions takes O(n log n) whatever k
/// is, and a minimiser with exactly k clusters is an optimal k-partition. The least SSE is convex
/// in the number of clusters (Monge costs), so a λ with k clusters exists; it is found by
/// stepping λ by the model SSE ∝ 1/clusters² until k is bracketed, then by the slope between
/// the bracketing solutions (each step finds a new vertex of the lower hull of (clusters, SSE)).
/// When k lies inside a hull edge, no λ gives k clusters: then [`on_hull_edge`]. `None` when
/// the search does not settle (the caller runs the layered DP).
fn lagrangian_starts(values: &[f64], weights: &[f64], pre: &Prefix, k: usize) -> Option<Vec<u32>> {
    let n = values.len();
    let mut lambda = initial_penalty(values, weights, pre, k);
    let mut sol = Penalized::default();
    // (clusters, SSE) of the closest solutions seen with more and with fewer clusters than k.
    let mut more: Option<(u32, f64)> = None;
    let mut fewer: Option<(u32, f64)> = None;
    for _ in 0..MAX_PENALTIES {
        if !(lambda > 0.0 && lambda.is_finite()) {
            return None;
        }
        sol.solve(pre, lambda);
        let c = sol.count[n - 1];
        if c as usize == k {
            return Some(sol.starts());
        }
        let sse = sol.cost[n - 1] - lambda * c as f64;
        let bracketed = more.is_some() && fewer.is_some();
        let side = if c as usize > k {
            &mut more
        } else {
            &mut fewer
        };
        let closer = side.map_or(true, |(best, _)| {
            c.abs_diff(k as u32) < best.abs_diff(k as u32)
        });
        if closer {
            *side = Some((c, sse));
        } else if bracketed {
            return on_hull_edge(values, weights, pre, k, lambda, &mut sol);
        }
        lambda = match (more, fewer) {
            (Some((cm, sm)), Some((cf, sf))) => (sf - sm) / (cm - cf) as f64,
            _ => lambda * (c as f64 / k as f64).powi(3),
        };
    }
    None
}

/// A first penalty inside the range that gives k clusters, which is [SSE(k) − SSE(k+1),
/// SSE(k−1) − SSE(k)] for the least SSEs: below 16 clusters, the mean of its ends
/// (SSE(k−1) − SSE(k+1)) / 2 from [`lloyd_sse`]'s near-least SSEs, a few k·log n steps that
/// find k clusters at the first try on bell-shaped and heavy-tailed groups alike (measured in
/// docs/DECISIONS.md; a multiple of SSE(1)/k³ needed two tries for k = 4 and 8 and up to four on
/// heavy tails). From 16 clusters on, the slope −dSSE/dk = 2·SSE(k)/k of the high-resolution
/// (Panter–Dite) estimate SSE(k) = (∫ f^(1/3))³ / (12 k²) of the weight density f (from each
/// value's count and the gaps to its neighbours).
fn initial_penalty(values: &[f64], weights: &[f64], pre: &Prefix, k: usize) -> f64 {
    let n = values.len();
    let kf = k as f64;
    let lambda = if k >= 16 {
        let mass: f64 = (0..n)
            .map(|i| {
                let gap = (values[(i + 1).min(n - 1)] - values[i.saturating_sub(1)]) / 2.0;
                approx_cbrt(weights[i] * gap * gap)
            })
            .sum();
        2.0 * mass.powi(3) / (12.0 * kf * kf) / kf
    } else {
        (lloyd_sse(values, pre, k - 1) - lloyd_sse(values, pre, k + 1)) / 2.0
    };
    if lambda > 0.0 && lambda.is_finite() {
        lambda
    } else {
        2.0 * pre.cost(0, n - 1) / kf.powi(3)
    }
}

/// The SSE of a partition of the sorted distinct `values` into at most `k` clusters found by
/// Lloyd's iterations from equal-weight quantiles: at least the least SSE, and close to it for
/// small k. Each iteration moves every boundary to the midpoint of its centroids by bisection
/// over the prefix sums, O(k log n).
fn lloyd_sse(values: &[f64], pre: &Prefix, k: usize) -> f64 {
    const ITERATIONS: usize = 32;
    let n = values.len();
    let total = pre.w[n];
    // starts[c]: the first value of cluster c; starts[len] = n closes the last one.
    let mut starts: Vec<usize> = Vec::with_capacity(k + 1);
    starts.push(0);
    for c in 1..k {
        let at = pre.w[1..].partition_point(|&w| w <= c as f64 * total / k as f64);
        if at > starts[starts.len() - 1] && at < n {
            starts.push(at);
        }
    }
    starts.push(n);
    let mut centroids = vec![0.0; starts.len() - 1];
    for _ in 0..ITERATIONS {
        for (c, m) in centroids.iter_mut().enumerate() {
            let (i, j) = (starts[c], starts[c + 1] - 1);
            *m = (pre.s[j + 1] - pre.s[i]) / pre.weight(i, j).max(f64::MIN_POSITIVE);
        }
        let mut moved = false;
        for c in 1..centroids.len() {
            let mid = (centroids[c - 1] + centroids[c]) / 2.0;
            let at = values
                .partition_point(|&x| x <= mid)
                .clamp(starts[c - 1] + 1, starts[c + 1] - 1);
            moved |= at != starts[c];
            starts[c] = at;
        }
        if !moved {
            break;
        }
    }
    starts.windows(2).map(|w| pre.cost(w[0], w[1] - 1)).sum()
}

/// The cube root of a non-negative finite `x` to a few ulps, from +, ×, ÷ alone: the
/// same bits on every machine (the platform's `cbrt` may differ by an ulp, and the start decides
/// near ties), branch-free so that it vectorizes (a correctly rounded `libm::cbrt` per value was
/// a tenth of the grouped k-means time). The start halves the exponent's bits by three (Kahan's
/// constant, a few percent off), then four Newton steps (each squares the relative error).
fn approx_cbrt(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let mut y = f64::from_bits(x.to_bits() / 3 + 0x2A9F_7893_782D_A1CE);
    for _ in 0..4 {
        y = (2.0 * y + x / (y * y)) / 3.0;
    }
    y
}

/// k lies inside an edge of the lower hull of (clusters, SSE), whose slope is `lambda`, and
/// `fwd` is solved for it. Every optimal k-partition is then optimal for `lambda` too, so each of
/// its cluster ends `i` has `fwd.cost[i]` + (the same for the values after `i`, solved right to
/// left) equal to the optimum: the layered DP over those ends only (merged into buckets, which
/// keeps every cost between them) finds it. The tolerance keeps ends lost to rounding.
fn on_hull_edge(
    values: &[f64],
    weights: &[f64],
    pre: &Prefix,
    k: usize,
    lambda: f64,
    fwd: &mut Penalized,
) -> Option<Vec<u32>> {
    let n = values.len();
    let mirrored: Vec<f64> = values.iter().rev().map(|v| -v).collect();
    let reversed: Vec<f64> = weights.iter().rev().copied().collect();
    let mut bwd = Penalized::default();
    bwd.solve(&Prefix::new(&mirrored, &reversed), lambda);
    let best = fwd.cost[n - 1];
    // Each cell of a chain is rounded at the magnitude of the prefix sums of squares (its start's
    // offset, then the row's own term) and a chain has one cell per cluster: ends within that
    // bound of the optimum, or within 1e-9 of it, are kept (extra ends cost time only).
    let cells = fwd.count[n - 1].max(bwd.count[n - 1]).max(k as u32) as f64;
    let rounding = 4.0 * cells * f64::EPSILON * (pre.q[n] + best.abs());
    let tolerance = 1e-9 * best.abs() + rounding;
    let mut ends: Vec<usize> = (0..n - 1)
        .filter(|&i| fwd.cost[i] + bwd.cost[n - 2 - i] <= best + tolerance)
        .collect();
    ends.push(n - 1);
    let m = ends.len();
    if m < k {
        return None;
    }
    let take = |sums: &[f64]| -> Vec<f64> {
        std::iter::once(0.0)
            .chain(ends.iter().map(|&e| sums[e + 1]))
            .collect()
    };
    let buckets = Prefix {
        w: take(&pre.w),
        s: take(&pre.s),
        q: take(&pre.q),
    };
    let back = layered_dp(&buckets, k);
    let mut starts = vec![0u32; k];
    let mut last = m - 1;
    for layer in (1..k).rev() {
        let first = back.get(layer * m + last);
        starts[layer] = (ends[first - 1] + 1) as u32;
        last = first - 1;
    }
    Some(starts)
}

/// Optimal weighted k-means of sorted values, with `k` clamped to `values.len()`: the same
/// labels and centroids as coremltools' `kmeans1d.cluster(values, k, weights=weights)` except
/// where two partitions tie within float rounding (see the module documentation).
///
/// `values` must be sorted ascending (coremltools passes `np.unique` output); `weights` are
/// non-negative (counts). An empty input gives an empty result.
pub fn optimal_kmeans_1d(values: &[f64], weights: &[f64], k: usize) -> Clusters1d {
    assert_eq!(
        values.len(),
        weights.len(),
        "values and weights differ in length"
    );
    debug_assert!(
        values.windows(2).all(|p| p[0] <= p[1]),
        "values must be sorted"
    );
    let n = values.len();
    let k = k.min(n);
    if n == 0 || k == 0 {
        return Clusters1d {
            labels: vec![0; n],
            centroids: Vec::new(),
        };
    }
    let pre = Prefix::new(values, weights);
    if n >= LAGRANGIAN_MIN_VALUES && n > 2 * k {
        if let Some(starts) = lagrangian_starts(values, weights, &pre, k) {
            return backtrack(values, &pre, k, |layer, _| starts[layer] as usize);
        }
    }
    let back = layered_dp(&pre, k);
    backtrack(values, &pre, k, |layer, last| back.get(layer * n + last))
}

/// Below this many values the layered DP is about as fast as the Lagrangian search.
const LAGRANGIAN_MIN_VALUES: usize = 256;

/// The clusters found by the DP, from `first(layer, last)`: the first value of cluster `layer`
/// when it ends at value `last`. Walks back from the last value, the last cluster first.
fn backtrack(
    values: &[f64],
    pre: &Prefix,
    k: usize,
    first: impl Fn(usize, usize) -> usize,
) -> Clusters1d {
    let n = values.len();
    let mut labels = vec![0u32; n];
    let mut centroids = vec![0.0f64; k];
    let (mut t, mut layer, mut last) = (n, k - 1, n - 1);
    loop {
        let end = t;
        t = first(layer, last);
        let mut c = 0.0f64;
        for i in t..end {
            labels[i] = layer as u32;
            c += (values[i] - c) * pre.weight(i, i) / pre.weight(t, i);
        }
        centroids[layer] = c;
        if t == 0 || layer == 0 {
            break;
        }
        layer -= 1;
        last = t - 1;
    }
    Clusters1d { labels, centroids }
}

/// Weighted sum of squared errors of a clustering (with its own centroids).
pub fn sse_1d(values: &[f64], weights: &[f64], c: &Clusters1d) -> f64 {
    values
        .iter()
        .zip(weights)
        .zip(&c.labels)
        .map(|((&x, &w), &l)| {
            let d = x - c.centroids[l as usize];
            w * d * d
        })
        .sum()
}

/// k-means of sorted values when there may be too many of them for the exact DP.
///
/// With at most `max_points` values this is [`optimal_kmeans_1d`]. Otherwise the values are cut
/// into at most `max_points` contiguous buckets of about equal weight; the exact DP on the bucket
/// means (weighted by bucket weight) finds the best partition whose boundaries fall between
/// buckets (the within-bucket scatter is the same for all of them), and Lloyd steps on all values
/// then move the boundaries freely until nothing changes. Labels are contiguous runs, centroids
/// ascending; deterministic.
pub fn kmeans_1d_large(values: &[f64], weights: &[f64], k: usize, max_points: usize) -> Clusters1d {
    let n = values.len();
    let max_points = max_points.max(1);
    if n <= max_points {
        return optimal_kmeans_1d(values, weights, k);
    }
    let k = k.min(n);
    // Contiguous buckets, each closed once it holds its share of the weight or of the value
    // range (so isolated values are not swallowed by a heavy neighbour): at most `max_points`.
    let half = (max_points / 2).max(1) as f64;
    let target_w = weights.iter().sum::<f64>() / half;
    let target_span = (values[n - 1] - values[0]) / half;
    let (mut bx, mut bw) = (
        Vec::with_capacity(max_points),
        Vec::with_capacity(max_points),
    );
    let (mut acc_w, mut acc_s, mut start) = (0.0f64, 0.0f64, 0usize);
    for i in 0..n {
        acc_w += weights[i];
        acc_s += weights[i] * values[i];
        if i + 1 == n || acc_w >= target_w || values[i + 1] - values[start] > target_span {
            bx.push(acc_s / acc_w);
            bw.push(acc_w);
            start = i + 1;
            acc_w = 0.0;
            acc_s = 0.0;
        }
    }
    // Bucket means are sorted; guard against rounding pushing one below its predecessor.
    for i in 1..bx.len() {
        if bx[i] < bx[i - 1] {
            bx[i] = bx[i - 1];
        }
    }
    let coarse = optimal_kmeans_1d(&bx, &bw, k);
    let mut centroids = coarse.centroids;

    // Lloyd on all values with prefix sums: O(k log n) per step.
    let mut cw = Vec::with_capacity(n + 1);
    let mut cs = Vec::with_capacity(n + 1);
    cw.push(0.0f64);
    cs.push(0.0f64);
    for i in 0..n {
        cw.push(cw[i] + weights[i]);
        cs.push(cs[i] + weights[i] * values[i]);
    }
    let kk = centroids.len();
    let mut bounds = vec![0usize; kk + 1];
    let mut prev = vec![usize::MAX; kk + 1];
    for _ in 0..1000 {
        centroids.sort_by(f64::total_cmp);
        bounds[0] = 0;
        bounds[kk] = n;
        for j in 1..kk {
            let mid = 0.5 * (centroids[j - 1] + centroids[j]);
            bounds[j] = values.partition_point(|&v| v < mid).max(bounds[j - 1]);
        }
        for j in 0..kk {
            let (a, b) = (bounds[j], bounds[j + 1]);
            if b > a {
                centroids[j] = (cs[b] - cs[a]) / (cw[b] - cw[a]);
            }
        }
        if bounds == prev {
            break;
        }
        std::mem::swap(&mut bounds, &mut prev);
    }
    let mut labels = vec![0u32; n];
    for j in 0..kk {
        for l in &mut labels[prev[j]..prev[j + 1]] {
            *l = j as u32;
        }
    }
    Clusters1d { labels, centroids }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    thread_local! {
        /// Penalized solves run by this thread (how many penalties a search tried).
        pub(super) static SOLVES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The sorted distinct values of `v` with their counts (as `np.unique`).
    fn with_counts(mut v: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
        v.sort_by(f64::total_cmp);
        let (mut xs, mut ws) = (Vec::new(), Vec::<f64>::new());
        for x in v {
            if xs.last() == Some(&x) {
                *ws.last_mut().unwrap() += 1.0;
            } else {
                xs.push(x);
                ws.push(1.0);
            }
        }
        (xs, ws)
    }

    /// Sorted distinct f16 values of `n` values with their counts: bell-shaped, or (heavy) each
    /// value times 2^u for a u uniform in [-2, 2).
    fn f16_group(seed: u64, n: usize, heavy: bool) -> (Vec<f64>, Vec<f64>) {
        let mut r = crate::kernels::fp16::testgen::SplitMix(seed ^ 0x5EED);
        let v: Vec<f64> = crate::kernels::fp16::testgen::normalish(seed, n, 20)
            .into_iter()
            .map(|x| {
                let u = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0;
                let x = if heavy { x * u.exp2() } else { x };
                crate::kernels::fp16::f16_from_f64(x).to_f64() + 0.0
            })
            .collect();
        with_counts(v)
    }

    /// Penalties tried per group (`cargo test --release --lib kmeans1d::tests::penalties_tried
    /// -- --ignored --nocapture`): 16 groups of 65,536 fp16 values for each k and shape.
    #[test]
    #[ignore]
    fn penalties_tried() {
        for heavy in [false, true] {
            for k in [2usize, 4, 8, 16, 64, 256] {
                let before = SOLVES.with(|c| c.get());
                for seed in 0..16 {
                    let (x, w) = f16_group(seed, 65_536, heavy);
                    let pre = Prefix::new(&x, &w);
                    assert!(lagrangian_starts(&x, &w, &pre, k).is_some());
                }
                let solves = SOLVES.with(|c| c.get()) - before;
                println!("heavy {heavy} k {k}: {solves} penalties for 16 groups");
            }
        }
    }

    /// Minimal cost by the plain O(k·n²) DP, for cross-checking.
    #[allow(clippy::needless_range_loop)]
    fn brute_cost(x: &[f64], w: &[f64], k: usize) -> f64 {
        let n = x.len();
        let pre = Prefix::new(x, w);
        let k = k.min(n);
        let mut d: Vec<f64> = (0..n).map(|i| pre.cost(0, i)).collect();
        for _ in 1..k {
            let mut nd = d.clone();
            for i in 0..n {
                for j in 1..=i {
                    nd[i] = nd[i].min(d[j - 1] + pre.cost(j, i));
                }
            }
            d = nd;
        }
        d[n - 1]
    }

    /// kmeans1d's cluster cost, expression for expression (an empty cluster, `j < i`, costs 0).
    fn kmeans1d_cost(pre: &Prefix, i: usize, j: usize) -> f64 {
        if j < i {
            return 0.0;
        }
        let w = pre.w[j + 1] - pre.w[i];
        let sum = pre.s[j + 1] - pre.s[i];
        let mu = sum / w;
        let mut r = pre.q[j + 1] - pre.q[i];
        r += w * (mu * mu);
        r -= (2.0 * mu) * sum;
        r
    }

    /// kmeans1d's SMAWK transcribed (allocating at every level, every cell recomputed, the same
    /// comparison sequence and tie rules): what coremltools computes for f16 groups of at least
    /// 10,000 values, the reference [`optimal_kmeans_1d`] must equal outside near-ties.
    fn reference_kmeans_1d(values: &[f64], weights: &[f64], k: usize) -> Clusters1d {
        fn smawk(
            f: &dyn Fn(usize, usize) -> f64,
            argmin: &mut [u32],
            first: usize,
            step: usize,
            count: usize,
            cols: &[u32],
        ) {
            if count == 0 {
                return;
            }
            let row = |p: usize| first + p * step;
            let mut kept: Vec<u32> = Vec::new();
            for &c in cols {
                while let Some(&top) = kept.last() {
                    let r = row(kept.len() - 1);
                    if f(r, c as usize) >= f(r, top as usize) {
                        break;
                    }
                    kept.pop();
                }
                if kept.len() < count {
                    kept.push(c);
                }
            }
            smawk(f, argmin, first + step, step * 2, count / 2, &kept);
            let mut pos = std::collections::HashMap::new();
            for (i, &c) in kept.iter().enumerate() {
                pos.insert(c, i);
            }
            let mut start = 0usize;
            for p in (0..count).step_by(2) {
                let r = row(p);
                let stop = if p + 1 < count {
                    pos[&argmin[row(p + 1)]]
                } else {
                    kept.len() - 1
                };
                let mut best = kept[start];
                let mut min = f(r, best as usize);
                for &c in &kept[start + 1..=stop] {
                    let v = f(r, c as usize);
                    if v < min {
                        best = c;
                        min = v;
                    }
                }
                argmin[r] = best;
                start = stop;
            }
        }
        let n = values.len();
        let k = k.min(n);
        let pre = Prefix::new(values, weights);
        let mut back = vec![vec![0usize; n]; k];
        let mut d: Vec<f64> = (0..n).map(|i| kmeans1d_cost(&pre, 0, i)).collect();
        let all: Vec<u32> = (0..n as u32).collect();
        for b in back.iter_mut().skip(1) {
            let cell = |i: usize, j: usize| {
                let col = if j == 0 || j > i { i } else { j - 1 };
                d[col] + kmeans1d_cost(&pre, j, i)
            };
            let mut argmin = vec![0u32; n];
            smawk(&cell, &mut argmin, 0, 1, n, &all);
            let next: Vec<f64> = (0..n).map(|i| cell(i, argmin[i] as usize)).collect();
            for (b, &a) in b.iter_mut().zip(&argmin) {
                *b = a as usize;
            }
            d = next;
        }
        backtrack(values, &pre, k, |layer, last| back[layer][last])
    }

    fn same_bits(a: &Clusters1d, b: &Clusters1d) -> bool {
        a.labels == b.labels
            && a.centroids.len() == b.centroids.len()
            && a.centroids
                .iter()
                .zip(&b.centroids)
                .all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn matches_reference_on_weight_like_data() {
        for (seed, n, e, k) in [
            (21u64, 60_000, 16, 16),
            (22, 20_000, 12, 4),
            (23, 5_000, 20, 64),
        ] {
            let (x, w) = distinct_f16(seed, n, e);
            let r = reference_kmeans_1d(&x, &w, k);
            assert!(same_bits(&optimal_kmeans_1d(&x, &w, k), &r), "seed {seed}");
        }
    }

    /// `Ok(false)` when `got` is `want` bit for bit, `Ok(true)` when it differs but the two
    /// SSEs tie within 1e-9 relative (the contract; plus 1e-15 of Σw·x²), `Err` otherwise.
    fn same_or_tie(
        got: &Clusters1d,
        want: &Clusters1d,
        x: &[f64],
        w: &[f64],
    ) -> Result<bool, String> {
        if same_bits(got, want) {
            return Ok(false);
        }
        let (a, b) = (sse_1d(x, w, got), sse_1d(x, w, want));
        // Rounding of the running-mean centroids gives repeated values tiny errors even where
        // both partitions are exact (SSE 0): an absolute term on the data's scale covers it.
        let scale: f64 = x.iter().zip(w).map(|(&v, &c)| c * v * v).sum();
        if (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-15 * scale {
            Ok(true)
        } else {
            Err(format!("SSE {a} vs {b}: {got:?} vs {want:?}"))
        }
    }

    /// The golden result (coremltools' kmeans1d) or a tie with it; true for a tie.
    fn check_golden_starts(
        x: &[f64],
        w: &[f64],
        k: usize,
        starts: &[usize],
        cents: &[u64],
    ) -> bool {
        let mut labels = vec![0u32; x.len()];
        for (j, &s) in starts.iter().enumerate() {
            for l in &mut labels[s..] {
                *l = j as u32;
            }
        }
        let want = Clusters1d {
            labels,
            centroids: cents.iter().map(|&c| f64::from_bits(c)).collect(),
        };
        same_or_tie(&optimal_kmeans_1d(x, w, k), &want, x, w)
            .unwrap_or_else(|e| panic!("k={k}: {e}"))
    }

    /// Sorted distinct f16 values of a generated tensor with their counts (as `np.unique`).
    fn distinct_f16(seed: u64, n: usize, e: i32) -> (Vec<f64>, Vec<f64>) {
        let v: Vec<f64> = crate::kernels::fp16::testgen::normalish(seed, n, e)
            .into_iter()
            .map(|x| crate::kernels::fp16::f16_from_f64(x).to_f64())
            .collect();
        with_counts(v)
    }

    fn check_golden_generated(
        seed: u64,
        n: usize,
        e: i32,
        k: usize,
        starts: &[usize],
        cents: &[u64],
    ) {
        let (x, w) = distinct_f16(seed, n, e);
        assert!(
            !check_golden_starts(&x, &w, k, starts, cents),
            "a tie on generated data, seed {seed}"
        );
    }

    #[test]
    fn golden_kmeans1d_ties_and_small() {
        // Generated with coremltools._deps.kmeans1d.cluster (coremltools 9.0, x86-64 Linux).
        check_golden_starts(
            &[0.0, 1.0, 2.0],
            &[1.0, 1.0, 1.0],
            2,
            &[0, 1],
            &[0x0000000000000000, 0x3ff8000000000000],
        );
        check_golden_starts(
            &[0.0, 1.0, 2.0, 3.0, 4.0],
            &[1.0, 1.0, 1.0, 1.0, 1.0],
            2,
            &[0, 2],
            &[0x3fe0000000000000, 0x4008000000000000],
        );
        check_golden_starts(
            &[0.0, 1.0, 2.0, 3.0, 4.0],
            &[1.0, 1.0, 1.0, 1.0, 1.0],
            3,
            &[0, 1, 3],
            &[0x0000000000000000, 0x3ff8000000000000, 0x400c000000000000],
        );
        check_golden_starts(
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            4,
            &[0, 1, 2, 4],
            &[
                0x0000000000000000,
                0x3ff0000000000000,
                0x4004000000000000,
                0x4012000000000000,
            ],
        );
        check_golden_starts(
            &[
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0,
                15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0, 28.0,
                29.0, 30.0, 31.0, 32.0, 33.0, 34.0, 35.0, 36.0, 37.0, 38.0, 39.0,
            ],
            &[
                1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            ],
            7,
            &[0, 5, 10, 16, 22, 28, 34],
            &[
                0x4000000000000000,
                0x401c000000000000,
                0x4029000000000000,
                0x4032800000000000,
                0x4038800000000000,
                0x403e800000000000,
                0x4042400000000000,
            ],
        );
        check_golden_starts(
            &[
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0,
                15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0, 28.0,
                29.0, 30.0, 31.0,
            ],
            &[
                2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0,
                2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0,
            ],
            16,
            &[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30],
            &[
                0x3fe0000000000000,
                0x4004000000000000,
                0x4012000000000000,
                0x401a000000000000,
                0x4021000000000000,
                0x4025000000000000,
                0x4029000000000000,
                0x402d000000000000,
                0x4030800000000000,
                0x4032800000000000,
                0x4034800000000000,
                0x4036800000000000,
                0x4038800000000000,
                0x403a800000000000,
                0x403c800000000000,
                0x403e800000000000,
            ],
        );
        check_golden_starts(
            &[-1.0, 0.0, 1.0],
            &[5.0, 1.0, 5.0],
            2,
            &[0, 1],
            &[0xbff0000000000000, 0x3feaaaaaaaaaaaab],
        );
        check_golden_starts(
            &[
                0.0,
                0.1,
                0.2,
                0.30000000000000004,
                0.4,
                0.5,
                0.6000000000000001,
                0.7000000000000001,
                0.8,
                0.9,
                1.0,
                1.1,
                1.2000000000000002,
                1.3,
                1.4000000000000001,
                1.5,
                1.6,
                1.7000000000000002,
                1.8,
                1.9000000000000001,
                2.0,
                2.1,
                2.2,
                2.3000000000000003,
                2.4000000000000004,
                2.5,
                2.6,
                2.7,
                2.8000000000000003,
                2.9000000000000004,
            ],
            &[
                1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            ],
            5,
            &[0, 6, 12, 18, 24],
            &[
                0x3fd0000000000000,
                0x3feb333333333334,
                0x3ff7333333333334,
                0x4000666666666666,
                0x4005333333333334,
            ],
        );
        check_golden_starts(
            &[1.0, 2.0, 3.0, 10.0, 11.0, 12.0],
            &[3.0, 1.0, 3.0, 3.0, 1.0, 3.0],
            3,
            &[0, 1, 3],
            &[0x3ff0000000000000, 0x4006000000000000, 0x4026000000000000],
        );
        check_golden_starts(
            &[-3.0, -1.0, 0.0, 1.0, 3.0],
            &[1.0, 2.0, 100.0, 2.0, 1.0],
            4,
            &[0, 1, 2, 4],
            &[
                0xc008000000000000,
                0xbff0000000000000,
                0x3f94141414141414,
                0x4008000000000000,
            ],
        );
        check_golden_generated(
            1,
            500,
            17,
            4,
            &[0, 104, 271, 415],
            &[
                0xbfdd34de304d4876,
                0xbfbfe2792ef56579,
                0x3fc52842f785ef0a,
                0x3fdc06cf914c1bae,
            ],
        ); // 485 distinct
        check_golden_generated(
            2,
            20000,
            16,
            16,
            &[
                0, 194, 453, 829, 1175, 1614, 2209, 3135, 4693, 5941, 6704, 7285, 7656, 8003, 8352,
                8580,
            ],
            &[
                0xbff5ed9042b5c8f8,
                0xbff1411188c46231,
                0xbfeb82c11e41c6a3,
                0xbfe5a10bdd692cd7,
                0xbfe042694a5294a8,
                0xbfd67797d835d546,
                0xbfc93af6db6db6d8,
                0xbfa7458921050cd3,
                0x3fb960ca4519d843,
                0x3fcf53d044d25999,
                0x3fd95ad00997ae74,
                0x3fe19d576d9bd169,
                0x3fe6f44e2cabcfe7,
                0x3fece1708092f114,
                0x3ff1f5b1bd0dac17,
                0x3ff6e3e000000001,
            ],
        ); // 8758 distinct
        check_golden_generated(
            3,
            20000,
            12,
            64,
            &[
                0, 4, 39, 88, 148, 213, 277, 332, 391, 463, 544, 634, 723, 814, 903, 988, 1078,
                1170, 1257, 1339, 1456, 1601, 1757, 1916, 2074, 2219, 2392, 2635, 2887, 3121, 3453,
                3824, 4276, 4706, 5110, 5462, 5751, 6023, 6286, 6483, 6637, 6782, 6930, 7078, 7223,
                7356, 7441, 7524, 7603, 7683, 7773, 7862, 7949, 8044, 8143, 8237, 8320, 8377, 8434,
                8488, 8552, 8606, 8655, 8683,
            ],
            &[
                0xc03d640000000000,
                0xc039d05555555557,
                0xc03795cfffffffff,
                0xc035f5721ed7e757,
                0xc0347b4bc6a7ef9e,
                0xc03331a976fc64f6,
                0xc031f2ad3bab4eea,
                0xc030fb679e79e79f,
                0xc030027000000002,
                0xc02e4f9079a9d260,
                0xc02ccace540f489a,
                0xc02b3aa63bd81a99,
                0xc029c287c1f07c21,
                0xc0283a67e95412e2,
                0xc026f0a69df06131,
                0xc025735d8d6a9b31,
                0xc023ffd35b60f58a,
                0xc0228d4a3d70a3d8,
                0xc02138a721291e81,
                0xc01fe20a8e83f577,
                0xc01d32ee02c47f4f,
                0xc01aaa432a6432a5,
                0xc0180989b0723b24,
                0xc015682e8ba2e8be,
                0xc012dc09d2921c3b,
                0xc01076b8956cc5c5,
                0xc00c2292bcf706de,
                0xc007596d91ecd009,
                0xc0027f408e78356c,
                0xbffb10b5c6701837,
                0xbff15bc0fc0fc0fb,
                0xbfdc9cf5e9e7fc26,
                0x3fca8a62f53e62f8,
                0x3fea91b6db6db6d7,
                0x3ff7703759f22984,
                0x400103017c4948c8,
                0x400647ef5d57cc40,
                0x400b7950af50af4f,
                0x40103f42c27f3624,
                0x4012c6a93abec98f,
                0x40156ebcc0242af5,
                0x4017d5f0f9a4b1fb,
                0x401a4f86a314dbf9,
                0x401cc2789d89d89d,
                0x401f420532ae21c9,
                0x4020f2930288df0b,
                0x402248d80bd69103,
                0x4023922d681f50a2,
                0x4024ca5d1745d171,
                0x40262359f2298377,
                0x402797e540f4898e,
                0x40290caaaaaaaaac,
                0x402a8f496d25b499,
                0x402c389555555558,
                0x402de84d4873ecad,
                0x402f944f95e2d194,
                0x4030bfb999999998,
                0x4031b6db6db6db6e,
                0x4032c2d249249248,
                0x4033f1585a9e9585,
                0x40354b13b13b13b2,
                0x4036dc3e0f83e0f6,
                0x4038a1d1745d1747,
                0x403ae9af286bca1b,
            ],
        ); // 8702 distinct
        check_golden_generated(
            4,
            3000,
            20,
            256,
            &[
                0, 1, 2, 3, 4, 8, 9, 11, 13, 15, 18, 21, 24, 26, 30, 35, 40, 46, 49, 52, 58, 63,
                66, 70, 77, 80, 83, 89, 93, 100, 104, 110, 114, 117, 126, 135, 142, 153, 160, 166,
                174, 179, 186, 194, 199, 205, 208, 216, 226, 239, 252, 261, 266, 274, 282, 289,
                298, 308, 318, 327, 337, 346, 354, 361, 371, 380, 387, 394, 407, 415, 425, 430,
                442, 449, 461, 473, 480, 488, 496, 506, 519, 534, 544, 557, 569, 580, 592, 600,
                612, 626, 635, 647, 663, 681, 696, 708, 718, 733, 743, 756, 766, 780, 800, 814,
                826, 839, 848, 864, 878, 897, 916, 926, 941, 966, 978, 989, 1011, 1035, 1055, 1071,
                1087, 1105, 1130, 1150, 1167, 1181, 1197, 1214, 1233, 1248, 1270, 1284, 1299, 1321,
                1335, 1350, 1364, 1381, 1399, 1412, 1432, 1452, 1469, 1484, 1502, 1514, 1530, 1544,
                1556, 1567, 1584, 1596, 1607, 1618, 1634, 1652, 1662, 1679, 1693, 1707, 1723, 1736,
                1752, 1765, 1778, 1795, 1806, 1818, 1827, 1843, 1852, 1863, 1877, 1889, 1897, 1907,
                1918, 1926, 1939, 1952, 1964, 1977, 1986, 1996, 2009, 2020, 2033, 2051, 2063, 2074,
                2086, 2095, 2106, 2117, 2130, 2137, 2149, 2160, 2170, 2179, 2189, 2202, 2214, 2225,
                2236, 2246, 2260, 2270, 2282, 2294, 2303, 2308, 2319, 2328, 2334, 2341, 2349, 2357,
                2368, 2379, 2390, 2397, 2403, 2408, 2414, 2420, 2427, 2436, 2444, 2448, 2452, 2458,
                2462, 2466, 2471, 2477, 2483, 2487, 2495, 2501, 2507, 2513, 2517, 2521, 2522, 2528,
                2531, 2533, 2537, 2539, 2542, 2546, 2547, 2550, 2551, 2552,
            ],
            &[
                0xbfbda40000000000,
                0xbfbb100000000000,
                0xbfba800000000000,
                0xbfba180000000000,
                0xbfb9a70000000000,
                0xbfb8c80000000000,
                0xbfb86a0000000000,
                0xbfb7ee0000000000,
                0xbfb75a0000000000,
                0xbfb6c6aaaaaaaaab,
                0xbfb6715555555555,
                0xbfb6280000000000,
                0xbfb5d80000000000,
                0xbfb5733333333333,
                0xbfb5115555555555,
                0xbfb4d20000000000,
                0xbfb488aaaaaaaaaa,
                0xbfb4290000000000,
                0xbfb3c30000000000,
                0xbfb36a0000000000,
                0xbfb2f73333333333,
                0xbfb2bd5555555555,
                0xbfb2730000000000,
                0xbfb242db6db6db6e,
                0xbfb2030000000000,
                0xbfb1a2aaaaaaaaab,
                0xbfb1680000000000,
                0xbfb11e6666666666,
                0xbfb0fa8000000000,
                0xbfb0b66666666666,
                0xbfb086aaaaaaaaab,
                0xbfb0526666666666,
                0xbfb0220000000000,
                0xbfafe8cccccccccc,
                0xbfaf8c0000000001,
                0xbfaef88000000000,
                0xbfae8b6276276277,
                0xbfae2c0000000000,
                0xbfadbe0000000000,
                0xbfad4471c71c71c6,
                0xbfacfc0000000000,
                0xbfac9e6666666666,
                0xbfac21c71c71c71c,
                0xbfabd8cccccccccd,
                0xbfab775555555555,
                0xbfab266666666667,
                0xbfaaceaaaaaaaaab,
                0xbfaa5e2762762762,
                0xbfa9f61e1e1e1e1d,
                0xbfa98f8000000000,
                0xbfa9189249249249,
                0xbfa8d40000000000,
                0xbfa8722e8ba2e8ba,
                0xbfa7de8ba2e8ba2f,
                0xbfa7740000000001,
                0xbfa700aaaaaaaaaa,
                0xbfa6800000000000,
                0xbfa61b6276276277,
                0xbfa5bb1c71c71c73,
                0xbfa545d1745d1747,
                0xbfa4f8cccccccccd,
                0xbfa4b00000000000,
                0xbfa46ccccccccccd,
                0xbfa418cccccccccd,
                0xbfa3aeaaaaaaaaab,
                0xbfa36b8e38e38e39,
                0xbfa3178000000000,
                0xbfa2d16666666666,
                0xbfa275745d1745d2,
                0xbfa213a2e8ba2e8b,
                0xbfa1d35555555555,
                0xbfa19fc000000001,
                0xbfa1548000000000,
                0xbfa10d6969696969,
                0xbfa0a56969696969,
                0xbfa049b6db6db6db,
                0xbf9fd8ba2e8ba2e9,
                0xbf9f570000000000,
                0xbf9ede7627627627,
                0xbf9e784444444445,
                0xbf9dd4ccccccccce,
                0xbf9d479999999999,
                0xbf9cc0db6db6db6e,
                0xbf9c526666666667,
                0xbf9b9fb6db6db6db,
                0xbf9b0a2762762763,
                0xbf9a715555555555,
                0xbf99d13b13b13b14,
                0xbf99455555555556,
                0xbf98acba2e8ba2e9,
                0xbf983d5555555555,
                0xbf97a851eb851eb7,
                0xbf9700ba2e8ba2e9,
                0xbf964c0000000000,
                0xbf959a0000000002,
                0xbf94f89d89d89d8a,
                0xbf9470b4b4b4b4b5,
                0xbf93e67627627626,
                0xbf936a0000000000,
                0xbf92e313b13b13b1,
                0xbf924d0d79435e51,
                0xbf918c6666666666,
                0xbf90ef4000000000,
                0xbf90480000000001,
                0xbf8fbf13b13b13b2,
                0xbf8ec0e38e38e38d,
                0xbf8da6d2d2d2d2d4,
                0xbf8cb24000000000,
                0xbf8b5fffffffffff,
                0xbf8a70d555555555,
                0xbf895a8ba2e8ba2e,
                0xbf886d4000000000,
                0xbf8766b851eb8520,
                0xbf86289249249249,
                0xbf85205555555555,
                0xbf83d9b13b13b13b,
                0xbf82b69d89d89d8a,
                0xbf81929bd37a6f4f,
                0xbf80268000000000,
                0xbf7dfe71c71c71c8,
                0xbf7c28aaaaaaaaab,
                0xbf794051eb851eb9,
                0xbf765a79e79e79e7,
                0xbf732f5555555555,
                0xbf70731111111111,
                0xbf6cd52d2d2d2d2d,
                0xbf67bcffffffffff,
                0xbf639f5e50d79436,
                0xbf5ecdddddddddde,
                0xbf55231745d1745d,
                0xbf488e4924924924,
                0xbf22fffffffffffe,
                0x3f3ed21642c8590b,
                0x3f54259999999999,
                0x3f5f25c000000000,
                0x3f63ff8000000000,
                0x3f69370f0f0f0f0f,
                0x3f6e2979435e50d7,
                0x3f715d999999999a,
                0x3f735a1861861862,
                0x3f76045555555555,
                0x3f7825a5a5a5a5a6,
                0x3f7a484000000000,
                0x3f7c193333333333,
                0x3f7ea35555555555,
                0x3f8076d2d2d2d2d3,
                0x3f81c12d2d2d2d2d,
                0x3f82a40000000001,
                0x3f83fd0000000000,
                0x3f85161af286bca2,
                0x3f86820000000001,
                0x3f87580000000001,
                0x3f888bffffffffff,
                0x3f89cd5555555555,
                0x3f8acb5e50d79437,
                0x3f8c0ba2e8ba2e8b,
                0x3f8d2671c71c71c8,
                0x3f8e56aaaaaaaaab,
                0x3f8f295555555556,
                0x3f9033cccccccccc,
                0x3f90b60000000000,
                0x3f9170cccccccccd,
                0x3f920f0000000000,
                0x3f92a2eeeeeeeeef,
                0x3f932a6666666666,
                0x3f93ba2e8ba2e8ba,
                0x3f94234000000001,
                0x3f94a3aaaaaaaaab,
                0x3f954ce38e38e38d,
                0x3f95cb9999999999,
                0x3f9653b13b13b13c,
                0x3f96db4b4b4b4b4b,
                0x3f97595555555555,
                0x3f97e1745d1745d1,
                0x3f98565555555555,
                0x3f98ed6db6db6db7,
                0x3f99731c71c71c72,
                0x3f99fed2d2d2d2d2,
                0x3f9a880000000000,
                0x3f9b27b13b13b13c,
                0x3f9bc89d89d89d89,
                0x3f9c5daaaaaaaaab,
                0x3f9cde2e8ba2e8ba,
                0x3f9d6c71c71c71c8,
                0x3f9e2d5555555555,
                0x3f9edd999999999a,
                0x3f9f791745d1745d,
                0x3fa01eaaaaaaaaab,
                0x3fa0753b13b13b15,
                0x3fa0c0b4b4b4b4b5,
                0x3fa13313b13b13b1,
                0x3fa185ddddddddde,
                0x3fa1c12d2d2d2d2d,
                0x3fa206eeeeeeeeee,
                0x3fa2618000000001,
                0x3fa2c2c000000000,
                0x3fa318db6db6db6d,
                0x3fa3634000000000,
                0x3fa3c70000000000,
                0x3fa4258e38e38e39,
                0x3fa477c3c3c3c3c3,
                0x3fa4c80000000000,
                0x3fa52d2492492492,
                0x3fa576c4ec4ec4ec,
                0x3fa5ca5555555555,
                0x3fa62c8000000000,
                0x3fa6a189d89d89d8,
                0x3fa71caaaaaaaaab,
                0x3fa7ad6969696969,
                0x3fa8138e38e38e39,
                0x3fa8820000000000,
                0x3fa8cac4ec4ec4ec,
                0x3fa9322e8ba2e8ba,
                0x3fa97c0000000000,
                0x3fa9e1c71c71c71c,
                0x3faa2638e38e38e4,
                0x3faa7f5555555555,
                0x3faae22762762762,
                0x3fab49dddddddddd,
                0x3fabc4ec4ec4ec4f,
                0x3fac188000000000,
                0x3fac7b0000000000,
                0x3facdb3333333333,
                0x3fad280000000000,
                0x3fae0b5555555555,
                0x3faea28000000000,
                0x3faf105d1745d175,
                0x3faf9b8e38e38e39,
                0x3fb0100000000000,
                0x3fb0480000000000,
                0x3fb071c71c71c71c,
                0x3fb0a00000000000,
                0x3fb1180000000000,
                0x3fb1489249249249,
                0x3fb1895555555555,
                0x3fb1e88000000000,
                0x3fb22e0000000000,
                0x3fb2878000000000,
                0x3fb2d00000000000,
                0x3fb2f8aaaaaaaaab,
                0x3fb33adb6db6db6e,
                0x3fb38a6666666666,
                0x3fb3ec0000000000,
                0x3fb4580000000000,
                0x3fb4b75555555555,
                0x3fb5400000000000,
                0x3fb5990000000000,
                0x3fb5c1999999999a,
                0x3fb5fe0000000000,
                0x3fb64d5555555555,
                0x3fb6810000000000,
                0x3fb7340000000000,
                0x3fb7a00000000000,
                0x3fb8200000000000,
                0x3fb97c0000000000,
                0x3fba600000000000,
            ],
        ); // 2553 distinct
        check_golden_generated(
            5,
            100000,
            16,
            16,
            &[
                0, 421, 723, 1148, 1512, 1993, 2616, 3696, 7372, 10271, 11263, 11885, 12316, 12676,
                13093, 13371,
            ],
            &[
                0xbff673ebf7fccb85,
                0xbff16dd80e3e64c7,
                0xbfeb98a8434e1f45,
                0xbfe593b8f4c73ee6,
                0xbfe039922a86f2c4,
                0xbfd650e2fc6346f7,
                0xbfc9f59b1d25bbc5,
                0xbfae5129356dbcb8,
                0x3fb4f218eed4ce0d,
                0x3fccb47339698bd4,
                0x3fd7d99555fabafa,
                0x3fe0e51bc5be71cf,
                0x3fe6384c0f1385d9,
                0x3fec23c6ddf09e39,
                0x3ff19f28e9976d56,
                0x3ff675add3c0ca4b,
            ],
        ); // 13773 distinct
        check_golden_generated(
            6,
            50000,
            22,
            8,
            &[0, 637, 1381, 2417, 5520, 9219, 10323, 11093],
            &[
                0xbf92b2a3e1e5132f,
                0xbf88479a821f6530,
                0xbf7c2a8c33fef05d,
                0xbf63a54e2ae17b39,
                0x3f5ffd345faaf63f,
                0x3f7a836e78648c3f,
                0x3f87ca8cf90b11d4,
                0x3f92a9882299a425,
            ],
        ); // 11757 distinct
        check_golden_generated(
            7,
            200,
            10,
            2,
            &[0, 98],
            &[0xc03fc1c5b3f5dc81, 0x403d5c66c9b26c9b],
        ); // 194 distinct
    }

    #[test]
    fn single_value_and_k_larger_than_n() {
        let c = optimal_kmeans_1d(&[2.5], &[7.0], 4);
        assert_eq!(c.labels, vec![0]);
        assert_eq!(c.centroids, vec![2.5]);
        let c = optimal_kmeans_1d(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0], 8);
        assert_eq!(c.labels, vec![0, 1, 2]);
        assert_eq!(c.centroids, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn large_variant_is_near_optimal_on_weight_like_data() {
        for (seed, k) in [(11u64, 16usize), (12, 4), (13, 64)] {
            let (x, w) = distinct_f16(seed, 200_000, 15);
            let exact = sse_1d(&x, &w, &optimal_kmeans_1d(&x, &w, k));
            let approx = sse_1d(&x, &w, &kmeans_1d_large(&x, &w, k, x.len() / 8));
            assert!(approx >= exact * (1.0 - 1e-12));
            assert!(approx <= exact * 1.0005, "k={k}: {approx} vs {exact}");
        }
    }

    proptest! {
        #[test]
        fn cost_equals_brute_force(
            raw in proptest::collection::vec((-1000i32..1000, 1u32..50), 1..40),
            k in 1usize..9,
        ) {
            let mut raw = raw;
            raw.sort_by_key(|p| p.0);
            raw.dedup_by_key(|p| p.0);
            let x: Vec<f64> = raw.iter().map(|p| p.0 as f64 / 64.0).collect();
            let w: Vec<f64> = raw.iter().map(|p| p.1 as f64).collect();
            let c = optimal_kmeans_1d(&x, &w, k);
            let want = brute_cost(&x, &w, k);
            let got = sse_1d(&x, &w, &c);
            prop_assert!((got - want).abs() <= 1e-9 * (1.0 + want.abs()), "got {got} want {want}");
            // Labels are contiguous and ascending.
            prop_assert!(c.labels.windows(2).all(|p| p[0] <= p[1]));
            // Lloyd's partition (the first penalty's estimate) is a partition: never below the
            // least SSE, never above one cluster's (zero weights included).
            let mut w0 = w.clone();
            w0[0] = 0.0;
            for w in [&w, &w0] {
                let pre = Prefix::new(&x, w);
                let lloyd = lloyd_sse(&x, &pre, k.min(x.len()));
                let (least, one) = (brute_cost(&x, w, k), pre.cost(0, x.len() - 1));
                prop_assert!(lloyd >= least - 1e-9 * (1.0 + least), "{lloyd} < {least}");
                prop_assert!(lloyd <= one + 1e-9 * (1.0 + one), "{lloyd} > {one}");
            }
        }

        /// Exact agreement with the reference, on inputs full of exact ties (equally spaced values
        /// with equal weights), near-ties and repeated values.
        #[test]
        fn matches_reference_dp(
            raw in proptest::collection::vec((0i32..60, 1u32..4), 1..90),
            spacing in prop_oneof![Just(1.0f64), Just(0.1), Just(1e-3), Just(3.0e-5)],
            k in 1usize..12,
            dedup in any::<bool>(),
        ) {
            let mut raw = raw;
            raw.sort_by_key(|p| p.0);
            if dedup {
                raw.dedup_by_key(|p| p.0);
            }
            let x: Vec<f64> = raw.iter().map(|p| p.0 as f64 * spacing - 0.7).collect();
            let w: Vec<f64> = raw.iter().map(|p| p.1 as f64).collect();
            let want = reference_kmeans_1d(&x, &w, k);
            let got = optimal_kmeans_1d(&x, &w, k);
            prop_assert!(same_or_tie(&got, &want, &x, &w).is_ok(), "{:?}", same_or_tie(&got, &want, &x, &w));
            let pre = Prefix::new(&x, &w);
            let kk = k.min(x.len());
            if x.len() > 2 * kk {
                if let Some(starts) = lagrangian_starts(&x, &w, &pre, kk) {
                    let got = backtrack(&x, &pre, kk, |layer, _| starts[layer] as usize);
                    prop_assert!(same_or_tie(&got, &want, &x, &w).is_ok(), "{:?}", same_or_tie(&got, &want, &x, &w));
                }
            }
        }

        #[test]
        fn approx_cbrt_is_close(mantissa in 1.0f64..2.0, exp in -300i32..300) {
            let x = mantissa * 2f64.powi(exp);
            let y = approx_cbrt(x);
            prop_assert!(((y * y * y - x) / x).abs() < 1e-14, "{x}: {y}");
        }

        /// Three identical far-apart clumps of `m` values: the least SSE is linear in k between 3
        /// and 3m (every extra cluster splits a clump the same way), so those k lie on one edge of
        /// the hull and only the search along the edge finds them.
        #[test]
        fn hull_edges_are_solved(m in 2usize..6, extra in 1usize..12, spacing in prop_oneof![Just(1.0f64), Just(0.125)]) {
            let mut x = Vec::new();
            for c in 0..3 {
                for v in 0..m {
                    x.push(c as f64 * 1000.0 + v as f64 * spacing);
                }
            }
            let w = vec![1.0; x.len()];
            let k = (3 + extra % (3 * m - 3)).min(x.len() / 2);
            let pre = Prefix::new(&x, &w);
            let starts = lagrangian_starts(&x, &w, &pre, k).expect("settles");
            let got = backtrack(&x, &pre, k, |layer, _| starts[layer] as usize);
            let want = brute_cost(&x, &w, k);
            let sse = sse_1d(&x, &w, &got);
            prop_assert!((sse - want).abs() <= 1e-9 * want.max(1e-300), "k={k}: {sse} vs {want}");
        }

        #[test]
        fn large_variant_is_close_to_optimal(
            raw in proptest::collection::vec((-4000i32..4000, 1u32..20), 20..300),
            k in 2usize..9,
        ) {
            let mut raw = raw;
            raw.sort_by_key(|p| p.0);
            raw.dedup_by_key(|p| p.0);
            let x: Vec<f64> = raw.iter().map(|p| p.0 as f64 / 64.0).collect();
            let w: Vec<f64> = raw.iter().map(|p| p.1 as f64).collect();
            let exact = sse_1d(&x, &w, &optimal_kmeans_1d(&x, &w, k));
            let approx = kmeans_1d_large(&x, &w, k, x.len() / 4 + 2);
            let got = sse_1d(&x, &w, &approx);
            prop_assert!(got >= exact * (1.0 - 1e-9) - 1e-9);
            prop_assert!(approx.labels.windows(2).all(|p| p[0] <= p[1]));
        }
    }
}
