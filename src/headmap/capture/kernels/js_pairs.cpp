// headmap's head-distance kernel for CPUs: for every pair of heads, the sum over rows of the
// Jensen-Shannon divergence (natural log) between their rows, JS(p, q) = H(m) - (H(p) + H(q)) / 2
// with m = (p + q) / 2 and 0 log 0 = 0, each row's value clamped at >= 0 against rounding. Compiled
// into the module of fused_stats.cpp (which binds it) by headmap.capture.native, with Sleef's
// vectorized log (the library torch.log uses).
//
// Layout: maps [H, R, W] float32, row r a distribution over its first widths[r] entries (what lies
// beyond is ignored); widths [R] int64. Rows may come from many texts (a packed batch): the result,
// float64 [H, H], symmetric with a zero diagonal, is the plain sum over all rows.
//
// Shape of the computation, and why. The cost is one log per (pair, row, visible key) - m log m
// does not factor per head - so the kernel is built around that loop:
//  - a row's trailing keys that no head weighs are dropped (they add exactly 0): causal maps passed
//    whole cost what their visible triangle costs;
//  - rows are sorted by width and packed per head in blocks of one vector's lanes (16 rows with
//    AVX-512), key-major [key][lane], zeros beyond a row's width: one vector holds one key of 16
//    rows, a row's sum builds up in its own lane (no horizontal sums), and sorted widths leave few
//    lanes idle even for causal rows 1..15 keys wide (a row per vector would idle half of them);
//  - p log p is computed once per (head, row, key) and stored next to p, and each term is summed
//    as (p log p + q log q) / 2 - m log m, where it is >= m / 8, or else as its series in
//    d = (p - q) / (p + q), so that near-identical heads do not lose their distance to
//    cancellation (see js_terms);
//  - threads share out tiles of 16 x 16 heads (at::parallel_for); a tile walks the packed keys in
//    chunks of 64 (a longer block is split, its partial sums carried), so its heads' data stay in
//    cache (32 heads x 8 KB) whatever the texts' lengths. Tiles of 8 or 32 and chunks of 32 or 128
//    measured the same: the loop is bound by the log, not by memory;
//  - float32 within a row (keys summed in float32 for up to 64 keys at a time, then float64), and
//    float64 across rows.
// Accuracy against float64, per pair sum: at most 4e-8 of it for distinct heads (1.8e-6 on sums
// of about 50 over the 120 rows below, 1.7e-5 on about 540 over the 960), the same order as
// rounding the maps' entries to float32 moves the float64 sums by; 3e-8 of it for near-identical
// heads (where the plain difference was 6% off); exactly 0 for identical ones (tests in
// tests/test_diversity.py). The pair loop's 3.5-ulp log measured no different from the 1-ulp one.
// Seconds for 270 heads (SmolLM2), causal, 8 texts packed; torch at 2 threads on a 2-core AMD EPYC
// (AVX-512) that other work kept busy (1 thread measured the same; the old path took 3x as long
// when the machine was busier); old: the float64 torch path, per text, as the report ran it:
//   8 x 15 tokens (rows 120, width 15):  old 0.335;  this kernel 0.033 (0.059 for 8 calls of one
//                                        text, its causal maps whole: a block of 15 rows per text)
//   8 x 120 tokens (rows 960, width 120): old 21.9;  this kernel 1.79 (1.92 for 8 calls)
// That is about 14 ns per vector of 16 terms (133 M vectors for the second) on the one core there
// was; the log is the larger part (without it the loop took a quarter of the time).
// HM_JS_TILE / HM_JS_CHUNK override the tile and chunk sizes for such tests.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <numeric>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

#ifndef HM_JS_TILE
#define HM_JS_TILE 16
#endif
#ifndef HM_JS_CHUNK
#define HM_JS_CHUNK 64
#endif
constexpr int64_t kTile = HM_JS_TILE;        // heads per side of a tile of pairs
constexpr int64_t kChunkKeys = HM_JS_CHUNK;  // packed keys per head per chunk

// Rows sorted by width and packed per head in blocks of kLanes rows: for each key of a block, its
// kLanes weights p, then their p log p (one stream for the pair loop to read).
struct Packed {
  std::vector<int64_t> offset;  // per block: its first float in a head's packed data
  std::vector<int64_t> keys;    // per block: its widest row's width (its key count)
  int64_t stride = 0;           // floats per head
  torch::Tensor data;           // [H, stride] float32
};

