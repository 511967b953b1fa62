#pragma once
// The HTTP seam: what the MLflow client asks of a transport, and the settings
// a real transport takes from the environment. The one real implementation
// (CurlTransport, curl_transport.hpp) is the only code that includes curl.h;
// tests substitute fakes. A transport is one connection's worth of state
// (kept alive between requests) and is used from one thread at a time; code
// that wants parallel connections makes several.
//
// Secrets (passwords, tokens, userinfo in the URL) live in HttpSettings only.
// Nothing a transport returns (errors, traces) contains them: see redact().

#include "core/expected.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::plugins {

struct HttpRequest {
  /// "GET", "POST", "PUT", "PATCH", "DELETE".
  std::string method = "GET";
  /// Absolute path and query, appended to the base URL's path:
  /// "/api/2.0/mlflow/runs/create", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=x".
  std::string target;
  /// Sent as Content-Type when the request has a body; "" = none.
  std::string content_type;
  std::string body;
  /// When not empty, the body is streamed from this file instead of `body`.
  std::filesystem::path body_file;
  /// false for a request that must not reach the server twice by accident
  /// (creating a run): it goes over a new connection, because libcurl
  /// silently sends a request again when a reused connection closes before
  /// any answer, although the server may have acted on it.
  bool idempotent = true;
};

struct HttpResponse {
  /// The HTTP status code (200, 404...).
  int status = 0;
  /// Lower-cased header names; the last value of a repeated header.
  std::map<std::string, std::string> headers;
  std::string body;
};

/// Why no response was received.
enum class TransportFailure {
  /// DNS, refused, reset, dropped mid-request, TLS handshake: no complete response.
  connection,
  /// No complete response within the request timeout.
  timeout,
  /// A failure retrying cannot fix: bad URL, certificate not trusted, unreadable body file.
  fatal,
};

struct TransportError {
  TransportFailure failure = TransportFailure::connection;
  /// Human-readable, already redacted.
  std::string message;
};

/// A response, or why there is none. An HTTP error status is a response.
struct HttpResult {
  std::optional<HttpResponse> response;
  TransportError error;

  bool ok() const { return response.has_value(); }
};

class HttpTransport {
public:
  virtual ~HttpTransport() = default;
  /// Sends one request, once (no retries here; see RetryPolicy).
  virtual HttpResult send(const HttpRequest& request) = 0;
};

