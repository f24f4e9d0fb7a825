// headmap's fused statistics kernel for CPUs: one flash-style pass per layer that returns the
// attention output *and* the per-row sums the statistics need, so Q K^T and the exponentials are
// computed once. Compiled on first use by headmap.capture.native (torch's cpp_extension), with
// torch's own vectorized exp (Sleef, as torch.exp uses) and torch's BLAS entry point.
//
// Layout (float32, contiguous): q [H, N, D] already multiplied by the scale; kt [KV, D, Nk] (the
// keys transposed); v [KV, Nk, Dv] the values; track [N, J] key positions (-1: none) whose weight
// each row records; special [S] the special keys' positions (further arguments at fused_stats).
// Returns out [N, H, Dv] and sums [H, N, 6 + J]: the row max m, Z = sum e, sum e*s, sum e*|row - key|,
// sum e over special keys, the number of visible keys, then e at each tracked key, with e = exp(s - m)
// for the final m. Masks: the causal (key <= row) and sliding-window (key > row - window) flags, each
// row's key range (its text in a padded or packed batch) and, where the model passes one, a mask tensor.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;

// Tiles of 256 query rows x 512 keys: the scores (512 KB), the key and value tiles (128 KB each)
// and the output accumulator stay in a core's 2 MB L2. Measured for one SmolLM2-shaped layer (9
// heads, 3 KV heads, causal, 2 threads), seconds at 4096 / 8192 tokens: 128 x 1024: 0.29 / 1.21;
// 256 x 512: 0.21 / 0.84; 512 x 512: 0.20 / 0.71 (but half the tasks to share out); 256 x 256:
// 0.23 / 0.88; SDPA's own kernel: 0.15 / 0.57. HM_ROWS / HM_KEYS override them for such tests.
#ifndef HM_ROWS
#define HM_ROWS 256
#endif
#ifndef HM_KEYS
#define HM_KEYS 512
#endif
constexpr int64_t kRowBlock = HM_ROWS;
constexpr int64_t kKeyBlock = HM_KEYS;

// The BLAS that torch itself links (MKL in the x86 wheels) exports the Fortran sgemm_; calling it
// directly skips building three tensor views and a dispatch per tile (thousands per layer). Weak,
// so that a torch without it still loads this kernel and takes torch's matrix product instead.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

// MKL's per-thread thread count (the C entry point; the lower-case symbol is the Fortran one): a call small enough to run on this thread alone must also keep MKL
// from waking its own pool for every tiny product (measured: 0.3 ms against 3 ms for a packed batch of
// short texts on 2 threads). Weak, as sgemm_, for a torch built on another BLAS.
extern "C" int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));

// Row-major C [m, n] (+)= A [m, k] B [k, n]: column-major C^T = B^T A^T for the Fortran BLAS.
inline void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                 bool accumulate, float* c, int64_t ldc) {
  if (sgemm_ != nullptr) {
    const char no = 'N';
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
    const int LA = static_cast<int>(ldb), LB = static_cast<int>(lda), LC = static_cast<int>(ldc);
    const float one = 1.f, beta = accumulate ? 1.f : 0.f;
    sgemm_(&no, &no, &M, &N, &K, &one, b, &LA, a, &LB, &beta, c, &LC);
    return;
  }
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  auto A = torch::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, opts);
  auto B = torch::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, opts);
  auto C = torch::from_blob(c, {m, n}, {ldc, 1}, opts);
  if (accumulate) {
    at::addmm_out(C, C, A, B);
  } else {
    at::mm_out(C, A, B);
  }
}

inline float lane_max(const Vec& v) {
  float lanes[Vec::size()];
  v.store(lanes);
  return *std::max_element(lanes, lanes + Vec::size());
}

inline float lane_sum(const Vec& v) {
  float lanes[Vec::size()];
  v.store(lanes);
  float total = 0.f;
  for (int64_t i = 0; i < Vec::size(); ++i) total += lanes[i];
  return total;
}