// A stretch [k0, k1) of one block's keys that a chunk covers.
struct Piece {
  int64_t block, k0, k1;
};

// m log m lane by lane, with 0 log 0 = 0: max(m, FLT_MIN) keeps the log finite at 0 (0 times it is
// 0) and moves m log m by less than 1e-36 for the subnormal m it touches. torch's own log (Sleef,
// 1 ulp): this is the once-per-(head, row, key) p log p, not the pair loop.
inline Vec xlogx(const Vec& m) { return m * at::vec::maximum(m, Vec(FLT_MIN)).log(); }

// The pair loop's log: Sleef's 3.5-ulp variant (from the same Sleef as torch's log): a third
// faster here, and no measurable change in the sums (the float32 rounding of the x log x terms
// dominates; see the top of the file).
inline Vec pair_log(const Vec& x) {
#if defined(CPU_CAPABILITY_AVX512)
  return Vec(Sleef_logf16_u35(x));
#elif defined(CPU_CAPABILITY_AVX2)
  return Vec(Sleef_logf8_u35(x));
#else
  return x.log();
#endif
}

// Where |d| < kNear (see js_terms) a term is summed as its series, to this many terms: the first
// left out is below 0.25^10 / 231 of the sum, the whole rest below 6e-9 of it.
constexpr float kNear = 0.5f;
constexpr int kSeries = 10;

// Sum over keys [k0, k1) of one block of two heads of the rows' JS terms, lane by lane:
// t = (p log p + q log q) / 2 - m log m, m = (p + q) / 2, each >= 0 (x log x is convex). With
// d = (p - q) / (p + q), t = m/2 g(d), g(d) = (1+d) log(1+d) + (1-d) log(1-d)
// = sum_k d^2k / (k (2k - 1)). For |d| >= 1/2 the difference of the x log x is taken as it is
// (t >= m / 8 there, so the float32 rounding of terms of size m |log m| costs little); for
// |d| < 1/2, where that difference cancels down to rounding noise (near-identical heads: 6% off on
// heads that differ by 1e-3, measured), the series gives t to float32's relative precision, and
// exactly 0 where p = q.
inline Vec js_terms(const float* a, const float* b, int64_t k0, int64_t k1) {
  // 1 / (k (2k - 1)) for k = 1 .. kSeries
  static constexpr float kCoef[kSeries] = {1.f,        1.f / 6,   1.f / 15,  1.f / 28,  1.f / 45,
                                           1.f / 66,   1.f / 91,  1.f / 120, 1.f / 153, 1.f / 190};
  const Vec half(0.5f), near_limit(kNear);
  Vec acc(0.f);
  for (int64_t k = k0; k < k1; ++k) {
    const float* x = a + 2 * k * kLanes;
    const float* y = b + 2 * k * kLanes;
    const Vec p = Vec::loadu(x), q = Vec::loadu(y);
    const Vec s = p + q, m = s * half;
    const Vec d = (p - q) / s, u = d * d;  // 0 / 0 where p = q = 0: the other branch, t = 0
    Vec series(kCoef[kSeries - 1]);
    for (int i = kSeries - 2; i >= 0; --i) series = at::vec::fmadd(series, u, Vec(kCoef[i]));
    const Vec near = half * m * u * series;
    const Vec mlogm = m * pair_log(at::vec::maximum(m, Vec(FLT_MIN)));  // as xlogx
    const Vec far = (Vec::loadu(x + kLanes) + Vec::loadu(y + kLanes)) * half - mlogm;
    acc = acc + Vec::blendv(far, near, d.abs() < near_limit);
  }
  return acc;
}

// Vectors of terms per thread at least (about 14 ms of one core's work), so that small calls
// take one thread.
constexpr int64_t kWorkPerThread = 1 << 20;

// Threads get at least this many map entries each in the packing passes (less is not worth waking
// them: a 15-token text's maps are 60 K entries).
constexpr int64_t kPackGrain = 1 << 18;

