// Balanced hierarchical binary clustering of FSLA queries on the CPU, one fused pass per row.
//
// The same algorithm as boat_mm/models/layers/feature_space_attention.py (_split_levels), written so that each
// split runs on a group that sits in the CPU cache: groups are split depth first, so after the first
// levels every subtree is a few hundred KB. The torch version runs ~40 small kernels per level over the
// whole tensor; this one reads every query a few times per level from cache and sorts with std::sort.
//
// Semantics (identical to the torch version, up to floating-point summation order):
//  - a group of n slots holds `pads` pad slots at its end (never in a centroid, always sorted last);
//  - initial centroids: normalised means of the real q in the first and the second half of the slots;
//  - `iters` soft k-means steps: a0 = sigmoid(T * (c0 - c1).q / |q|), a1 = 1 - a0 (as sigmoid(-x)),
//    c_j = normalise(sum_i a_j(i) q_i) over the real slots;
//  - ratio = (cos(q, c0) + 1) / (cos(q, c1) + 1), NaN -> +inf; tokens ordered by ratio ascending, ties
//    kept in their current order (a stable sort); child A = the first real_a real tokens then pad_a pads,
//    child B likewise, where pad_a = ceil(pads / 2), pad_b = floor(pads / 2), each child n / 2 slots.
//
// Only *which* tokens fall in each part is ever used (the children; their halves, which seed the next
// split's centroids; at the last level the `overlap` tokens next to the split point), so instead of a
// full sort every level does O(n) partitions (std::nth_element). A token's "current order" is the
// order of the previous split, i.e. its history of ratios compared level by level back to the token
// index, so ties are broken exactly as the stable sort breaks them, without the sorted order: every
// slot carries its ratio history along with its query. Within a leaf cluster the token order is not
// sorted (the attention does not depend on it); the torch version's leaves are.
//
// Built on first use by boat_mm/models/layers/native_clustering.py (g++ -O3, no torch headers) and called
// through ctypes; plain C entry points below.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

