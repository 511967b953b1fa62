#include "cli/heap.hpp"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

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
  auto* start = static_cast<char*>(sbrk(0));
  // A block larger than the heap's free top makes malloc extend it by the
  // pad. (volatile: the compiler may not elide the pair.)
  void* volatile probe = std::malloc(std::size_t{256} << 10);
  auto* end = static_cast<char*>(sbrk(0));
  std::free(probe);
  const auto from = (reinterpret_cast<std::uintptr_t>(start) + k_huge - 1) & ~(k_huge - 1);
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
