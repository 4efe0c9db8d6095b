// Scatter of a step's new K/V rows into their cache slots (any element type: rows are
// copied as bytes). Replaces two torch index_copy_ calls per layer, which on CPU copy
// the strided k/v views (slices of the fused qkv output) at a few GB/s.
//   k, v    [T rows, row_bytes], row strides in bytes (rows may be strided)
//   cache   [2 (K|V), num_slots, row_bytes] contiguous; slots [T] int64
// Returns -1 (nothing written) when a slot is outside [0, num_slots), else 0.

#include <cstdint>
#include <cstring>

extern "C" {

int write_kv_rows(const char* k, const char* v, char* cache, const int64_t* slots,
                  int64_t num_tokens, int64_t row_bytes, int64_t k_stride, int64_t v_stride,
                  int64_t num_slots, int num_threads) {
  for (int64_t t = 0; t < num_tokens; ++t)
    if (slots[t] < 0 || slots[t] >= num_slots) return -1;
  char* v_cache = cache + num_slots * row_bytes;
#pragma omp parallel for num_threads(num_threads) schedule(static) if (num_tokens > 256)
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::memcpy(cache + slots[t] * row_bytes, k + t * k_stride, static_cast<size_t>(row_bytes));
    std::memcpy(v_cache + slots[t] * row_bytes, v + t * v_stride, static_cast<size_t>(row_bytes));
  }
  return 0;
}

}  // extern "C"
