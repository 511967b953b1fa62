#pragma once
// SHA-256 through OpenSSL, in one place.

#include <cstddef>
#include <string>
#include <string_view>

namespace kiln::core {

/// Incremental SHA-256, for content streamed in chunks.
class Sha256 {
public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t size);
  /// Lower-case hex digest of everything fed so far; the hasher then starts over.
  std::string finish();

private:
  // OpenSSL's EVP_MD_CTX, kept opaque so OpenSSL stays inside hash.cpp.
  void* m_context = nullptr;
};

/// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

/// 32 random lower-case hex digits (128 bits from the OS), MLflow's run id shape.
std::string random_hex_id();

} // namespace kiln::core
