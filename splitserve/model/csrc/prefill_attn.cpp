// Paged prefill attention for a bfloat16 KV cache on CPU, flash-attention style.
//
// Every prefill chunk (fresh, or continuing a cached prefix) is handled alike: its K/V
// were scattered into the cache before the call, so the kernel reads all keys of the
// sequence in place through its block table (no gather). Query i of a chunk of q_len rows
// in a context of ctx_len tokens sits at position start + i (start = ctx_len - q_len) and
// sees keys max(0, pos - window + 1) .. pos (window <= 0: no window).
//
// Work item = (sequence, KV head, run of query rows). An item first packs the keys and
// values it needs into the tile layouts of prefill_tiles.h (bf16 pairs side by side), once
// for all the query heads sharing that KV head (GQA); then, per 16-row query tile and per
// query head, it walks the keys 32 at a time: scores by AMX or AVX512-BF16 tile products,
// the online softmax in float32 with AVX-512 (probabilities rounded to bf16 for p.V, as
// flash attention does), p.V accumulated into a float32 tile. Items run under OpenMP,
// largest first. Layouts as paged_decode.cpp: q/out [rows, heads, D] (row strides given),
// cache [2, num_blocks, block_size, KVH, D]; query head h reads KV head h / (H / KVH).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dtype.h"
#include "prefill_tiles.h"
#include "simd.h"

