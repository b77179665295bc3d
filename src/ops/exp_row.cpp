#include "ops/exp_row.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/avx512.h"
#include "ops/cpu.h"

namespace bakallm {

namespace {

BAKALLM_AVX512 std::pair<float, float> exp_row_avx512(float* x, int64_t n) {
  const int64_t whole = n / 16 * 16;
  __m512 vm = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < whole; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + j));
  float m = _mm512_reduce_max_ps(vm);
  for (int64_t j = whole; j < n; ++j) m = std::max(m, x[j]);
  const __m512 vmax = _mm512_set1_ps(m);
  __m512 vs = _mm512_setzero_ps();
  for (int64_t j = 0; j < whole; j += 16) {
    const __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_loadu_ps(x + j), vmax));
    _mm512_storeu_ps(x + j, e);
    vs = _mm512_add_ps(vs, e);
  }
  float sum = _mm512_reduce_add_ps(vs);
  for (int64_t j = whole; j < n; ++j) sum += (x[j] = std::exp(x[j] - m));
  return {m, sum};
}

std::pair<float, float> exp_row_portable(float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += (x[j] = std::exp(x[j] - m));
  return {m, sum};
}

}  // namespace

std::pair<float, float> exp_row_(float* x, int64_t n) {
  return cpu_has_avx512() ? exp_row_avx512(x, n) : exp_row_portable(x, n);
}

}  // namespace bakallm
