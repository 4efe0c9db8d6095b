// Paged decode attention for a bfloat16 cache on CPUs with AVX512-BF16 (included by
// paged_decode.cpp inside its namespace, after `Shape` and `exp512`; not a standalone header).
//
// Why a second AVX-512 path: the float path widens every K element to float32 and reduces
// each (token, head) dot product horizontally, which makes decode compute-bound at about
// half the bandwidth one core can stream. Here:
// * q.k runs on vdpbf16ps straight from the bf16 rows (bf16 x bf16 products are exact in
//   float32, sums in float32); the 16 dot products of a chunk are reduced together by one
//   transpose-and-add tree instead of 16 horizontal sums. The scale is applied to the sums.
// * V rows are widened by halves: the even elements of 32 bf16 are one shift, the odd ones
//   one AND, so the accumulators hold each 32-wide slice as even dims then odd dims, put
//   back in order once at the end.
// * The online softmax updates once per chunk of up to kSubs x 16 tokens for every head
//   (scores of all heads first, then the independent max/exp/sum chains, then p.V), and the
//   next chunk's K and V are prefetched while this chunk's scores are computed.
// Probabilities stay float32 (no rounding to bf16 before p.V).
#pragma once

#if defined(__AVX512BF16__)

// d[t] holds 16 partial sums of token t; returns the vector whose lane t is their total.
inline __m512 reduce16(const __m512* d) {
  __m512 l1[8], l2[4], l3[2];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3]
    l1[i] = _mm512_add_ps(_mm512_unpacklo_ps(d[2 * i], d[2 * i + 1]),
                          _mm512_unpackhi_ps(d[2 * i], d[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per 128-bit lane: [a, b, c, d], each a lane's partial
    l2[i] = _mm512_add_ps(_mm512_shuffle_ps(l1[2 * i], l1[2 * i + 1], 0x44),
                          _mm512_shuffle_ps(l1[2 * i], l1[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)  // pairs of 128-bit lanes summed
    l3[i] = _mm512_add_ps(_mm512_shuffle_f32x4(l2[2 * i], l2[2 * i + 1], 0x88),
                          _mm512_shuffle_f32x4(l2[2 * i], l2[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(l3[0], l3[1], 0x88),
                       _mm512_shuffle_f32x4(l3[0], l3[1], 0xDD));
}

inline __m512bh as_bh(__m512i x) { return reinterpret_cast<__m512bh&>(x); }

constexpr int kSubs = 2;  // sub-chunks (<= 16 tokens, inside one block) per softmax update

// floats of workspace `attend_seq_bf16` needs beyond its accumulators
inline int64_t bf16_scratch_floats(int64_t num_heads) { return num_heads * (kSubs * 16 + 3) + 32; }

// Where a chunk's sub-chunks start (element offset of kv head 0) and how many tokens each
// holds; returns the number of sub-chunks and advances `tok` past them.
inline int plan_chunk(const int64_t* table, int64_t bs, int64_t kv_row, int64_t ctx_len,
                      int64_t& tok, int64_t* offs, int* lens) {
  int nsub = 0;
  while (nsub < kSubs && tok < ctx_len) {
    const int64_t b = tok / bs, t0 = tok - b * bs;
    const int n = static_cast<int>(std::min<int64_t>({16, bs - t0, ctx_len - tok}));
    offs[nsub] = (table[b] * bs + t0) * kv_row;
    lens[nsub++] = n;
    tok += n;
  }
  return nsub;
}

template <int D, int G>
void attend_seq_bf16(const uint16_t* q, uint16_t* out, const uint16_t* k_cache,
                     const uint16_t* v_cache, const int64_t* table, int64_t ctx_len,
                     const Shape& s, float* ws) {
  constexpr int W = D / 32;  // zmm registers per bf16 row
  constexpr int SC = kSubs * 16;
  const int64_t bs = s.block_size, kv_heads = s.num_kv_heads, kv_row = kv_heads * D;
  const int64_t nh = kv_heads * G;
  float* accs = ws;            // [nh, D] running sums of p * v (even/odd order per 32 dims)
  float* mxs = accs + nh * D;  // [nh] running max
  float* dens = mxs + nh;      // [nh] running softmax denominator
  float* corr = dens + nh;     // [nh] this chunk's rescale of the old sums
  float* sc = reinterpret_cast<float*>(
      (reinterpret_cast<uintptr_t>(corr + nh) + 63) & ~uintptr_t(63));  // [nh, SC]
  for (int64_t i = 0; i < nh; ++i) {
    for (int j = 0; j < D / 16; ++j) _mm512_storeu_ps(accs + i * D + 16 * j, _mm512_setzero_ps());
    mxs[i] = -1e30f;
    dens[i] = 0.f;
  }
  const __m512 scale = _mm512_set1_ps(s.scale);
  const __m512 neg = _mm512_set1_ps(-1e30f);
  const __m512i odd_mask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const int64_t pos = ctx_len - 1;
  const int64_t first = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
  int64_t offs[kSubs], next_offs[kSubs];
  int lens[kSubs], next_lens[kSubs];
  int64_t tok = first;
  int nsub = plan_chunk(table, bs, kv_row, ctx_len, tok, offs, lens);
  while (nsub > 0) {
    const int next_nsub = plan_chunk(table, bs, kv_row, ctx_len, tok, next_offs, next_lens);
    // the next chunk's rows, a share per head below (into L2: it is used a chunk later)
    const int64_t pf_bytes = 16 * kv_row * static_cast<int64_t>(sizeof(uint16_t));
    const int64_t pf_share = (pf_bytes + nh - 1) / nh;
    // 1. scores of every head: sc[head][sub * 16 + t], -1e30 where no token
    for (int64_t kvh = 0; kvh < kv_heads; ++kvh) {
      for (int h = 0; h < G; ++h) {
        const int64_t head = kvh * G + h;
        for (int k = 0; k < next_nsub; ++k) {
          const char* pk = reinterpret_cast<const char*>(k_cache + next_offs[k]);
          const char* pv = reinterpret_cast<const char*>(v_cache + next_offs[k]);
          const int64_t end = std::min(next_lens[k] * kv_row * 2, (head + 1) * pf_share);
          for (int64_t o = head * pf_share; o < end; o += 64) {
            _mm_prefetch(pk + o, _MM_HINT_T2);
            _mm_prefetch(pv + o, _MM_HINT_T2);
          }
        }
        __m512i qv[W];
        for (int j = 0; j < W; ++j) qv[j] = _mm512_loadu_si512(q + head * D + 32 * j);
        for (int i = 0; i < nsub; ++i) {
          const uint16_t* kb = k_cache + offs[i] + kvh * D;
          __m512 d[16];
          for (int t = 0; t < 16; ++t) {
            __m512 a = _mm512_setzero_ps();
            if (t < lens[i])
              for (int j = 0; j < W; ++j)
                a = _mm512_dpbf16_ps(a, as_bh(qv[j]),
                                     as_bh(_mm512_loadu_si512(kb + t * kv_row + 32 * j)));
            d[t] = a;
          }
          const __mmask16 valid = static_cast<__mmask16>((1u << lens[i]) - 1u);
          _mm512_store_ps(sc + head * SC + 16 * i,
                          _mm512_mask_mul_ps(neg, valid, reduce16(d), scale));
        }
      }
    }
    // 2. online softmax per head: scores -> probabilities in place, rescale factor
    for (int64_t i = 0; i < nh; ++i) {
      float* sh = sc + i * SC;
      __m512 m = _mm512_load_ps(sh);
      for (int k = 1; k < nsub; ++k) m = _mm512_max_ps(m, _mm512_load_ps(sh + 16 * k));
      const float new_max = std::max(mxs[i], _mm512_reduce_max_ps(m));
      const __m512 nm = _mm512_set1_ps(new_max);
      __m512 sum = _mm512_setzero_ps();
      for (int k = 0; k < nsub; ++k) {
        const __m512 sv = _mm512_load_ps(sh + 16 * k);
        const __m512 p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(sv, neg, _CMP_GT_OQ),
                                             exp512(_mm512_sub_ps(sv, nm)));
        _mm512_store_ps(sh + 16 * k, p);
        sum = _mm512_add_ps(sum, p);
      }
      corr[i] = std::exp(mxs[i] - new_max);
      dens[i] = dens[i] * corr[i] + _mm512_reduce_add_ps(sum);
      mxs[i] = new_max;
    }
    // 3. accumulate p . V per KV head, its G query heads' sums in registers
    for (int64_t kvh = 0; kvh < kv_heads; ++kvh) {
      float* ah = accs + kvh * G * D;
      const float* ph = sc + kvh * G * SC;
      __m512 acc[G][2 * W];
      for (int h = 0; h < G; ++h) {
        const __m512 c = _mm512_set1_ps(corr[kvh * G + h]);
        for (int j = 0; j < 2 * W; ++j)
          acc[h][j] = _mm512_mul_ps(_mm512_loadu_ps(ah + h * D + 16 * j), c);
      }
      for (int i = 0; i < nsub; ++i) {
        const uint16_t* vb = v_cache + offs[i] + kvh * D;
        for (int t = 0; t < lens[i]; ++t) {
          __m512 vv[2 * W];
          for (int j = 0; j < W; ++j) {
            const __m512i raw = _mm512_loadu_si512(vb + t * kv_row + 32 * j);
            vv[2 * j] = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));         // even dims
            vv[2 * j + 1] = _mm512_castsi512_ps(_mm512_and_si512(raw, odd_mask));  // odd dims
          }
          for (int h = 0; h < G; ++h) {
            const __m512 pt = _mm512_set1_ps(ph[h * SC + 16 * i + t]);
            for (int j = 0; j < 2 * W; ++j) acc[h][j] = _mm512_fmadd_ps(pt, vv[j], acc[h][j]);
          }
        }
      }
      for (int h = 0; h < G; ++h)
        for (int j = 0; j < 2 * W; ++j) _mm512_storeu_ps(ah + h * D + 16 * j, acc[h][j]);
    }
    nsub = next_nsub;
    for (int k = 0; k < nsub; ++k) {
      offs[k] = next_offs[k];
      lens[k] = next_lens[k];
    }
  }
  // even/odd halves back to dimension order, divided by the softmax denominator
  const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi_idx =
      _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  alignas(64) float tmp[32];
  for (int64_t i = 0; i < nh; ++i) {
    const __m512 inv = _mm512_set1_ps(1.f / dens[i]);
    for (int j = 0; j < W; ++j) {
      const __m512 even = _mm512_mul_ps(_mm512_loadu_ps(accs + i * D + 32 * j), inv);
      const __m512 odd = _mm512_mul_ps(_mm512_loadu_ps(accs + i * D + 32 * j + 16), inv);
      _mm512_store_ps(tmp, _mm512_permutex2var_ps(even, lo_idx, odd));
      _mm512_store_ps(tmp + 16, _mm512_permutex2var_ps(even, hi_idx, odd));
      for (int e = 0; e < 32; ++e) store(tmp[e], out + i * D + 32 * j + e);
    }
  }
}

template <int D>
SeqFn<uint16_t> pick_group_bf16(int64_t group) {
  switch (group) {
    case 1: return attend_seq_bf16<D, 1>;
    case 2: return attend_seq_bf16<D, 2>;
    case 3: return attend_seq_bf16<D, 3>;
    case 4: return attend_seq_bf16<D, 4>;
    case 5: return attend_seq_bf16<D, 5>;
    case 6: return attend_seq_bf16<D, 6>;
    case 7: return attend_seq_bf16<D, 7>;
    case 8: return attend_seq_bf16<D, 8>;
    default: return nullptr;
  }
}

// The bf16 kernel for this head_dim / group, or nullptr where it has no variant.
inline SeqFn<uint16_t> pick_bf16(int64_t head_dim, int64_t group) {
  switch (head_dim) {
    case 32: return pick_group_bf16<32>(group);
    case 64: return pick_group_bf16<64>(group);
    case 128: return pick_group_bf16<128>(group);
    default: return nullptr;
  }
}

#endif  // __AVX512BF16__
