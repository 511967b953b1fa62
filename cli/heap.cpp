#include "cli/heap.hpp"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace kiln::cli {

void use_huge_pages() {
  static bool done = false;
  if (done) {
    return;
  }
  done = true;
  // The heap is extended once by 128 MiB (address space, not memory:
  // untouched pages cost nothing), advised, and neither trimmed nor bypassed
  // by mmap for large blocks afterwards, so what the run allocates lands in
  // the advised range.
  constexpr std::size_t k_reserve = std::size_t{128} << 20;
  constexpr std::uintptr_t k_huge = std::uintptr_t{2} << 20;
  mallopt(M_TOP_PAD, static_cast<int>(k_reserve));
  mallopt(M_TRIM_THRESHOLD, static_cast<int>(2 * k_reserve));
  mallopt(M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
  // What malloc serves next is the heap's free top, then what it extends
  // the heap by. A block larger than that top makes it extend the heap by
  // the pad; the range advised runs from the top's start to the new end.
  // (Earlier frees may have left a large top: a fixed-size probe would
  // then fit in it, extend nothing, and leave the heap unadvised.)
  auto* start = static_cast<char*>(sbrk(0));
  const std::size_t top = mallinfo2().keepcost;
  // (The probe stays well under the mmap threshold; a top above 16 MiB is
  // advised as it is. volatile: the pair is not elided.)
  void* volatile probe = std::malloc(std::min(top, std::size_t{16} << 20) + (std::size_t{256} << 10));
  auto* end = static_cast<char*>(sbrk(0));
  std::free(probe);
  const auto from = (reinterpret_cast<std::uintptr_t>(start - top) + k_huge - 1) & ~(k_huge - 1);
  const auto to = reinterpret_cast<std::uintptr_t>(end) & ~(k_huge - 1);
  if (to > from) {
    (void)madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
  }
}

void exit_leaving_heap(int status) {
#if defined(__SANITIZE_ADDRESS__)
  (void)status;
#else
  std::fflush(nullptr);
  std::_Exit(status);
#endif
}

} // namespace kiln::cli