namespace {

struct PrefillShape {
  int64_t num_heads, num_kv_heads, block_size, max_blocks, q_row_stride, out_row_stride, window;
  float scale;
};

#if defined(__AVX512BF16__)

using namespace splitserve::prefill;
using splitserve::exp512;
using splitserve::store16;

struct Item {
  int64_t seq, kv_head, row_begin, row_end, cost;
};

struct Workspace {
  std::vector<uint16_t> kpack, vpack;
  alignas(64) uint16_t q[kRows * 128];
  alignas(64) float s[kRows * kKeys];
  alignas(64) uint16_t p[kRows * kKeys];
  alignas(64) float o[kRows * 128];
  float mx[kRows], den[kRows];
};

// Keys [k0, k1) of one KV head into the packed layouts; keys at or past ctx_len are zeros
// (a padded query row may give them weight; 0 * V must stay finite).
template <int D>
void pack_kv(const uint16_t* k_cache, const uint16_t* v_cache, const int64_t* table,
             int64_t kv_head, int64_t k0, int64_t k1, int64_t ctx_len, const PrefillShape& s,
             Workspace& ws) {
  constexpr int C = D / 32;
  const int64_t kv_row = s.num_kv_heads * D, bs = s.block_size;
  uint32_t* kp = reinterpret_cast<uint32_t*>(ws.kpack.data());
  uint16_t* vp = ws.vpack.data();
  for (int64_t j = k0; j < k1; ++j) {
    const int64_t local = j - k0, blk = local / kKeys, in_blk = local % kKeys;
    const int64_t half = in_blk / 16, key = in_blk % 16, pair = in_blk / 2, odd = in_blk % 2;
    uint32_t* kdst = kp + ((blk * 2 + half) * C) * 256 + key;
    uint16_t* vdst = vp + blk * kKeys * D + pair * 32 + odd;
    if (j >= ctx_len) {
      for (int c = 0; c < C; ++c)
        for (int d = 0; d < 16; ++d) kdst[c * 256 + d * 16] = 0;
      for (int c = 0; c < D / 16; ++c)
        for (int d = 0; d < 16; ++d) vdst[c * kTileElems + d * 2] = 0;
      continue;
    }
    const int64_t off = (table[j / bs] * bs + j % bs) * kv_row + kv_head * D;
    const uint32_t* ksrc = reinterpret_cast<const uint32_t*>(k_cache + off);
    const uint16_t* vsrc = v_cache + off;
    for (int c = 0; c < C; ++c)
      for (int d = 0; d < 16; ++d) kdst[c * 256 + d * 16] = ksrc[c * 16 + d];
    for (int c = 0; c < D / 16; ++c)
      for (int d = 0; d < 16; ++d) vdst[c * kTileElems + d * 2] = vsrc[c * 16 + d];
  }
}

// Online softmax over one tile's scores: p (bf16) for p.V, running max/denominator updated,
// the old output rows rescaled. `edge`: the block crosses the causal diagonal or the
// window's lower edge, so scores need a per-key mask (query row m sits at pos0 + m).
template <int D>
inline void softmax_tile(Workspace& ws, float scale, bool edge, int64_t key0, int64_t pos0,
                         int64_t window) {
  const __m512 sc = _mm512_set1_ps(scale), neg = _mm512_set1_ps(-1e30f);
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  for (int m = 0; m < kRows; ++m) {
    __m512 v0 = _mm512_mul_ps(_mm512_loadu_ps(ws.s + m * kKeys), sc);
    __m512 v1 = _mm512_mul_ps(_mm512_loadu_ps(ws.s + m * kKeys + 16), sc);
    __mmask16 ok0 = 0xFFFF, ok1 = 0xFFFF;
    if (edge) {  // key offsets within the block vs this row's visible range [lo, hi]
      const int64_t hi = pos0 + m - key0;
      const int64_t lo = window > 0 ? hi - window + 1 : -1;
      const __m512i h = _mm512_set1_epi32(static_cast<int>(std::clamp<int64_t>(hi, -1, 64)));
      const __m512i l = _mm512_set1_epi32(static_cast<int>(std::clamp<int64_t>(lo, -1, 64)));
      const __m512i k1 = _mm512_add_epi32(iota, _mm512_set1_epi32(16));
      ok0 = _mm512_cmple_epi32_mask(iota, h) & _mm512_cmpge_epi32_mask(iota, l);
      ok1 = _mm512_cmple_epi32_mask(k1, h) & _mm512_cmpge_epi32_mask(k1, l);
      v0 = _mm512_mask_mov_ps(neg, ok0, v0);
      v1 = _mm512_mask_mov_ps(neg, ok1, v1);
    }
    const float new_max = std::max(ws.mx[m], _mm512_reduce_max_ps(_mm512_max_ps(v0, v1)));
    const __m512 nm = _mm512_set1_ps(new_max);
    const __m512 e0 = _mm512_maskz_mov_ps(ok0, exp512(_mm512_sub_ps(v0, nm)));
    const __m512 e1 = _mm512_maskz_mov_ps(ok1, exp512(_mm512_sub_ps(v1, nm)));
    const float corr = std::exp(ws.mx[m] - new_max);
    ws.den[m] = ws.den[m] * corr + _mm512_reduce_add_ps(_mm512_add_ps(e0, e1));
    ws.mx[m] = new_max;
    const __m512bh pb = _mm512_cvtne2ps_pbh(e1, e0);  // keys 0..15 low, 16..31 high
    _mm512_store_si512(ws.p + m * kKeys, reinterpret_cast<const __m512i&>(pb));
    if (corr != 1.f) {
      const __m512 c = _mm512_set1_ps(corr);
      for (int d = 0; d < D; d += 16)
        _mm512_storeu_ps(ws.o + m * D + d, _mm512_mul_ps(_mm512_loadu_ps(ws.o + m * D + d), c));
    }
  }
}

template <int D, bool Amx>
void run_item(const uint16_t* q, uint16_t* out, const uint16_t* k_cache, const uint16_t* v_cache,
              const int64_t* table, int64_t row0, int64_t q_len, int64_t ctx_len,
              const Item& it, const PrefillShape& s, Workspace& ws) {
  const int64_t group = s.num_heads / s.num_kv_heads, start = ctx_len - q_len;
  const int64_t window = s.window;
  auto lowest_key = [&](int64_t pos) { return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0; };
  // keys this item's rows can see (its last tile's padded rows included)
  const int64_t rows = it.row_end - it.row_begin;
  const int64_t last_pos = start + it.row_begin + (rows + kRows - 1) / kRows * kRows - 1;
  const int64_t k0 = lowest_key(start + it.row_begin) / kKeys * kKeys;
  const int64_t k1 = (std::min(last_pos, ctx_len - 1) / kKeys + 1) * kKeys;
  pack_kv<D>(k_cache, v_cache, table, it.kv_head, k0, k1, ctx_len, s, ws);
  for (int64_t r = it.row_begin; r < it.row_end; r += kRows) {
    const int n = static_cast<int>(std::min<int64_t>(kRows, it.row_end - r));
    const int64_t pos0 = start + r, pos1 = pos0 + kRows - 1;
    const int64_t key_begin = lowest_key(pos0) / kKeys * kKeys;
    const int64_t key_end = std::min(pos1, ctx_len - 1) + 1;
    for (int64_t h = 0; h < group; ++h) {
      const int64_t head = it.kv_head * group + h;
      for (int m = 0; m < kRows; ++m) {
        uint16_t* dst = ws.q + m * D;
        if (m < n)
          std::memcpy(dst, q + (row0 + r + m) * s.q_row_stride + head * D, D * 2);
        else
          std::memset(dst, 0, D * 2);
        std::fill(ws.o + m * D, ws.o + (m + 1) * D, 0.f);
        ws.mx[m] = -1e30f;
        ws.den[m] = 0.f;
      }
      for (int64_t j = key_begin; j < key_end; j += kKeys) {
        const uint16_t* kp = ws.kpack.data() + (j - k0) * D;
        const uint16_t* vp = ws.vpack.data() + (j - k0) * D;
        const bool edge = j + kKeys - 1 > pos0 || (window > 0 && j < pos1 - window + 1);
#if defined(SPLITSERVE_HAVE_AMX)
        if constexpr (Amx) scores_amx<D>(ws.q, kp, ws.s); else scores_avx<D>(ws.q, kp, ws.s);
#else
        scores_avx<D>(ws.q, kp, ws.s);
#endif
        softmax_tile<D>(ws, s.scale, edge, j, pos0, window);
#if defined(SPLITSERVE_HAVE_AMX)
        if constexpr (Amx) pv_amx<D>(ws.p, vp, ws.o); else pv_avx<D>(ws.p, vp, ws.o);
#else
        pv_avx<D>(ws.p, vp, ws.o);
#endif
      }
      for (int m = 0; m < n; ++m) {
        const __m512 inv = _mm512_set1_ps(ws.den[m] > 0.f ? 1.f / ws.den[m] : 0.f);
        uint16_t* dst = out + (row0 + r + m) * s.out_row_stride + head * D;
        for (int d = 0; d < D; d += 16)
          store16(_mm512_mul_ps(_mm512_loadu_ps(ws.o + m * D + d), inv), dst + d);
      }
    }
  }
}

template <int D, bool Amx>
void prefill(const uint16_t* q, uint16_t* out, const uint16_t* cache, const int64_t* rows,
             const int64_t* q_lens, const int64_t* ctx_lens, const int64_t* tables,
             int64_t num_seqs, int64_t num_blocks, const PrefillShape& s, int num_threads) {
  // Items: whole sequences per KV head, split into runs of query rows only when there are
  // too few for the threads (each run re-packs the keys it sees).
  int64_t max_ctx = 0, max_q = 0;
  for (int64_t i = 0; i < num_seqs; ++i) {
    max_ctx = std::max(max_ctx, ctx_lens[i]);
    max_q = std::max(max_q, q_lens[i]);
  }
  const int64_t base_items = num_seqs * s.num_kv_heads;
  const int64_t splits = num_threads > 1 ? std::max<int64_t>(1, 4 * num_threads / base_items) : 1;
  const int64_t run = std::max<int64_t>(kRows, (max_q / splits + kRows - 1) / kRows * kRows);
  std::vector<Item> items;
  for (int64_t i = 0; i < num_seqs; ++i)
    for (int64_t kvh = 0; kvh < s.num_kv_heads; ++kvh)
      for (int64_t r = 0; r < q_lens[i]; r += run) {
        const int64_t e = std::min(q_lens[i], r + run), last = ctx_lens[i] - q_lens[i] + e;
        items.push_back({i, kvh, r, e, (e - r) * std::min(last, s.window > 0 ? s.window : last)});
      }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.cost > b.cost; });
  const uint16_t* k_cache = cache;
  const uint16_t* v_cache = cache + num_blocks * s.block_size * s.num_kv_heads * D;
  const int64_t num_items = static_cast<int64_t>(items.size());
