// Stages of the bf16 prefill kernel (included by prefill_attn.cpp inside its namespace,
// after `PrefillShape` and the prefill_tiles.h names; not a standalone header): the
// per-thread workspace, packing K / V^T, Q^T in, the online softmax, O out.
#pragma once

struct Item {
  int64_t seq, kv_head, row_begin, row_end, cost;
};

// 64-byte aligned bf16 buffer (a tile row that straddles two cache lines loads at half
// speed) that only grows: one per OpenMP thread, kept between calls, so a call neither
// zero-fills nor page-faults in fresh memory.
class Packed {
 public:
  uint16_t* reserve(size_t n) {
    if (n > capacity_) {
      buf_.reset(new uint16_t[n + 32]);
      capacity_ = n;
    }
    return reinterpret_cast<uint16_t*>(
        (reinterpret_cast<uintptr_t>(buf_.get()) + 63) & ~uintptr_t(63));
  }

 private:
  std::unique_ptr<uint16_t[]> buf_;
  size_t capacity_ = 0;
};

struct Workspace {
  uint16_t* kpack;  // K row-major
  uint16_t* vpack;  // V^T per key block
  alignas(64) uint16_t qt[4 * kTileElems];
  alignas(64) float s[kSubs * kKeys * kRows];
  alignas(64) uint16_t pt[kSubs * kTileElems];
  alignas(64) float ot[128 * kRows];
  alignas(64) float mx[kRows];   // running max of the scores, in log2 units
  alignas(64) float den[kRows];  // running softmax denominator
};

// Keys [k0, k1) of one KV head (k0, k1 multiples of 32) into the packed layouts; keys at
// or past ctx_len are zeros (a padded query row may give them weight; 0 * V must stay
// finite). V^T 16 keys x 32 dims at a time: a 32-bit transpose puts each dim pair's 16
// keys in one register, and narrowing its low / high halves gives the two dims' rows.
template <int D>
void pack_kv(const uint16_t* k_cache, const uint16_t* v_cache, const int64_t* table,
             int64_t kv_head, int64_t k0, int64_t k1, int64_t ctx_len, const PrefillShape& s,
             Workspace& ws) {
  const int64_t kv_row = s.num_kv_heads * D, bs = s.block_size;
  for (int64_t g = k0; g < k1; g += 16) {
    const int64_t local = g - k0;
    const uint16_t* src[16];
    for (int i = 0; i < 16; ++i) {
      const int64_t j = g + i;
      src[i] = j < ctx_len ? k_cache + (table[j / bs] * bs + j % bs) * kv_row + kv_head * D
                           : nullptr;
      uint16_t* kdst = ws.kpack + (local + i) * D;
      if (src[i] != nullptr)
        std::memcpy(kdst, src[i], D * 2);
      else
        std::memset(kdst, 0, D * 2);
    }
    const int64_t v_offset = v_cache - k_cache;
    uint16_t* vt = ws.vpack + local / kKeys * kKeys * D + local % kKeys;
    for (int c = 0; c < D / 32; ++c) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = src[i] != nullptr ? _mm512_loadu_si512(src[i] + v_offset + 32 * c)
                                 : _mm512_setzero_si512();
      transpose16(r);
      for (int dp = 0; dp < 16; ++dp) {
        uint16_t* row = vt + (32 * c + 2 * dp) * kKeys;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row), _mm512_cvtepi32_epi16(r[dp]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + kKeys),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(r[dp], 16)));
      }
    }
  }
}

// Q^T of one tile (rows past n are zeros) in pair form; resets the running state.
template <int D>
void start_tile(const uint16_t* q, int64_t row_stride, int n, Workspace& ws) {
  for (int c = 0; c < D / 32; ++c) {
    __m512i r[16];
    for (int m = 0; m < kRows; ++m)
      r[m] = m < n ? _mm512_loadu_si512(q + m * row_stride + 32 * c) : _mm512_setzero_si512();
    transpose16(r);
    for (int dp = 0; dp < 16; ++dp) _mm512_store_si512(ws.qt + c * kTileElems + dp * 32, r[dp]);
  }
  for (int i = 0; i < D * kRows; i += 16) _mm512_store_ps(ws.ot + i, _mm512_setzero_ps());
  _mm512_store_ps(ws.mx, _mm512_set1_ps(-1e30f));
  _mm512_store_ps(ws.den, _mm512_setzero_ps());
}