inline float row_max(const float* s, int64_t lo, int64_t hi) {
  int64_t k = lo;
  Vec best(std::numeric_limits<float>::lowest());
  for (; k + Vec::size() <= hi; k += Vec::size()) best = at::vec::maximum(best, Vec::loadu(s + k));
  float m = lane_max(best);
  for (; k < hi; ++k) m = std::max(m, s[k]);
  return m;
}

// sum_c e[c] * |here - c| over [lo, hi): the distance of keys on both sides (keys unpadded, so a
// key's text position is its index).
inline float abs_distance(const float* e, int64_t lo, int64_t hi, float here) {
  int64_t c = lo;
  Vec acc(0.f), vh(here), step(static_cast<float>(Vec::size()));
  float base[Vec::size()];
  for (int64_t i = 0; i < Vec::size(); ++i) base[i] = static_cast<float>(lo + i);
  Vec pos = Vec::loadu(base);
  for (; c + Vec::size() <= hi; c += Vec::size()) {
    acc = at::vec::fmadd(Vec::loadu(e + c), (vh - pos).abs(), acc);
    pos = pos + step;
  }
  float total = lane_sum(acc);
  for (; c < hi; ++c) total += e[c] * std::fabs(here - static_cast<float>(c));
  return total;
}

// s[lo:hi] <- exp(s - m) in place; returns (sum e, sum e * s) over that range.
inline std::pair<float, float> exp_sums(float* s, int64_t lo, int64_t hi, float m) {
  int64_t k = lo;
  Vec vm(m), vz(0.f), vw(0.f);
  for (; k + Vec::size() <= hi; k += Vec::size()) {
    Vec x = Vec::loadu(s + k);
    Vec e = (x - vm).exp();
    vz = vz + e;
    vw = at::vec::fmadd(e, x, vw);
    e.store(s + k);
  }
  float z = lane_sum(vz);
  float w = lane_sum(vw);
  for (; k < hi; ++k) {
    float e = std::exp(s[k] - m);
    z += e;
    w += e * s[k];
    s[k] = e;
  }
  return {z, w};
}

// s[lo:hi] <- cap * tanh(s / cap), the softcap some models (Gemma 2) put on their logits.
inline void softcap_range(float* s, int64_t lo, int64_t hi, float cap) {
  int64_t k = lo;
  const Vec inv(1.f / cap), vc(cap);
  for (; k + Vec::size() <= hi; k += Vec::size()) ((Vec::loadu(s + k) * inv).tanh() * vc).store(s + k);
  for (; k < hi; ++k) s[k] = cap * std::tanh(s[k] / cap);
}

// One row of the model's mask over a tile: additive float (``f``) or boolean (``b``: true = may attend,
// read in place, so a long text's N x N boolean mask is never widened to floats), or none.
struct MaskRow {
  const float* f = nullptr;
  const bool* b = nullptr;
  MaskRow at(int64_t offset) const { return {f ? f + offset : nullptr, b ? b + offset : nullptr}; }
};

// s[lo:hi] <- the masked scores, as the exact path applies a mask: max(s + mask, lowest) for an
// additive one, lowest where a boolean one says no; returns how many keys the mask leaves visible.
inline int64_t mask_range(float* s, const MaskRow& mask, int64_t lo, int64_t hi) {
  const float lowest = std::numeric_limits<float>::lowest();
  int64_t visible = 0;
  if (mask.b != nullptr) {
    for (int64_t k = lo; k < hi; ++k) {
      if (!mask.b[k]) s[k] = lowest;
      visible += mask.b[k];
    }
    return visible;
  }
  for (int64_t k = lo; k < hi; ++k) {
    s[k] = std::max(s[k] + mask.f[k], lowest);
    visible += mask.f[k] > lowest / 2;
  }
  return visible;
}

