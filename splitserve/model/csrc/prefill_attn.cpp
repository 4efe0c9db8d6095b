// Paged prefill attention for a bfloat16 KV cache on CPU, flash-attention style.
//
// Every prefill chunk (fresh, or continuing a cached prefix) is handled alike: its K/V
// were scattered into the cache before the call, so the kernel reads all keys of the
// sequence in place through its block table (no gather). Query i of a chunk of q_len rows
// in a context of ctx_len tokens sits at position start + i (start = ctx_len - q_len) and
// sees keys max(0, pos - window + 1) .. pos (window <= 0: no window).
//
// Work item = (sequence, KV head, run of query rows). An item first packs the keys and
// values it needs (prefill_stages.h) into the tile layouts of prefill_tiles.h, once for all
// the query heads sharing that KV head (GQA); then, per 16-row query tile and per query
// head, it walks the keys 128 at a time: scores of four 32-key blocks by AMX or
// AVX512-BF16 tile products, one online-softmax update in float32 with AVX-512
// (probabilities rounded to bf16 for p.V, as flash attention does), p.V accumulated into
// a float32 tile. Items run under OpenMP, largest first. Layouts as paged_decode.cpp:
// q/out [rows, heads, D] (row strides given), cache [2, num_blocks, block_size, KVH, D];
// query head h reads KV head h / (H / KVH).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
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
using splitserve::store16;

#include "prefill_stages.h"

template <int D, bool Amx>
void run_item(const uint16_t* q, uint16_t* out, const uint16_t* k_cache, const uint16_t* v_cache,
              const int64_t* table, int64_t row0, int64_t q_len, int64_t ctx_len,
              const Item& it, const PrefillShape& s, Workspace& ws) {
  const int64_t group = s.num_heads / s.num_kv_heads, start = ctx_len - q_len;
  const int64_t window = s.window;
  auto lowest_key = [&](int64_t pos) {
    return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
  };
  // keys this item's rows can see (its last tile's padded rows included)
  const int64_t rows = it.row_end - it.row_begin;
  const int64_t last_pos = start + it.row_begin + (rows + kRows - 1) / kRows * kRows - 1;
  const int64_t k0 = lowest_key(start + it.row_begin) / kKeys * kKeys;
  const int64_t k1 = (std::min(last_pos, ctx_len - 1) / kKeys + 1) * kKeys;
  pack_kv<D>(k_cache, v_cache, table, it.kv_head, k0, k1, ctx_len, s, ws);
  for (int64_t r = it.row_begin; r < it.row_end; r += kRows) {
    const int n = static_cast<int>(std::min<int64_t>(kRows, it.row_end - r));
    // the next tile's query rows (all heads of this group) into L2 while this one runs
    for (int64_t m = r + kRows; m < std::min(r + 2 * kRows, it.row_end); ++m) {
      const char* row = reinterpret_cast<const char*>(
          q + (row0 + m) * s.q_row_stride + it.kv_head * group * D);
      for (int64_t off = 0; off < group * D * 2; off += 64) _mm_prefetch(row + off, _MM_HINT_T1);
    }
    const int64_t pos0 = start + r, pos1 = pos0 + kRows - 1;
    const int64_t key_begin = lowest_key(pos0) / kKeys * kKeys;
    const int64_t key_end = std::min(pos1, ctx_len - 1) + 1;
    for (int64_t h = 0; h < group; ++h) {
      const int64_t head = it.kv_head * group + h;
      start_tile<D>(q + (row0 + r) * s.q_row_stride + head * D, s.q_row_stride, n, ws);
      for (int64_t j = key_begin; j < key_end; j += kSubs * kKeys) {
        const int nsub =
            static_cast<int>(std::min<int64_t>(kSubs, (key_end - j + kKeys - 1) / kKeys));
        const uint16_t* kp = ws.kpack + (j - k0) * D;
        const uint16_t* vt = ws.vpack + (j - k0) * D;
        unsigned edge = 0;
        for (int i = 0; i < nsub; ++i) {
          const int64_t b = j + i * kKeys;
          if (b + kKeys - 1 > pos0 || (window > 0 && b < pos1 - window + 1)) edge |= 1u << i;
#if defined(SPLITSERVE_HAVE_AMX)
          if constexpr (Amx) {
            if (i % 2 == 0)
              scores_amx<D>(ws.qt, kp + i * kKeys * D, ws.s + i * kKeys * kRows, i + 1 < nsub);
            continue;
          }
#endif
          scores_avx<D>(ws.qt, kp + i * kKeys * D, ws.s + i * kKeys * kRows);
        }
        softmax_tile<D>(ws, s.scale, nsub, edge, j, pos0, window);
#if defined(SPLITSERVE_HAVE_AMX)
        if constexpr (Amx) {
          pv_amx<D>(ws.pt, vt, nsub, ws.ot);
          continue;
        }
#endif
        pv_avx<D>(ws.pt, vt, nsub, ws.ot);
      }
      finish_tile<D>(out + (row0 + r) * s.out_row_stride + head * D, s.out_row_stride, n, ws);
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
    static thread_local Packed kpack, vpack;
    ws.kpack = kpack.reserve(static_cast<size_t>((max_ctx + 2 * kKeys) * D));
    ws.vpack = vpack.reserve(static_cast<size_t>((max_ctx + 2 * kKeys) * D));
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
