// Paged decode attention for CPU: one query token per sequence, keys and values read in
// place from the block-paged KV cache (no gather copy), online softmax in float32.
//
// Built at first use by splitserve/model/native.py (g++ -O3 -march=native -fopenmp) and
// called through ctypes with raw pointers, so it needs no torch headers and compiles in a
// second or two. Layouts (row-major, elements of T):
//   q      [num_seqs rows picked by `rows`, num_heads, head_dim], row stride q_row_stride
//   out    same rows, row stride out_row_stride
//   cache  [2 (K|V), num_blocks, block_size, num_kv_heads, head_dim]
//   tables [num_seqs, max_blocks] int64 block ids, ctx_lens [num_seqs] int64
// Query head h reads KV head h / (num_heads / num_kv_heads), as transformers' repeat_kv.
// The query of sequence s sits at position ctx_lens[s] - 1 and sees keys
// max(0, pos - window + 1) .. pos (window <= 0: no window).
// With AVX-512 the per-sequence kernel is in decode_avx512.h; a bfloat16 cache on a CPU
// with AVX512-BF16 takes the kernel in decode_bf16.h.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dtype.h"
#include "simd.h"

namespace {

using splitserve::store;
using splitserve::to_float;

struct Shape {
  int64_t num_heads, num_kv_heads, head_dim, block_size, max_blocks;
  int64_t q_row_stride, out_row_stride, window;
  float scale;
  int generic;  // 1: always the portable loop (tests compare the two paths)
};

template <typename T>
void attend_group(const T* q, T* out, const T* k_cache, const T* v_cache, const int64_t* table,
                  int64_t ctx_len, int64_t kv_head, const Shape& s, float* ws) {
  const int64_t group = s.num_heads / s.num_kv_heads, dim = s.head_dim, bs = s.block_size;
  const int64_t kv_row = s.num_kv_heads * dim;  // elements between consecutive tokens
  float* qf = ws;                 // [group, dim] scaled query
  float* acc = qf + group * dim;  // [group, dim] running sum of p * v
  float* kf = acc + group * dim;  // [bs, dim] one block's keys as float
  float* vf = kf + bs * dim;      // [bs, dim] one block's values as float
  float* sc = vf + bs * dim;      // [group, bs] scores
  float* mx = sc + group * bs;    // [group] running max
  float* den = mx + group;        // [group] running softmax denominator
  for (int64_t h = 0; h < group; ++h) {
    const T* qh = q + (kv_head * group + h) * dim;
    for (int64_t d = 0; d < dim; ++d) qf[h * dim + d] = to_float(qh[d]) * s.scale;
    for (int64_t d = 0; d < dim; ++d) acc[h * dim + d] = 0.f;
    mx[h] = -1e30f;
    den[h] = 0.f;
  }
  const int64_t pos = ctx_len - 1;
  const int64_t first = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
  for (int64_t b = first / bs; b * bs < ctx_len; ++b) {
    const int64_t t0 = std::max<int64_t>(first - b * bs, 0);
    const int64_t t1 = std::min<int64_t>(bs, ctx_len - b * bs);
    const int64_t n = t1 - t0;
    const int64_t base = (table[b] * bs + t0) * kv_row + kv_head * dim;
    const T* kb = k_cache + base;
    const T* vb = v_cache + base;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t d = 0; d < dim; ++d) kf[t * dim + d] = to_float(kb[t * kv_row + d]);
    for (int64_t h = 0; h < group; ++h) {
      const float* qh = qf + h * dim;
      float* sh = sc + h * bs;
      float block_max = -1e30f;
      for (int64_t t = 0; t < n; ++t) {
        const float* kt = kf + t * dim;
        float dot = 0.f;
        for (int64_t d = 0; d < dim; ++d) dot += qh[d] * kt[d];
        sh[t] = dot;
        block_max = std::max(block_max, dot);
      }
      const float new_max = std::max(mx[h], block_max);
      const float correction = std::exp(mx[h] - new_max);
      float sum = 0.f;
      for (int64_t t = 0; t < n; ++t) {
        sh[t] = std::exp(sh[t] - new_max);
        sum += sh[t];
      }
      den[h] = den[h] * correction + sum;
      mx[h] = new_max;
      float* ah = acc + h * dim;
      for (int64_t d = 0; d < dim; ++d) ah[d] *= correction;
    }
    for (int64_t t = 0; t < n; ++t)
      for (int64_t d = 0; d < dim; ++d) vf[t * dim + d] = to_float(vb[t * kv_row + d]);
    for (int64_t h = 0; h < group; ++h) {
      float* ah = acc + h * dim;
      const float* sh = sc + h * bs;
      for (int64_t t = 0; t < n; ++t) {
        const float p = sh[t];
        const float* vt = vf + t * dim;
        for (int64_t d = 0; d < dim; ++d) ah[d] += p * vt[d];
      }
    }
  }
  for (int64_t h = 0; h < group; ++h) {
    const float inv = 1.f / den[h];
    T* oh = out + (kv_head * group + h) * dim;
    for (int64_t d = 0; d < dim; ++d) store(acc[h * dim + d] * inv, oh + d);
  }
}