#pragma omp parallel num_threads(std::max<int64_t>(1, std::min<int64_t>(num_threads, num_items)))
  {
    Workspace ws;
    ws.kpack.resize(static_cast<size_t>((max_ctx + 2 * kKeys) * D));
    ws.vpack.resize(ws.kpack.size());
#if defined(SPLITSERVE_HAVE_AMX)
    if constexpr (Amx) amx_configure();
#endif
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < num_items; ++i) {
      const Item& it = items[i];
      run_item<D, Amx>(q, out, k_cache, v_cache, tables + it.seq * s.max_blocks, rows[it.seq],
                       q_lens[it.seq], ctx_lens[it.seq], it, s, ws);
    }
#if defined(SPLITSERVE_HAVE_AMX)
    if constexpr (Amx) amx_release();
#endif
  }
}

using PrefillFn = void (*)(const uint16_t*, uint16_t*, const uint16_t*, const int64_t*,
                           const int64_t*, const int64_t*, const int64_t*, int64_t, int64_t,
                           const PrefillShape&, int);

// 2: AMX, 1: AVX512-BF16
int best_path() {
#if defined(SPLITSERVE_HAVE_AMX)
  if (amx_permitted()) return 2;
#endif
  return 1;
}

PrefillFn pick(int64_t head_dim, int path) {
  const bool amx = path == 2;
#if !defined(SPLITSERVE_HAVE_AMX)
  if (amx) return nullptr;
#else
  if (amx && !amx_permitted()) return nullptr;
#endif
  switch (head_dim) {
    case 64: return amx ? prefill<64, true> : prefill<64, false>;
    case 128: return amx ? prefill<128, true> : prefill<128, false>;
    default: return nullptr;
  }
}
#else
int best_path() { return 0; }
#endif

}  // namespace