// Each row's width cut back past its trailing keys that no head gives weight: they add exactly 0,
// and so cost nothing when causal maps come whole (the rows' widths not given) or texts padded.
std::vector<int64_t> trim(const torch::Tensor& maps, const int64_t* widths) {
  const int64_t H = maps.size(0), R = maps.size(1), W = maps.size(2);
  const int64_t s0 = maps.stride(0), s1 = maps.stride(1), s2 = maps.stride(2);
  const float* src = maps.data_ptr<float>();
  std::vector<int64_t> out(R);
  const int64_t grain = std::max<int64_t>(1, kPackGrain / std::max<int64_t>(1, H * W));  // rows
  at::parallel_for(0, R, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t last = 0;
      for (int64_t h = 0; h < H && last < widths[r]; ++h) {
        const float* row = src + h * s0 + r * s1;
        int64_t k = widths[r];
        while (k > last && row[(k - 1) * s2] == 0.f) --k;
        last = std::max(last, k);
      }
      out[r] = last;
    }
  });
  return out;
}

Packed pack(const torch::Tensor& maps, const int64_t* widths) {
  const int64_t H = maps.size(0), R = maps.size(1), W = maps.size(2);
  const int64_t s0 = maps.stride(0), s1 = maps.stride(1), s2 = maps.stride(2);
  std::vector<int64_t> order(R);
  std::iota(order.begin(), order.end(), 0);
  // Widest first, stably: a block's rows have close widths (few idle lanes), and the order of the
  // sums, hence their last bits, depends on the widths only.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return widths[a] > widths[b]; });
  Packed out;
  const int64_t blocks = (R + kLanes - 1) / kLanes;
  for (int64_t b = 0; b < blocks; ++b) {
    out.offset.push_back(out.stride);
    out.keys.push_back(widths[order[b * kLanes]]);
    out.stride += out.keys.back() * 2 * kLanes;
  }
  out.data = torch::empty({H, std::max<int64_t>(out.stride, 1)}, maps.options());
  const float* src = maps.data_ptr<float>();
  float* dst = out.data.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kPackGrain / std::max<int64_t>(1, R * W));  // heads
  at::parallel_for(0, H, grain, [&](int64_t begin, int64_t end) {
    for (int64_t h = begin; h < end; ++h) {
      float* head = dst + h * out.stride;
      std::fill(head, head + out.stride, 0.f);
      for (int64_t i = 0; i < R; ++i) {
        const int64_t r = order[i];
        const float* row = src + h * s0 + r * s1;
        float* lane = head + out.offset[i / kLanes] + i % kLanes;
        for (int64_t k = 0; k < widths[r]; ++k) lane[2 * k * kLanes] = row[k * s2];
      }
      for (int64_t b = 0; b < blocks; ++b) {
        float* block = head + out.offset[b];
        for (int64_t k = 0; k < out.keys[b]; ++k) {
          xlogx(Vec::loadu(block + 2 * k * kLanes)).store(block + (2 * k + 1) * kLanes);
        }
      }
    }
  });
  return out;
}

// The chunks: consecutive blocks of up to kChunkKeys keys in all, or one stretch of a longer block.
// Returns the pieces; chunk c is pieces starts[c] .. starts[c + 1].
std::vector<Piece> chunk(const Packed& packed, std::vector<int64_t>& starts) {
  std::vector<Piece> pieces;
  int64_t filled = kChunkKeys;  // so that the first piece opens a chunk
  for (int64_t b = 0; b < static_cast<int64_t>(packed.keys.size()); ++b) {
    const int64_t n = packed.keys[b];
    for (int64_t k0 = 0; k0 < n; k0 += kChunkKeys) {
      const int64_t k1 = std::min(n, k0 + kChunkKeys);
      if (filled + (k1 - k0) > kChunkKeys) {
        starts.push_back(static_cast<int64_t>(pieces.size()));
        filled = 0;
      }
      pieces.push_back({b, k0, k1});
      filled += k1 - k0;
    }
  }
  starts.push_back(static_cast<int64_t>(pieces.size()));
  return pieces;
}

}  // namespace