// The portable path: one KV head at a time.
template <typename T>
void attend_seq(const T* q, T* out, const T* k_cache, const T* v_cache, const int64_t* table,
                int64_t ctx_len, const Shape& s, float* ws) {
  for (int64_t kvh = 0; kvh < s.num_kv_heads; ++kvh)
    attend_group(q, out, k_cache, v_cache, table, ctx_len, kvh, s, ws);
}

template <typename T>
using SeqFn = void (*)(const T*, T*, const T*, const T*, const int64_t*, int64_t, const Shape&,
                       float*);

#if defined(__AVX512F__)

#include "decode_avx512.h"
#include "decode_bf16.h"

template <typename T, int D>
SeqFn<T> pick_group(int64_t group) {
  switch (group) {
    case 1: return attend_seq_avx512<T, D, 1>;
    case 2: return attend_seq_avx512<T, D, 2>;
    case 3: return attend_seq_avx512<T, D, 3>;
    case 4: return attend_seq_avx512<T, D, 4>;
    case 5: return attend_seq_avx512<T, D, 5>;
    case 6: return attend_seq_avx512<T, D, 6>;
    case 7: return attend_seq_avx512<T, D, 7>;
    case 8: return attend_seq_avx512<T, D, 8>;
    default: return attend_seq<T>;
  }
}

template <typename T>
SeqFn<T> pick(int64_t head_dim, int64_t group) {
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, uint16_t>) {
    if (const SeqFn<T> fn = pick_bf16(head_dim, group)) return fn;
  }
#endif
  switch (head_dim) {
    case 16: return pick_group<T, 16>(group);
    case 32: return pick_group<T, 32>(group);
    case 64: return pick_group<T, 64>(group);
    case 128: return pick_group<T, 128>(group);
    default: return attend_seq<T>;
  }
}
constexpr int kFastPath = 1;
#else
template <typename T>
SeqFn<T> pick(int64_t, int64_t) { return attend_seq<T>; }
constexpr int kFastPath = 0;
#endif

inline int64_t bf16_scratch(int64_t num_heads) {
#if defined(__AVX512BF16__)
  return bf16_scratch_floats(num_heads);
#else
  return 0 * num_heads;
#endif
}

template <typename T>
void decode(const T* q, T* out, const T* cache, const int64_t* rows, const int64_t* ctx_lens,
            const int64_t* tables, int64_t num_seqs, int64_t num_blocks, const Shape& s,
            int num_threads) {
  const int64_t group = s.num_heads / s.num_kv_heads;
  // scratch for any path: the portable one needs (2 G D + 2 bs D + G bs + 2 G) floats,
  // the AVX-512 one 2 (KVH G D + KVH G), the bf16 one KVH G D plus its scores
  const int64_t ws_floats =
      std::max(2 * group * s.head_dim + 2 * s.block_size * s.head_dim + group * s.block_size +
                   2 * group,
               2 * s.num_kv_heads * group * (s.head_dim + 1) + bf16_scratch(s.num_heads));
  const T* k_cache = cache;
  const T* v_cache = cache + num_blocks * s.block_size * s.num_kv_heads * s.head_dim;
  const SeqFn<T> attend = s.generic ? attend_seq<T> : pick<T>(s.head_dim, group);
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> ws(static_cast<size_t>(ws_floats));
    // one sequence per work item (all its heads: its blocks are read front to back once)
#pragma omp for schedule(dynamic, 1)
    for (int64_t seq = 0; seq < num_seqs; ++seq) {
      attend(q + rows[seq] * s.q_row_stride, out + rows[seq] * s.out_row_stride, k_cache,
             v_cache, tables + seq * s.max_blocks, ctx_lens[seq], s, ws.data());
    }
  }
}

}  // namespace

extern "C" {

int splitserve_abi_version() { return 6; }
int splitserve_fast_path() { return kFastPath; }

#define SPLITSERVE_DECODE(NAME, T)                                                         \
  void NAME(const T* q, T* out, const T* cache, const int64_t* rows, const int64_t* ctx_lens, \
            const int64_t* tables, int64_t num_seqs, int64_t max_blocks, int64_t num_blocks,  \
            int64_t block_size, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,    \
            int64_t q_row_stride, int64_t out_row_stride, int64_t window, float scale,        \
            int num_threads, int generic) {                                                    \
    const Shape s{num_heads,    num_kv_heads,   head_dim, block_size, max_blocks,            \
                  q_row_stride, out_row_stride, window,   scale,      generic};              \
    decode(q, out, cache, rows, ctx_lens, tables, num_seqs, num_blocks, s, num_threads);     \
  }

SPLITSERVE_DECODE(paged_decode_f32, float)
SPLITSERVE_DECODE(paged_decode_bf16, uint16_t)

}  // extern "C"
