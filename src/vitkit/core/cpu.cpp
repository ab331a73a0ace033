#include "vitkit/core/cpu.h"

#include <cpuid.h>

namespace vitkit {

bool cpu_has_native_bf16() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  const bool avx512_bf16 = a & (1u << 5);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return avx512_bf16;
  const bool amx_bf16 = d & (1u << 22);
  return avx512_bf16 || amx_bf16;
}

}  // namespace vitkit