torch::Tensor js_pairs(torch::Tensor maps, torch::Tensor widths) {
  TORCH_CHECK(maps.dim() == 3 && maps.scalar_type() == torch::kFloat32 && maps.device().is_cpu(),
              "js_pairs takes float32 CPU maps [head, row, key]");
  TORCH_CHECK(widths.dim() == 1 && widths.size(0) == maps.size(1), "js_pairs takes one width per row");
  // Maps are read through their strides and every tensor here is filled on the calling thread
  // unless big: torch's own copies and fills of a text's maps would each wake its thread pool.
  widths = widths.to(torch::kInt64).contiguous();
  const int64_t H = maps.size(0), W = maps.size(2);
  const int64_t* wp = widths.data_ptr<int64_t>();
  for (int64_t r = 0; r < widths.size(0); ++r) {
    TORCH_CHECK(wp[r] >= 0 && wp[r] <= W, "js_pairs: a row's width lies outside 0..", W);
  }
  auto out = torch::empty({H, H}, torch::TensorOptions().dtype(torch::kFloat64));
  std::fill(out.data_ptr<double>(), out.data_ptr<double>() + H * H, 0.0);
  if (H < 2 || maps.size(1) == 0) return out;

  const std::vector<int64_t> visible = trim(maps, wp);
  const Packed packed = pack(maps, visible.data());
  const float* data = packed.data.data_ptr<float>();
  std::vector<int64_t> starts;
  const std::vector<Piece> pieces = chunk(packed, starts);
  const int64_t chunks = static_cast<int64_t>(starts.size()) - 1;
  // Tiles (i, j >= i) of kTile x kTile heads; pairs a < b only, mirrored at the end.
  const int64_t sides = (H + kTile - 1) / kTile;
  std::vector<std::pair<int64_t, int64_t>> tiles;
  for (int64_t i = 0; i < sides; ++i) {
    for (int64_t j = i; j < sides; ++j) tiles.emplace_back(i, j);
  }
  double* op = out.data_ptr<double>();
  // Threads take tiles one at a time from a shared counter rather than a fixed share each, so that
  // on a busy machine a thread that is not running holds up no more than its tile; and a call too
  // small to repay waking a second thread stays on this one (a parallel region ends when all its
  // threads have had a turn: with torch's own copies and fills, each a region, a 15-token text took
  // 30 ms on 2 threads against 7 ms on 1 while other work ran here).
  const int64_t tasks = static_cast<int64_t>(tiles.size());
  const int64_t keys = std::accumulate(packed.keys.begin(), packed.keys.end(), int64_t{0});
  const int64_t work = H * (H - 1) / 2 * keys;  // vectors of terms
  const int64_t workers = std::clamp<int64_t>(work / kWorkPerThread, 1, at::get_num_threads());
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    // Per pair of a tile and lane: the float64 sum over rows, and a split block's float64 partial.
    std::vector<double> total(kTile * kTile * kLanes), carry(kTile * kTile * kLanes);
    float lanes[kLanes];
    for (int64_t task = next++; task < tasks; task = next++) {
      const int64_t a0 = tiles[task].first * kTile, a1 = std::min(H, a0 + kTile);
      const int64_t b0 = tiles[task].second * kTile, b1 = std::min(H, b0 + kTile);
      std::fill(total.begin(), total.end(), 0.0);
      std::fill(carry.begin(), carry.end(), 0.0);
      for (int64_t c = 0; c < chunks; ++c) {
        for (int64_t a = a0; a < a1; ++a) {
          const float* pa = data + a * packed.stride;
          for (int64_t b = std::max(b0, a + 1); b < b1; ++b) {
            const float* pb = data + b * packed.stride;
            const int64_t pair = ((a - a0) * kTile + (b - b0)) * kLanes;
            double* t = total.data() + pair;
            double* part = carry.data() + pair;
            for (int64_t i = starts[c]; i < starts[c + 1]; ++i) {
              const Piece& piece = pieces[i];
              const int64_t off = packed.offset[piece.block];
              js_terms(pa + off, pb + off, piece.k0, piece.k1).store(lanes);
              if (piece.k0 == 0 && piece.k1 == packed.keys[piece.block]) {  // a whole block
                for (int64_t l = 0; l < kLanes; ++l) t[l] += std::max(0.0, static_cast<double>(lanes[l]));
                continue;
              }
              for (int64_t l = 0; l < kLanes; ++l) part[l] += static_cast<double>(lanes[l]);
              if (piece.k1 == packed.keys[piece.block]) {  // the last stretch of a split block
                for (int64_t l = 0; l < kLanes; ++l) {
                  t[l] += std::max(0.0, part[l]);
                  part[l] = 0.0;
                }
              }
            }
          }
        }
      }
      for (int64_t a = a0; a < a1; ++a) {
        for (int64_t b = std::max(b0, a + 1); b < b1; ++b) {
          const double* t = total.data() + ((a - a0) * kTile + (b - b0)) * kLanes;
          double sum = 0.0;
          for (int64_t l = 0; l < kLanes; ++l) sum += t[l];
          op[a * H + b] = sum;
          op[b * H + a] = sum;
        }
      }
    }
  });
  return out;
}
