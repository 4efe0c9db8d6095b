// Paged decode attention with AVX-512, any element type (included by paged_decode.cpp
// inside its namespace and its `#if defined(__AVX512F__)`, after `Shape`; not a standalone
// header).
#pragma once

using splitserve::exp512;
using splitserve::load16;

// One sequence, every KV head, with head_dim = D and group = G known at compile time.
// Walks the context in chunks of up to 16 tokens inside one block; for each chunk it visits
// the KV heads in memory order, so K and V are read front to back (each block is one
// contiguous [block_size, KVH, D] slab), and it prefetches the next block while computing.
// A head's scaled query and running accumulator live in registers within a chunk and in
// `ws` (L1) between chunks. Scores of a chunk form one 16-lane vector per query head.
template <typename T, int D, int G>
void attend_seq_avx512(const T* q, T* out, const T* k_cache, const T* v_cache,
                       const int64_t* table, int64_t ctx_len, const Shape& s, float* ws) {
  constexpr int V = D / 16;
  const int64_t bs = s.block_size, kv_heads = s.num_kv_heads, kv_row = kv_heads * D;
  float* qs = ws;                        // [KVH, G, D] scaled queries
  float* accs = qs + kv_heads * G * D;   // [KVH, G, D] running sums of p * v
  float* mxs = accs + kv_heads * G * D;  // [KVH, G] running max
  float* dens = mxs + kv_heads * G;      // [KVH, G] running softmax denominator
  for (int64_t i = 0; i < kv_heads * G; ++i) {
    for (int j = 0; j < V; ++j) {
      _mm512_storeu_ps(qs + i * D + 16 * j,
                       _mm512_mul_ps(load16(q + i * D + 16 * j), _mm512_set1_ps(s.scale)));
      _mm512_storeu_ps(accs + i * D + 16 * j, _mm512_setzero_ps());
    }
    mxs[i] = -1e30f;
    dens[i] = 0.f;
  }
  const int64_t pos = ctx_len - 1;
  const int64_t first = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
  const int64_t block_elems = bs * kv_row;
  alignas(64) float sc[G][16];
  for (int64_t tok = first; tok < ctx_len;) {
    const int64_t b = tok / bs, t0 = tok - b * bs;
    const int n = static_cast<int>(std::min<int64_t>({16, bs - t0, ctx_len - tok}));
    // The next block, prefetched a quarter per KV head below so the requests spread over
    // this block's compute instead of queueing in one burst.
    const char* next_k = nullptr;
    const char* next_v = nullptr;
    int64_t next_bytes = 0;
    if (t0 + n == bs && (b + 1) * bs < ctx_len) {
      next_k = reinterpret_cast<const char*>(k_cache + table[b + 1] * block_elems);
      next_v = reinterpret_cast<const char*>(v_cache + table[b + 1] * block_elems);
      next_bytes = std::min<int64_t>(bs, ctx_len - (b + 1) * bs) * kv_row * sizeof(T);
    }
    const int64_t share = (next_bytes / kv_heads + 63) / 64 * 64;
    const __mmask16 valid = static_cast<__mmask16>((1u << n) - 1u);
    for (int64_t kvh = 0; kvh < kv_heads; ++kvh) {
      for (int64_t off = kvh * share; off < std::min(next_bytes, (kvh + 1) * share); off += 64) {
        _mm_prefetch(next_k + off, _MM_HINT_T0);
        _mm_prefetch(next_v + off, _MM_HINT_T0);
      }
      const int64_t base = (table[b] * bs + t0) * kv_row + kvh * D;
      const T* kb = k_cache + base;
      const T* vb = v_cache + base;
      float* qh = qs + kvh * G * D;
      float* ah = accs + kvh * G * D;
      __m512 qv[G][V], acc[G][V];
      for (int h = 0; h < G; ++h)
        for (int j = 0; j < V; ++j) qv[h][j] = _mm512_loadu_ps(qh + h * D + 16 * j);
      for (int t = 0; t < n; ++t) {
        __m512 kv[V];
        for (int j = 0; j < V; ++j) kv[j] = load16(kb + t * kv_row + 16 * j);
        for (int h = 0; h < G; ++h) {
          __m512 d = _mm512_mul_ps(qv[h][0], kv[0]);
          for (int j = 1; j < V; ++j) d = _mm512_fmadd_ps(qv[h][j], kv[j], d);
          sc[h][t] = _mm512_reduce_add_ps(d);
        }
      }
      for (int h = 0; h < G; ++h) {
        float& mx = mxs[kvh * G + h];
        float& den = dens[kvh * G + h];
        const __m512 sv = _mm512_maskz_loadu_ps(valid, sc[h]);
        const float new_max = std::max(mx, _mm512_mask_reduce_max_ps(valid, sv));
        const float correction = std::exp(mx - new_max);
        const __m512 p =
            _mm512_maskz_mov_ps(valid, exp512(_mm512_sub_ps(sv, _mm512_set1_ps(new_max))));
        den = den * correction + _mm512_reduce_add_ps(p);
        mx = new_max;
        const __m512 c = _mm512_set1_ps(correction);
        for (int j = 0; j < V; ++j)
          acc[h][j] = _mm512_mul_ps(_mm512_loadu_ps(ah + h * D + 16 * j), c);
        _mm512_store_ps(sc[h], p);
      }
      for (int t = 0; t < n; ++t) {
        __m512 vv[V];
        for (int j = 0; j < V; ++j) vv[j] = load16(vb + t * kv_row + 16 * j);
        for (int h = 0; h < G; ++h) {
          const __m512 pt = _mm512_set1_ps(sc[h][t]);
          for (int j = 0; j < V; ++j) acc[h][j] = _mm512_fmadd_ps(pt, vv[j], acc[h][j]);
        }
      }
      for (int h = 0; h < G; ++h)
        for (int j = 0; j < V; ++j) _mm512_storeu_ps(ah + h * D + 16 * j, acc[h][j]);
    }
    tok += n;
  }
  for (int64_t i = 0; i < kv_heads * G; ++i) {
    const float inv = 1.f / dens[i];
    for (int d = 0; d < D; ++d) store(accs[i * D + d] * inv, out + i * D + d);
  }
}