extern "C" {

// Which path `paged_prefill_bf16` takes by default: 2 AMX, 1 AVX512-BF16, 0 none (this
// build has no bf16 prefill kernel: callers use their fallback).
int splitserve_prefill_path() { return best_path(); }

// Returns 0 on success, -1 when this head_dim / path has no kernel (nothing written).
// path: 0 the best available, 1 AVX512-BF16, 2 AMX.
int paged_prefill_bf16(const uint16_t* q, uint16_t* out, const uint16_t* cache,
                       const int64_t* rows, const int64_t* q_lens, const int64_t* ctx_lens,
                       const int64_t* tables, int64_t num_seqs, int64_t max_blocks,
                       int64_t num_blocks, int64_t block_size, int64_t num_heads,
                       int64_t num_kv_heads, int64_t head_dim, int64_t q_row_stride,
                       int64_t out_row_stride, int64_t window, float scale, int num_threads,
                       int path) {
#if defined(__AVX512BF16__)
  const PrefillFn fn = pick(head_dim, path == 0 ? best_path() : path);
  if (fn == nullptr || num_heads % num_kv_heads != 0) return -1;
  const PrefillShape s{num_heads, num_kv_heads, block_size, max_blocks,
                       q_row_stride, out_row_stride, window, scale};
  fn(q, out, cache, rows, q_lens, ctx_lens, tables, num_seqs, num_blocks, s, num_threads);
  return 0;
#else
  (void)q, (void)out, (void)cache, (void)rows, (void)q_lens, (void)ctx_lens, (void)tables;
  (void)num_seqs, (void)max_blocks, (void)num_blocks, (void)block_size, (void)num_heads;
  (void)num_kv_heads, (void)head_dim, (void)q_row_stride, (void)out_row_stride, (void)window;
  (void)scale, (void)num_threads, (void)path;
  return -1;
#endif
}

}  // extern "C"
