#include "cli/heap.hpp"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace {

/// The VmFlags of the mapping holding `address`, from /proc/self/smaps.
std::string vm_flags_of(const void* address) {
  const auto at = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    std::uintptr_t from = 0;
    std::uintptr_t to = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> from >> dash >> to && dash == '-' && line.find(' ') != std::string::npos &&
        line.find(':') > line.find(' ')) {
      inside = from <= at && at < to;
      continue;
    }
    if (inside && line.starts_with("VmFlags:")) {
      return line;
    }
  }
  return "";
}

} // namespace

TEST_SUITE("cli::use_huge_pages") {
  TEST_CASE("what a large workflow allocates afterwards lands in a range advised for huge pages") {
    kiln::cli::use_huge_pages();
    kiln::cli::use_huge_pages(); // idempotent
    // Larger than glibc's default mmap threshold: without the call it would
    // get a mapping of its own, never advised.
    constexpr std::size_t k_size = std::size_t{4} << 20;
    void* volatile block = std::malloc(k_size);
    REQUIRE(block != nullptr);
    std::memset(block, 1, k_size);
#if defined(__SANITIZE_ADDRESS__)
    // ASan's allocator replaces glibc's heap; the advice does not reach it.
    CHECK(static_cast<unsigned char*>(block)[k_size - 1] == 1);
#else
    const std::string flags = vm_flags_of(static_cast<char*>(block) + k_size / 2);
    INFO("VmFlags: ", flags);
    CHECK(flags.find(" hg") != std::string::npos);
#endif
    std::free(block);
  }
}

TEST_SUITE("cli::exit_leaving_heap") {
  TEST_CASE("the process ends with the status, and what stdio buffered is written") {
    int out[2];
    REQUIRE(::pipe(out) == 0);
    std::fflush(stdout); // (the child must not write what the parent buffered)
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      // A pipe: stdout is fully buffered, so this stays in the buffer.
      std::printf("buffered line\n");
      kiln::cli::exit_leaving_heap(7);
      // A sanitizer build returns, to free as usual.
      std::exit(7);
    }
    ::close(out[1]);
    std::string written;
    char buffer[256];
    for (ssize_t n = 0; (n = ::read(out[0], buffer, sizeof buffer)) > 0;) {
      written.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 7);
    CHECK(written == "buffered line\n");
  }
}