/// What a transport needs to reach a server, read once from the environment
/// the way MLflow's own client reads it.
struct HttpSettings {
  /// Scheme, host, port and optional base path, without userinfo or a
  /// trailing '/': "http://127.0.0.1:5000", "https://mlflow.example.com/prefix".
  std::string base_url;
  /// Basic auth (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or userinfo in the URI).
  std::string username;
  std::string password;
  /// Bearer token (MLFLOW_TRACKING_TOKEN); takes precedence over Basic when both are set.
  std::string token;
  /// MLFLOW_TRACKING_INSECURE_TLS=true: do not verify the server's certificate.
  bool insecure_tls = false;
  /// MLFLOW_TRACKING_SERVER_CERT_PATH: CA bundle to verify the server with.
  std::string ca_cert_path;
  /// Whole-request timeout for requests without a file body
  /// (MLFLOW_HTTP_REQUEST_TIMEOUT, seconds; default 120).
  std::chrono::milliseconds request_timeout{120'000};
  /// Connection setup timeout.
  std::chrono::milliseconds connect_timeout{10'000};
  /// File uploads have no whole-request limit; instead they fail when slower
  /// than 1 KiB/s for this long. (libcurl averages the speed over its last
  /// 5 s, so a stall right after fast progress shows up to 5 s later.)
  std::chrono::milliseconds stall_timeout{60'000};
  /// Called with one line per request sent and per response or failure
  /// (method, target, status, sizes, time), never headers or credentials;
  /// empty = no trace. Used by --verbose.
  std::function<void(const std::string&)> trace;

  /// Every secret above, for redact(): the password and the token, and the
  /// user name when there is no password (a token put into a URI as
  /// https://TOKEN@host).
  std::vector<std::string> secrets() const;
};

/// Parses a tracking URI ("http://user:pass@host:5000/base/") into settings:
/// userinfo moves into username/password (percent-decoded), the rest into
/// base_url (scheme and host lower-cased). Only http and https are accepted,
/// without a query or fragment; the error names the URI (redacted) and what
/// to do.
core::Expected<HttpSettings> parse_tracking_uri(std::string_view uri);

/// Reads MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD,
/// MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_INSECURE_TLS,
/// MLFLOW_TRACKING_SERVER_CERT_PATH and MLFLOW_HTTP_REQUEST_TIMEOUT through
/// `getenv` (injected for tests) into `settings`, keeping values already set
/// from the URI unless the variable is set (set and empty counts as unset).
/// An unparsable value is an error naming the variable; so is asking for
/// both insecure TLS and a CA file, as MLflow does.
core::Expected<void> apply_environment(HttpSettings& settings,
                                       const std::function<const char*(const char*)>& getenv);

/// `text` with every occurrence of each non-empty secret replaced by "***",
/// and any "scheme://user:pass@" userinfo replaced by "scheme://***@".
std::string redact(std::string_view text, const std::vector<std::string>& secrets);

/// Every byte outside RFC 3986's unreserved set (and '/' unless
/// `keep_slash`) as %XX: for query values and paths, and how a secret looks
/// when someone has put it into a URL.
std::string percent_encode(std::string_view text, bool keep_slash = false);

/// The URI as it may be shown and stored: userinfo removed.
std::string display_uri(std::string_view uri);

// ---- Retries ----

/// How failed requests are retried, like MLflow's client
/// (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
/// MLFLOW_HTTP_REQUEST_BACKOFF_JITTER): retry n (1-based) waits
/// min(max_delay, backoff_factor * 2^(n-1)) plus a uniform random jitter in
/// [0, jitter], or what Retry-After asks when that is longer (capped at
/// max_delay). No retry starts whose wait would end more than `budget` after
/// the first try began.
struct RetryPolicy {
  int max_retries = 7;
  std::chrono::duration<double> backoff_factor{2.0};
  std::chrono::duration<double> jitter{1.0};
  std::chrono::duration<double> max_delay{60.0};
  std::chrono::duration<double> budget{600.0};

  /// Reads the three MLFLOW_HTTP_REQUEST_* variables above into a copy of `defaults`.
  static core::Expected<RetryPolicy> from_environment(const RetryPolicy& defaults,
                                                      const std::function<const char*(const char*)>& getenv);
};

/// Whether a result is worth another try: connection errors, timeouts, 408,
/// 429 and 5xx. (Other statuses are answers, not faults.)
bool is_retryable(const HttpResult& result);

/// Seconds asked by a Retry-After header (delta-seconds or an HTTP date,
/// relative to `now`); nullopt when absent or unparsable.
std::optional<std::chrono::duration<double>> retry_after(const HttpResponse& response,
                                                         std::chrono::system_clock::time_point now);

/// Sleeping and randomness, injected so tests of the retry loop take no time.
class RetryEnvironment {
public:
  virtual ~RetryEnvironment() = default;
  virtual void sleep(std::chrono::duration<double> duration) = 0;
  virtual std::chrono::steady_clock::time_point now() = 0;
  virtual std::chrono::system_clock::time_point wall_now() = 0;
  /// Uniform in [0, 1).
  virtual double uniform() = 0;
};
/// The real one: std::this_thread::sleep_for, the system clocks, a seeded PRNG.
RetryEnvironment& system_retry_environment();

/// Sends `request` through `transport` until it gets a non-retryable result
/// or the policy gives up; returns the last result. `before_retry`, when
/// set, is called before each retry (after its wait) with the failed
/// result and may return false to stop retrying (and return that result). Each retry is traced
/// through `trace` when set ("retrying POST /x in 1.2 s after 503").
HttpResult send_with_retries(HttpTransport& transport, const HttpRequest& request, const RetryPolicy& policy,
                             RetryEnvironment& environment,
                             const std::function<bool(const HttpResult&)>& before_retry = {},
                             const std::function<void(const std::string&)>& trace = {});

} // namespace kiln::plugins