// Online softmax over nsub key blocks of one tile's S^T: P^T (bf16, pair form) for p.V,
// running max / denominator updated, O^T rescaled. `edge` bit j: block j crosses the
// causal diagonal or the window's lower edge, so its scores get a per-row mask (row m
// sits at position pos0 + m; block j starts at key key0 + 32 j).
template <int D>
inline void softmax_tile(Workspace& ws, float scale, int nsub, unsigned edge, int64_t key0,
                         int64_t pos0, int64_t window) {
  const __m512 c = _mm512_set1_ps(scale * 1.4426950408889634f), neg = _mm512_set1_ps(-1e30f);
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  // rows that see key key0 + k: m >= k - (pos0 - key0), and m < that + window
  const auto visible = [&](int k) {
    const auto at = [&](int64_t x) {
      return _mm512_set1_epi32(static_cast<int>(std::clamp<int64_t>(x, -1, 17)));
    };
    const int64_t rel = key0 + k - pos0;
    __mmask16 ok = _mm512_cmpge_epi32_mask(iota, at(rel));
    if (window > 0) ok &= _mm512_cmplt_epi32_mask(iota, at(rel + window));
    return ok;
  };
  const __m512 old_max = _mm512_load_ps(ws.mx);
  __m512 mx0 = old_max, mx1 = old_max;
  for (int k = 0; k < nsub * kKeys; k += 2) {  // max of the scaled scores (log2 units)
    __m512 t0 = _mm512_mul_ps(_mm512_load_ps(ws.s + k * kRows), c);
    __m512 t1 = _mm512_mul_ps(_mm512_load_ps(ws.s + (k + 1) * kRows), c);
    if (edge >> (k / kKeys) & 1u) {
      t0 = _mm512_mask_mov_ps(neg, visible(k), t0);
      t1 = _mm512_mask_mov_ps(neg, visible(k + 1), t1);
    }
    mx0 = _mm512_max_ps(mx0, t0);
    mx1 = _mm512_max_ps(mx1, t1);
  }
  const __m512 new_max = _mm512_max_ps(mx0, mx1);
  const __m512 corr = exp2_512(_mm512_sub_ps(old_max, new_max));
  // pairs of keys -> one 32 x bf16 row of P^T: [p_k0 m0, p_k1 m0, p_k0 m1, ...]
  const __m512i interleave = _mm512_set_epi16(
      31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
      23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
  for (int k = 0; k < nsub * kKeys; k += 2) {  // p = 2^(s c - max), masked keys 0
    __m512 p0 = exp2_512(_mm512_fmsub_ps(_mm512_load_ps(ws.s + k * kRows), c, new_max));
    __m512 p1 = exp2_512(_mm512_fmsub_ps(_mm512_load_ps(ws.s + (k + 1) * kRows), c, new_max));
    if (edge >> (k / kKeys) & 1u) {
      p0 = _mm512_maskz_mov_ps(visible(k), p0);
      p1 = _mm512_maskz_mov_ps(visible(k + 1), p1);
    }
    sum0 = _mm512_add_ps(sum0, p0);
    sum1 = _mm512_add_ps(sum1, p1);
    const __m512bh pb = _mm512_cvtne2ps_pbh(p1, p0);  // p0's 16 rows low, p1's high
    _mm512_store_si512(ws.pt + k * kRows,
                       _mm512_permutexvar_epi16(interleave, reinterpret_cast<const __m512i&>(pb)));
  }
  _mm512_store_ps(ws.den, _mm512_fmadd_ps(_mm512_load_ps(ws.den), corr, _mm512_add_ps(sum0, sum1)));
  _mm512_store_ps(ws.mx, new_max);
  if (_mm512_cmp_ps_mask(corr, _mm512_set1_ps(1.f), _CMP_NEQ_UQ) != 0)  // a max moved
    for (int d = 0; d < D; ++d)
      _mm512_store_ps(ws.ot + d * kRows, _mm512_mul_ps(_mm512_load_ps(ws.ot + d * kRows), corr));
}

// out rows = (O^T / den)^T, rows past n not written
template <int D>
void finish_tile(uint16_t* out, int64_t row_stride, int n, Workspace& ws) {
  const __m512 den = _mm512_load_ps(ws.den);
  const __m512 inv = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(den, _mm512_setzero_ps(), _CMP_GT_OQ),
                                         _mm512_set1_ps(1.f), den);
  for (int c = 0; c < D / 16; ++c) {
    __m512i r[16];
    for (int i = 0; i < 16; ++i)
      r[i] = _mm512_castps_si512(_mm512_mul_ps(_mm512_load_ps(ws.ot + (16 * c + i) * kRows), inv));
    transpose16(r);
    for (int m = 0; m < n; ++m) store16(_mm512_castsi512_ps(r[m]), out + m * row_stride + 16 * c);
  }
}
