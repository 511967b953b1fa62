#pragma once
// The one place kiln talks HTTP for real: an HttpTransport over one libcurl
// easy handle, so consecutive requests reuse the connection (keep-alive).
// Not thread-safe; use one per thread. Redirects are not followed (a 3xx is a
// response), and libcurl's usual proxy variables (https_proxy...) apply.

#include "plugins/http_transport.hpp"

#include <memory>

namespace kiln::plugins {

/// Initialises libcurl once per process; call before starting threads that
/// make transports (curl_global_init is not thread-safe). Idempotent.
void init_http();

class CurlTransport final : public HttpTransport {
public:
  explicit CurlTransport(HttpSettings settings);
  ~CurlTransport() override;
  CurlTransport(const CurlTransport&) = delete;
  CurlTransport& operator=(const CurlTransport&) = delete;

  HttpResult send(const HttpRequest& request) override;

  /// Connections this transport has opened so far (1 while keep-alive holds).
  long connections_opened() const;

private:
  struct State;
  std::unique_ptr<State> m_state;
};

} // namespace kiln::plugins
