#pragma once
// Helpers every test binary may use: a temp directory per test, and
// REQUIRE-ing that an Expected holds a value.

#include "core/expected.hpp"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
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
  std::filesystem::path write(const std::string& name, const std::string& content) const;

private:
  std::filesystem::path m_path;
};

/// Writes `content` to `path`, creating its directory; the test stops if it cannot.
inline void write_file(const std::filesystem::path& path, const std::string& content) {
  if (path.has_parent_path()) {
    std::filesystem::create_directories(path.parent_path());
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  REQUIRE(out.good());
}

/// The file's bytes; "" when it cannot be read.
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::filesystem::path TempDir::write(const std::string& name, const std::string& content) const {
  const std::filesystem::path path = m_path / name;
  write_file(path, content);
  return path;
}

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
