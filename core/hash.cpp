#include "core/hash.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/random.h>

#include <array>
#include <cerrno>
#include <stdexcept>

namespace kiln::core {

namespace {
std::string to_hex(const unsigned char* bytes, std::size_t n) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = k_digits[bytes[i] >> 4];
    out[2 * i + 1] = k_digits[bytes[i] & 0xf];
  }
  return out;
}

void initialise_openssl() {
  // kiln needs nothing from openssl.cnf, and reading it is most of
  // OpenSSL's start-up cost: a one-step run should not pay for it.
  static const bool initialised = OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, nullptr) == 1;
  (void)initialised;
}

EVP_MD_CTX* context_of(void* context) {
  return static_cast<EVP_MD_CTX*>(context);
}
} // namespace

Sha256::Sha256() {
  initialise_openssl();
  m_context = EVP_MD_CTX_new();
  if (m_context == nullptr || EVP_DigestInit_ex(context_of(m_context), EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(context_of(m_context));
    throw std::runtime_error("SHA-256 failed in OpenSSL");
  }
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(context_of(m_context));
}

void Sha256::update(const void* data, std::size_t size) {
  if (EVP_DigestUpdate(context_of(m_context), data, size) != 1) {
    throw std::runtime_error("SHA-256 failed in OpenSSL");
  }
}

std::string Sha256::finish() {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(context_of(m_context), digest.data(), &length) != 1 ||
      EVP_DigestInit_ex(context_of(m_context), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 failed in OpenSSL");
  }
  return to_hex(digest.data(), length);
}

std::string sha256_hex(std::string_view data) {
  initialise_openssl();
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 failed in OpenSSL");
  }
  return to_hex(digest.data(), length);
}

std::string random_hex_id() {
  // From the kernel directly: OpenSSL's generator would be set up (and
  // cost more than the rest of a small run) for 16 bytes.
  std::array<unsigned char, 16> bytes{};
  std::size_t filled = 0;
  while (filled < bytes.size()) {
    const ssize_t n = getrandom(bytes.data() + filled, bytes.size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw std::runtime_error("no random bytes from the kernel");
    }
    filled += static_cast<std::size_t>(n);
  }
  return to_hex(bytes.data(), bytes.size());
}

} // namespace kiln::core
