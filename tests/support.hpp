#pragma once
// Helpers every test binary may use: a temp directory per test, and
// REQUIRE-ing that an Expected holds a value.

#include "core/expected.hpp"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

namespace kiln::test {

/// A fresh directory under the system temp dir (canonical, so symlinked
/// /tmp setups compare equal), removed with its contents.
class TempDir {
public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln-test-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    m_path = std::filesystem::canonical(pattern);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(m_path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return m_path; }
  std::string file(const std::string& name) const { return (m_path / name).string(); }
  /// Writes `content` to `name` in the directory and returns its path.
  std::filesystem::path write(const std::string& name, const std::string& content) const {
    const std::filesystem::path path = m_path / name;
    std::ofstream out(path, std::ios::binary);
    out << content;
    REQUIRE(out.good());
    return path;
  }

private:
  std::filesystem::path m_path;
};

/// The value; the test stops with the error when there is none.
template <typename T>
T ok(core::Expected<T> result) {
  REQUIRE_MESSAGE(result.ok(), (result.ok() ? "" : result.error()));
  return std::move(result).value();
}

inline void check(const core::Expected<void>& result) {
  REQUIRE_MESSAGE(result.ok(), (result.ok() ? "" : result.error()));
}

} // namespace kiln::test