namespace {

constexpr int kLanes = 8;  // independent partial sums: lets the compiler use one SIMD register

template <typename T>
inline T dot(const T* a, const T* b, int64_t d) {
  T acc[kLanes] = {0};
  int64_t k = 0;
  for (; k + kLanes <= d; k += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[k + j] * b[k + j];
  T total = 0;
  for (int j = 0; j < kLanes; ++j) total += acc[j];
  for (; k < d; ++k) total += a[k] * b[k];
  return total;
}

template <typename T>
inline void normalize(T* v, int64_t d, T eps) {  // as torch.nn.functional.normalize
  T norm = std::sqrt(dot(v, v, d));
  T scale = T(1) / std::max(norm, eps);
  for (int64_t k = 0; k < d; ++k) v[k] *= scale;
}

template <typename T>
struct Row {
  // One (image, head) row, reordered in place split by split: q (slots x d), its 1/|q|, the slot ->
  // token map, and every slot's ratios at the levels so far (slots x levels).
  T* q;
  T* inv_norm;
  int64_t* perm;
  T* history;
};

// A slot of the group being split with its ratio at this level (compared inline; the ratio history is
// only read on an exact tie).
template <typename T>
struct RankedSlot {
  T ratio;
  uint32_t slot;
};

// Per-thread scratch, sized for the largest group a thread splits (left uninitialised: always written
// before it is read).
template <typename T>
struct Workspace {
  std::unique_ptr<T[]> q, inv_norm, history;
  std::unique_ptr<int64_t[]> perm;
  std::unique_ptr<RankedSlot<T>[]> order;  // the group being split, partitioned by rank
  std::vector<T> c0, c1, diff, s0, s1;
  void reserve(int64_t slots, int64_t d, int64_t levels) {
    q.reset(new T[slots * d]); inv_norm.reset(new T[slots]); perm.reset(new int64_t[slots]);
    order.reset(new RankedSlot<T>[slots]); history.reset(new T[slots * std::max<int64_t>(levels, 1)]);
    c0.resize(d); c1.resize(d); diff.resize(d); s0.resize(d); s1.resize(d);
  }
};

template <typename T>
struct Clustering {
  int64_t d, levels, iters, overlap;
  T temperature, eps;

  using Entry = RankedSlot<T>;

  // Strict order at `level`: ratio at this level, then at each earlier level (the order the group was
  // in), then the token index (raster order, the order before any split).
  struct RankLess {
    const T* history;
    const int64_t* perm;
    int64_t levels, level;
    bool operator()(const Entry& a, const Entry& b) const {
      if (a.ratio != b.ratio) return a.ratio < b.ratio;
      for (int64_t l = level - 1; l >= 0; --l) {
        const T ra = history[a.slot * levels + l], rb = history[b.slot * levels + l];
        if (ra != rb) return ra < rb;
      }
      return perm[a.slot] < perm[b.slot];
    }
  };

  // Put the `k` lowest-ranked of order[first, last) in front (no-op when the cut is at an end).
  static void partition_at(Entry* order, int64_t first, int64_t k, int64_t last, const RankLess& less) {
    if (k > first && k < last) std::nth_element(order + first, order + k, order + last, less);
  }

  // Split the group of n slots at `lo` (pads at its end) and recurse to `stop_level`.
  void split(Row<T> row, int64_t lo, int64_t n, int64_t pads, int64_t level, int64_t stop_level,
             Workspace<T>& ws) const {
    if (level >= stop_level) return;
    const int64_t real = n - pads, half = n / 2;
    const int64_t pad_a = (pads + 1) / 2, pad_b = pads / 2;
    const int64_t real_a = half - pad_a;
    T* q = row.q + lo * d;
    T* inv = row.inv_norm + lo;
    T* c0 = ws.c0.data(); T* c1 = ws.c1.data(); T* diff = ws.diff.data();
    T* s0 = ws.s0.data(); T* s1 = ws.s1.data();

    // Initial centroids: means of the real slots in each half.
    std::fill(c0, c0 + d, T(0)); std::fill(c1, c1 + d, T(0));
    const int64_t count0 = std::min(half, real), count1 = std::max<int64_t>(0, real - half);
    for (int64_t i = 0; i < count0; ++i) for (int64_t k = 0; k < d; ++k) c0[k] += q[i * d + k];
    for (int64_t i = half; i < half + count1; ++i) for (int64_t k = 0; k < d; ++k) c1[k] += q[i * d + k];
    const T w0 = T(1) / T(std::max<int64_t>(count0, 1)), w1 = T(1) / T(std::max<int64_t>(count1, 1));
    for (int64_t k = 0; k < d; ++k) { c0[k] *= w0; c1[k] *= w1; }
    normalize(c0, d, eps); normalize(c1, d, eps);

    for (int64_t it = 0; it < iters; ++it) {
      for (int64_t k = 0; k < d; ++k) diff[k] = c0[k] - c1[k];
      std::fill(s0, s0 + d, T(0)); std::fill(s1, s1 + d, T(0));
      for (int64_t i = 0; i < real; ++i) {
        const T* qi = q + i * d;
        const T logit = temperature * dot(diff, qi, d) * inv[i];
        // sigmoid(x) and sigmoid(-x) from one exp of -|x| (never overflows).
        const T e = std::exp(-std::fabs(logit)), high = T(1) / (T(1) + e), low = e * high;
        const bool positive = logit >= T(0);
        const T a0 = positive ? high : low, a1 = positive ? low : high;
        for (int64_t k = 0; k < d; ++k) { s0[k] += a0 * qi[k]; s1[k] += a1 * qi[k]; }
      }
      std::copy(s0, s0 + d, c0); std::copy(s1, s1 + d, c1);
      normalize(c0, d, eps); normalize(c1, d, eps);
    }

    T* history = row.history + lo * levels;
    Entry* order = ws.order.get();
    for (int64_t i = 0; i < real; ++i) {
      const T* qi = q + i * d;
      T r = (dot(c0, qi, d) * inv[i] + T(1)) / (dot(c1, qi, d) * inv[i] + T(1));
      r = std::isnan(r) ? std::numeric_limits<T>::infinity() : r;
      history[i * levels + level] = r;
      order[i] = Entry{r, static_cast<uint32_t>(i)};
    }
    const RankLess less{history, row.perm + lo, levels, level};
    const int64_t real_b = real - real_a;
    partition_at(order, 0, real_a, real, less);  // child A | child B
    if (level + 1 < levels) {  // the halves of each child seed its split's centroids
      const int64_t quarter = half / 2;
      partition_at(order, 0, quarter, real_a, less);
      partition_at(order, real_a, real_a + quarter, real, less);
    } else if (overlap > 0) {  // A's last `overlap` real tokens and B's first: the borrowed keys
      partition_at(order, 0, real_a - std::min(overlap, real_a), real_a, less);
      partition_at(order, real_a, real_a + std::min(overlap, real_b), real, less);
    }

    // New layout: A's real tokens, A's pads, B's real tokens, B's pads (pads in their current order).
    int64_t* perm = row.perm + lo;
    T* q_new = ws.q.get(); T* inv_new = ws.inv_norm.get(); int64_t* perm_new = ws.perm.get();
    T* history_new = ws.history.get();
    auto place = [&](int64_t dst, int64_t src) {
      std::memcpy(q_new + dst * d, q + src * d, sizeof(T) * d);
      std::memcpy(history_new + dst * levels, history + src * levels, sizeof(T) * (level + 1));
      inv_new[dst] = inv[src]; perm_new[dst] = perm[src];
    };
    int64_t dst = 0;
    for (int64_t i = 0; i < real_a; ++i) place(dst++, order[i].slot);
    for (int64_t p = 0; p < pad_a; ++p) place(dst++, real + p);
    for (int64_t i = real_a; i < real; ++i) place(dst++, order[i].slot);
    for (int64_t p = pad_a; p < pads; ++p) place(dst++, real + p);
    std::memcpy(q, q_new, sizeof(T) * n * d);
    std::memcpy(inv, inv_new, sizeof(T) * n);
    std::memcpy(perm, perm_new, sizeof(int64_t) * n);
    std::memcpy(history, history_new, sizeof(T) * n * levels);

    split(row, lo, half, pad_a, level + 1, stop_level, ws);
    split(row, lo + half, half, pad_b, level + 1, stop_level, ws);
  }
};

// Pad count of group `index` at `level`, following the same halving as the splits.
int64_t group_pads(int64_t pads, int64_t level, int64_t index) {
  for (int64_t l = level - 1; l >= 0; --l) {
    const bool second = (index >> l) & 1;
    pads = second ? pads / 2 : (pads + 1) / 2;
  }
  return pads;
}

template <typename T>
int cluster(T* q, int64_t rows, int64_t slots, int64_t d, int64_t levels, int64_t pads, int64_t iters,
            int64_t overlap, double temperature, double eps, T* inv_norm, int64_t* perm, int64_t num_threads) {
  if (rows < 0 || slots < 1 || d < 1 || levels < 0 || levels > 31 || pads < 0 || pads >= slots ||
      iters < 0 || overlap < 0 || slots >= (int64_t(1) << 32))
    return 1;
  if ((slots >> levels) << levels != slots) return 2;
  const Clustering<T> algo{d, levels, iters, overlap, static_cast<T>(temperature), static_cast<T>(eps)};
  std::unique_ptr<T[]> history(new T[rows * slots * std::max<int64_t>(levels, 1)]);
  // Phase 1 splits the top `shared` levels of each row; phase 2 finishes the 2**shared subtrees of all
  // rows as independent work items, so threads stay busy even with few rows.
  const int64_t threads = std::max<int64_t>(1, num_threads);
  int64_t shared = 0;
  while (shared < levels && (rows << shared) < 4 * threads) ++shared;
  // OpenMP, not std::thread: torch's own OpenMP workers spin for a while after each torch op, and
  // sharing their runtime (libgomp) hands the cores over instead of competing with them.
  auto run = [&](int64_t items, int64_t workspace_slots, auto&& work) {
    const int count = static_cast<int>(std::max<int64_t>(1, std::min(threads, items)));
#pragma omp parallel num_threads(count)
    {
      Workspace<T> ws;
      if (workspace_slots > 0) ws.reserve(workspace_slots, d, levels);
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < items; ++item) work(item, ws);
    }
  };
  auto row_at = [&](int64_t r) {
    return Row<T>{q + r * slots * d, inv_norm + r * slots, perm + r * slots, history.get() + r * slots * levels};
  };
  run(rows, 0, [&](int64_t r, Workspace<T>&) {
    for (int64_t i = 0; i < slots; ++i) {
      perm[r * slots + i] = i;
      const T* qi = q + (r * slots + i) * d;
      inv_norm[r * slots + i] = T(1) / std::max(std::sqrt(dot(qi, qi, d)), algo.eps);
    }
  });
  if (shared > 0)
    run(rows, slots, [&](int64_t r, Workspace<T>& ws) { algo.split(row_at(r), 0, slots, pads, 0, shared, ws); });
  const int64_t subtrees = int64_t(1) << shared, group = slots >> shared;
  run(rows * subtrees, group, [&](int64_t item, Workspace<T>& ws) {
    const int64_t r = item / subtrees, g = item % subtrees;
    algo.split(row_at(r), g * group, group, group_pads(pads, shared, g), shared, levels, ws);
  });
  return 0;
}

}  // namespace

extern "C" {
// q: (rows, slots, d) contiguous, reordered in place (scratch); inv_norm: (rows, slots) scratch;
// perm: (rows, slots) output, perm[r, slot] = the slot's token (values >= slots - pads are pads);
// overlap: keys a leaf borrows from its sibling (only their placement depends on it).
// Returns 0 on success, non-zero on invalid arguments.
int boat_cluster_f32(float* q, int64_t rows, int64_t slots, int64_t d, int64_t levels, int64_t pads,
                     int64_t iters, int64_t overlap, double temperature, double eps, float* inv_norm,
                     int64_t* perm, int64_t num_threads) {
  return cluster<float>(q, rows, slots, d, levels, pads, iters, overlap, temperature, eps, inv_norm, perm,
                        num_threads);
}

int boat_cluster_f64(double* q, int64_t rows, int64_t slots, int64_t d, int64_t levels, int64_t pads,
                     int64_t iters, int64_t overlap, double temperature, double eps, double* inv_norm,
                     int64_t* perm, int64_t num_threads) {
  return cluster<double>(q, rows, slots, d, levels, pads, iters, overlap, temperature, eps, inv_norm, perm,
                         num_threads);
}
}
