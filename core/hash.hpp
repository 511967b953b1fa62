#pragma once
// SHA-256 through OpenSSL, in one place.

#include <string>
#include <string_view>

namespace kiln::core {

/// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

/// 32 random lower-case hex digits (128 bits from the OS), MLflow's run id shape.
std::string random_hex_id();

} // namespace kiln::core