// The scores of one tile after everything the model adds to Q K^T: softcap, then the mask.
inline int64_t finish_scores(float* s, const MaskRow& mask, int64_t lo, int64_t hi, float cap) {
  if (cap > 0.f) softcap_range(s, lo, hi, cap);
  return mask.f != nullptr || mask.b != nullptr ? mask_range(s, mask, lo, hi) : hi - lo;
}

}  // namespace

// Arguments beyond the layout above: key_lo / key_hi [N] the range of keys each row may see before
// the causal and window flags (its own text: a padded or packed batch's texts are contiguous runs of
// keys); mask [Hm, N, Nk] an additive float or a boolean mask (Hm 1 or H; empty: none); softcap (<= 0: none);
// maps [H, N, Wm] (empty: none) receives each row's normalized weights over its keys, key_lo[r] first.
std::vector<torch::Tensor> fused_stats(torch::Tensor q, torch::Tensor k, torch::Tensor vaug, bool causal,
                                       int64_t window, torch::Tensor track, torch::Tensor special,
                                       torch::Tensor key_lo, torch::Tensor key_hi, torch::Tensor mask,
                                       double softcap, torch::Tensor maps) {
  TORCH_CHECK(q.dtype() == torch::kFloat32 && k.dtype() == torch::kFloat32 && vaug.dtype() == torch::kFloat32,
              "fused_stats takes float32 tensors");
  q = q.contiguous();
  k = k.contiguous();
  vaug = vaug.contiguous();
  track = track.to(torch::kInt64).contiguous();
  special = special.to(torch::kInt64).contiguous();
  key_lo = key_lo.to(torch::kInt64).contiguous();
  key_hi = key_hi.to(torch::kInt64).contiguous();
  const int64_t H = q.size(0), N = q.size(1), D = q.size(2);
  const int64_t KV = k.size(0), Nk = k.size(2), V1 = vaug.size(2), Dv = V1, J = track.size(1);
  const int64_t rep = H / KV, W = 6 + J;
  const bool masked = mask.numel() > 0, keep = maps.numel() > 0;
  if (masked) {
    if (mask.scalar_type() != torch::kBool) mask = mask.to(torch::kFloat32);
    mask = mask.contiguous();
    TORCH_CHECK(mask.dim() == 3 && (mask.size(0) == 1 || mask.size(0) == H) && mask.size(1) == N &&
                    mask.size(2) == Nk,
                "fused_stats: the mask must be [1 or heads, queries, keys]");
  }
  const int64_t Hm = masked ? mask.size(0) : 0, Wm = keep ? maps.size(2) : 0;
  TORCH_CHECK(!keep || (maps.dtype() == torch::kFloat32 && maps.is_contiguous() && maps.size(0) == H &&
                        maps.size(1) == N),
              "fused_stats: maps must be a contiguous float32 [heads, queries, width] tensor");
  auto out = torch::empty({N, H, Dv}, q.options());
  auto sums = torch::empty({H, N, W}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = vaug.data_ptr<float>();
  const int64_t* tp = track.data_ptr<int64_t>();
  const int64_t* sp = special.data_ptr<int64_t>();
  const int64_t* klo = key_lo.data_ptr<int64_t>();
  const int64_t* khi = key_hi.data_ptr<int64_t>();
  const bool boolean = masked && mask.scalar_type() == torch::kBool;
  const float* mp = masked && !boolean ? mask.data_ptr<float>() : nullptr;
  const bool* mbp = boolean ? mask.data_ptr<bool>() : nullptr;
  float* wp = keep ? maps.data_ptr<float>() : nullptr;
  const int64_t S = special.size(0);
  const float cap = static_cast<float>(softcap);
  float* op = out.data_ptr<float>();
  float* rp = sums.data_ptr<float>();
  const float lowest = std::numeric_limits<float>::lowest();
  // Blocks of rows: at most kRowBlock rows, and never across texts (a new key range starts a new
  // block), so a packed batch of short texts computes each text's small square, not the whole one.
  std::vector<int64_t> starts;
  for (int64_t r = 0; r < N; ++r) {
    if (starts.empty() || r - starts.back() >= kRowBlock || klo[r] != klo[r - 1] || khi[r] != khi[r - 1])
      starts.push_back(r);
  }
  starts.push_back(N);
  const int64_t blocks = static_cast<int64_t>(starts.size()) - 1;
  // Buffers sized for the largest tile this call can make (small texts need small buffers).
  const int64_t tile_keys = std::min<int64_t>(kKeyBlock, std::max<int64_t>(Nk, 1));
  // The keys row r may see: its text's range, cut by the causal and window flags.
  auto row_lo = [&](int64_t r) { return window > 0 ? std::max(klo[r], r - window + 1) : klo[r]; };
  auto row_hi = [&](int64_t r) { return causal ? std::min(khi[r], r + 1) : khi[r]; };

  // The keys a block's rows may see, [first, last), the same for every head: worked out once. From them,
  // the work of the whole call in score entries: a small call (a packed batch of short texts) runs
  // on one thread, where waking a thread pool would cost more than the scores.
  std::vector<int64_t> key_first(blocks, Nk), key_last(blocks, 0);
  int64_t work = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t r = starts[b]; r < starts[b + 1]; ++r) {
      key_first[b] = std::min(key_first[b], std::max<int64_t>(0, row_lo(r)));
      key_last[b] = std::max(key_last[b], std::min(Nk, row_hi(r)));
    }
    work += (starts[b + 1] - starts[b]) * std::max<int64_t>(0, key_last[b] - key_first[b]) * (D + V1);
  }
  // Row r's visible keys within the tile of keys [t0, t0 + T), relative to t0 (empty: hi <= lo).
  auto tile_cut = [&](int64_t r, int64_t t0, int64_t T) {
    return std::pair<int64_t, int64_t>{std::max<int64_t>(row_lo(r) - t0, 0),
                                       std::min<int64_t>(row_hi(r) - t0, T)};
  };
  // (ATen runs the body inline only when the range is below the grain.)
  const bool small = work * H < (int64_t{1} << 21);
  const int64_t grain = small ? H * blocks + 1 : 1;
  const int previous = small && MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(1) : -1;
  at::parallel_for(0, H * blocks, grain, [&](int64_t begin, int64_t end) {
    const int64_t tile_rows = std::min<int64_t>(kRowBlock, N);
    std::vector<float> scores(tile_rows * tile_keys), acc(tile_rows * V1), rows(tile_rows * W);
    for (int64_t task = begin; task < end; ++task) {
      // Threads take contiguous ranges of tasks, and under a causal mask a block's cost grows with
      // its index: each head's blocks go first, last, second, second to last..., so that a range
      // cut in the middle of a head is as costly as the rest (5% of a layer at 8192 tokens).
      const int64_t h = task / blocks, turn = task % blocks;
      const int64_t block = turn % 2 == 0 ? turn / 2 : blocks - 1 - turn / 2;
      const int64_t r0 = starts[block], r1 = starts[block + 1];
      const int64_t n = r1 - r0, g = h / rep;
      const float* qb = qp + (h * N + r0) * D;
      const float* kg = kp + g * D * Nk;
      const float* vg = vp + g * Nk * V1;
      const int64_t mask_head = (Hm > 1 ? h : 0) * N * Nk;
      const MaskRow mh{mp ? mp + mask_head : nullptr, mbp ? mbp + mask_head : nullptr};
      std::fill(acc.begin(), acc.begin() + n * V1, 0.f);
      const int64_t first = key_first[block], last = key_last[block];
      for (int64_t i = 0; i < n; ++i) {
        float* row = rows.data() + i * W;
        std::fill(row, row + W, 0.f);
        row[0] = lowest;
      }
      for (int64_t t0 = first; t0 < last; t0 += kKeyBlock) {
        const int64_t t1 = std::min(last, t0 + kKeyBlock), T = t1 - t0;
        // scores [n, T] = Q_block [n, D] @ K^T tile [D, T] (kt is [D, Nk] per KV head).
        gemm(n, T, D, qb, D, kg + t0, Nk, false, scores.data(), T);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t r = r0 + i;
          float* s = scores.data() + i * T;
          float* row = rows.data() + i * W;
          const auto [lo, hi] = tile_cut(r, t0, T);
          if (hi <= lo) {  // nothing visible in this tile: it adds nothing to the row
            std::fill(s, s + T, 0.f);
            continue;
          }
          row[5] += static_cast<float>(finish_scores(s, mh.at(r * Nk + t0), lo, hi, cap));
          const float m = std::max(row[0], row_max(s, lo, hi));
          const float alpha = row[0] == lowest ? 0.f : std::exp(row[0] - m);
          auto [z, w] = exp_sums(s, lo, hi, m);
          std::fill(s, s + lo, 0.f);
          std::fill(s + hi, s + T, 0.f);
          float spec = 0.f;
          for (int64_t j = 0; j < S; ++j) {  // the few special keys, not a pass over the tile
            const int64_t c = sp[j] - t0;
            if (c >= lo && c < hi) spec += s[c];
          }
          // Keys of the row's own text only, so |r - c| is the distance in the text.
          const float dist = abs_distance(s, lo, hi, static_cast<float>(r - t0));
          row[0] = m;
          row[3] = row[3] * alpha + dist;
          row[1] = row[1] * alpha + z;
          row[2] = row[2] * alpha + w;
          row[4] = row[4] * alpha + spec;
          for (int64_t j = 0; j < J; ++j) {
            const int64_t key = tp[r * J + j];
            row[6 + j] *= alpha;
            if (key >= t0 + lo && key < t0 + hi) row[6 + j] = s[key - t0];
          }
          float* a = acc.data() + i * V1;
          for (int64_t c = 0; c < V1; ++c) a[c] *= alpha;
        }
        // acc [n, V1] += E [n, T] @ vaug tile [T, V1].
        gemm(n, V1, T, scores.data(), T, vg + t0 * V1, V1, true, acc.data(), V1);
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = r0 + i;
        float* row = rows.data() + i * W;
        const float* a = acc.data() + i * V1;
        const float z = row[1] > 0.f ? row[1] : 1.f;
        float* o = op + (r * H + h) * Dv;
        for (int64_t c = 0; c < Dv; ++c) o[c] = a[c] / z;
        std::copy(row, row + W, rp + (h * N + r) * W);
      }
      if (!keep) continue;
      // The weights themselves, where asked (head distances need whole rows): a second pass over
      // the tiles with the row's final max and normalizer, so nothing is rescaled after the fact.
      for (int64_t t0 = first; t0 < last; t0 += kKeyBlock) {
        const int64_t t1 = std::min(last, t0 + kKeyBlock), T = t1 - t0;
        gemm(n, T, D, qb, D, kg + t0, Nk, false, scores.data(), T);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t r = r0 + i;
          float* s = scores.data() + i * T;
          const float* row = rows.data() + i * W;
          const auto [lo, visible_hi] = tile_cut(r, t0, T);
          const int64_t hi = std::min<int64_t>(visible_hi, klo[r] + Wm - t0);
          if (hi <= lo) continue;
          finish_scores(s, mh.at(r * Nk + t0), lo, hi, cap);
          const float m = row[0], inv = row[1] > 0.f ? 1.f / row[1] : 0.f;
          float* dst = wp + (h * N + r) * Wm + (t0 - klo[r]);
          for (int64_t c = lo; c < hi; ++c) dst[c] = std::exp(s[c] - m) * inv;
        }
      }
    }
  });
  if (previous >= 0) MKL_Set_Num_Threads_Local(previous);
  return {out, sums};
}

torch::Tensor js_pairs(torch::Tensor maps, torch::Tensor widths);  // kernels/js_pairs.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_stats", &fused_stats, "attention output and per-row sums in one pass (headmap)");
  m.def("js_pairs", &js_pairs, "Jensen-Shannon sums over rows of every pair of heads (headmap)");
}
