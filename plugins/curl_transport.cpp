// HttpTransport over one libcurl easy handle. The handle lives as long as the
// transport and every request goes through it, so libcurl keeps the
// connection (and TLS session) alive between requests. Each request starts
// from curl_easy_reset, which clears options but keeps live connections and
// caches, then sets everything it needs: no option leaks from one request
// into the next. Redirects are not followed: a 3xx is returned as a response,
// and credentials never go to a host the user did not name.
//
// Secrets reach libcurl only as options (user name, password, the
// Authorization header); every text this file produces goes through redact().

#include "plugins/curl_transport.hpp"

#include <curl/curl.h>
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kiln::plugins {

namespace {

// libcurl is loaded when the first transport is made, not when kiln starts.
// Linked, it and the two dozen libraries it pulls in (TLS, LDAP, Kerberos,
// SSH, IDN...) cost every kiln command about 10 ms of dynamic linking on
// start, `kiln log` included, which steps call once per metric; only push
// talks HTTP. The headers still give the types and constants.
constexpr const char* k_libcurl = "libcurl.so.4";

struct CurlApi {
  decltype(&::curl_global_init) global_init = nullptr;
  decltype(&::curl_easy_init) easy_init = nullptr;
  decltype(&::curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&::curl_easy_reset) easy_reset = nullptr;
  decltype(&::curl_easy_perform) easy_perform = nullptr;
  decltype(&::curl_easy_setopt) easy_setopt = nullptr;
  decltype(&::curl_easy_getinfo) easy_getinfo = nullptr;
  decltype(&::curl_easy_strerror) easy_strerror = nullptr;
  decltype(&::curl_slist_append) slist_append = nullptr;
  decltype(&::curl_slist_free_all) slist_free_all = nullptr;
};

CurlApi g_curl;

template <typename Function>
void resolve(void* library, Function& function, const char* name) {
  void* symbol = dlsym(library, name);
  if (symbol == nullptr) {
    throw std::runtime_error(std::string("the libcurl loaded has no ") + name + "; is it libcurl 7.17 or later?");
  }
  function = reinterpret_cast<Function>(symbol);
}

// Called once, under init_http's once_flag. The handle is never closed.
// KILN_LIBCURL names another build (libcurl-gnutls.so.4, a path).
void load_libcurl() {
  const char* chosen = std::getenv("KILN_LIBCURL");
  const std::string name = chosen != nullptr && *chosen != '\0' ? chosen : k_libcurl;
  void* library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* why = dlerror();
    throw std::runtime_error("cannot load " + name + " (" + (why != nullptr ? why : "not found") +
                             "); pushing needs libcurl: install it (apt-get install libcurl4) or name it in "
                             "KILN_LIBCURL");
  }
  resolve(library, g_curl.global_init, "curl_global_init");
  resolve(library, g_curl.easy_init, "curl_easy_init");
  resolve(library, g_curl.easy_cleanup, "curl_easy_cleanup");
  resolve(library, g_curl.easy_reset, "curl_easy_reset");
  resolve(library, g_curl.easy_perform, "curl_easy_perform");
  resolve(library, g_curl.easy_setopt, "curl_easy_setopt");
  resolve(library, g_curl.easy_getinfo, "curl_easy_getinfo");
  resolve(library, g_curl.easy_strerror, "curl_easy_strerror");
  resolve(library, g_curl.slist_append, "curl_slist_append");
  resolve(library, g_curl.slist_free_all, "curl_slist_free_all");
}

constexpr const char* k_user_agent = "kiln/" KILN_VERSION;
// Uploads from a file fail when slower than this for stall_timeout.
constexpr long k_low_speed_limit = 1024;

// strerror, thread-safe.
std::string error_text(int error) {
  return std::generic_category().message(error);
}

// A file body, read by libcurl through read/seek callbacks. libcurl may
// rewind it (a kept-alive connection found dead before the body went out).
struct FileBody {
  int fd = -1;
  curl_off_t size = 0;
  curl_off_t offset = 0;
  // Why the upload was aborted from a callback; empty otherwise.
  std::string failure;

  ~FileBody() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
};

std::size_t read_body(char* buffer, std::size_t size, std::size_t count, void* user) {
  auto* body = static_cast<FileBody*>(user);
  const curl_off_t wanted = std::min<curl_off_t>(static_cast<curl_off_t>(size * count), body->size - body->offset);
  if (wanted <= 0) {
    return 0;
  }
  ssize_t got = 0;
  do {
    got = ::pread(body->fd, buffer, static_cast<std::size_t>(wanted), body->offset);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    body->failure = error_text(errno);
    return CURL_READFUNC_ABORT;
  }
  if (got == 0) {
    // Shorter than when the upload started: sending less than the announced
    // Content-Length would leave the server waiting.
    body->failure = "the file shrank during the upload";
    return CURL_READFUNC_ABORT;
  }
  body->offset += got;
  return static_cast<std::size_t>(got);
}

int seek_body(void* user, curl_off_t offset, int origin) {
  auto* body = static_cast<FileBody*>(user);
  if (origin != SEEK_SET || offset < 0 || offset > body->size) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  body->offset = offset;
  return CURL_SEEKFUNC_OK;
}

std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<HttpResponse*>(user)->body.append(data, size * count);
  return size * count;
}

// One header line. A status line starts a new header block: the final
// response's headers replace those of a 100 Continue or similar.
std::size_t write_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* response = static_cast<HttpResponse*>(user);
  std::string_view line(data, size * count);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
    line.remove_suffix(1);
  }
  if (line.starts_with("HTTP/")) {
    response->headers.clear();
    return size * count;
  }
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return size * count;
  }
  std::string name(line.substr(0, colon));
  for (char& c : name) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
    value.remove_prefix(1);
  }
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.remove_suffix(1);
  }
  response->headers[name] = std::string(value);
  return size * count;
}

class HeaderList {
public:
  HeaderList() = default;
  ~HeaderList() { g_curl.slist_free_all(m_list); }
  HeaderList(const HeaderList&) = delete;
  HeaderList& operator=(const HeaderList&) = delete;

  void add(const std::string& header) {
    curl_slist* next = g_curl.slist_append(m_list, header.c_str());
    if (next == nullptr) {
      throw std::bad_alloc();
    }
    m_list = next;
  }
  curl_slist* get() const { return m_list; }

private:
  curl_slist* m_list = nullptr;
};

std::string format_size(curl_off_t bytes) {
  if (bytes < 1024) {
    return std::to_string(bytes) + " B";
  }
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  return text;
}

HttpResult failure(TransportFailure kind, std::string message) {
  HttpResult result;
  result.error = TransportError{kind, std::move(message)};
  return result;
}

} // namespace

void init_http() {
  static std::once_flag once;
  std::call_once(once, [] {
    load_libcurl();
    if (g_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("cannot initialise libcurl");
    }
  });
}

struct CurlTransport::State {
  HttpSettings settings;
  std::vector<std::string> secrets;
  CURL* curl = nullptr;
  long connections = 0;
  char error_buffer[CURL_ERROR_SIZE] = {};

  // Sets what every request needs; the request's own options come after.
  void set_common_options(HttpResponse& response);
  // The error for a failed curl_easy_perform, before redaction.
  TransportError describe(CURLcode code, const HttpRequest& request, const FileBody* body) const;
  void trace(const HttpRequest& request, const HttpResult& result, std::chrono::milliseconds took) const;
};

void CurlTransport::State::set_common_options(HttpResponse& response) {
  g_curl.easy_reset(curl);
  error_buffer[0] = '\0';
  g_curl.easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  g_curl.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
  g_curl.easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  g_curl.easy_setopt(curl, CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  g_curl.easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  g_curl.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(settings.connect_timeout.count()));
  g_curl.easy_setopt(curl, CURLOPT_USERAGENT, k_user_agent);
  g_curl.easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_body);
  g_curl.easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  g_curl.easy_setopt(curl, CURLOPT_HEADERFUNCTION, write_header);
  g_curl.easy_setopt(curl, CURLOPT_HEADERDATA, &response);
  if (settings.token.empty() && (!settings.username.empty() || !settings.password.empty())) {
    g_curl.easy_setopt(curl, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    g_curl.easy_setopt(curl, CURLOPT_USERNAME, settings.username.c_str());
    g_curl.easy_setopt(curl, CURLOPT_PASSWORD, settings.password.c_str());
  }
  if (settings.insecure_tls) {
    g_curl.easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    g_curl.easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (!settings.ca_cert_path.empty()) {
    g_curl.easy_setopt(curl, CURLOPT_CAINFO, settings.ca_cert_path.c_str());
  }
}

TransportError CurlTransport::State::describe(CURLcode code, const HttpRequest& request, const FileBody* body) const {
  const std::string& url = settings.base_url;
  const std::string detail = error_buffer[0] != '\0' ? std::string(error_buffer) : g_curl.easy_strerror(code);
  switch (code) {
  case CURLE_OPERATION_TIMEDOUT:
    // libcurl's text says which limit: connect, whole request, or too slow.
    return {TransportFailure::timeout, request.method + " " + url + request.target + " timed out: " + detail};
  case CURLE_COULDNT_CONNECT: {
    long os_error = 0;
    g_curl.easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_error);
    return {TransportFailure::connection,
            "cannot connect to " + url + ": " + (os_error != 0 ? error_text(static_cast<int>(os_error)) : detail)};
  }
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return {TransportFailure::connection, "cannot resolve the host of " + url + ": " + detail};
  case CURLE_SSL_CONNECT_ERROR:
    return {TransportFailure::connection, "TLS handshake with " + url + " failed: " + detail};
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SEND_FAIL_REWIND:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_WEIRD_SERVER_REPLY:
    return {TransportFailure::connection,
            "connection to " + url + " lost during " + request.method + " " + request.target + ": " + detail};
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_CRL_BADFILE:
    return {TransportFailure::fatal, "cannot verify the TLS certificate of " + url + ": " + detail +
                                         " (set MLFLOW_TRACKING_SERVER_CERT_PATH to a CA bundle that signs it, or "
                                         "MLFLOW_TRACKING_INSECURE_TLS=true to skip the check)"};
  case CURLE_ABORTED_BY_CALLBACK:
  case CURLE_READ_ERROR:
    return {TransportFailure::fatal, "cannot upload " + request.body_file.string() + ": " +
                                         (body != nullptr && !body->failure.empty() ? body->failure : detail)};
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_BAD_FUNCTION_ARGUMENT:
  case CURLE_NOT_BUILT_IN:
  case CURLE_OUT_OF_MEMORY:
  case CURLE_LOGIN_DENIED:
    return {TransportFailure::fatal, request.method + " " + url + request.target + ": " + detail};
  default: return {TransportFailure::connection, request.method + " " + url + request.target + " failed: " + detail};
  }
}

void CurlTransport::State::trace(const HttpRequest& request, const HttpResult& result,
                                 std::chrono::milliseconds took) const {
  if (!settings.trace) {
    return;
  }
  std::string line = request.method + " " + request.target + " -> ";
  if (result.ok()) {
    curl_off_t sent = 0;
    curl_off_t received = 0;
    g_curl.easy_getinfo(curl, CURLINFO_SIZE_UPLOAD_T, &sent);
    g_curl.easy_getinfo(curl, CURLINFO_SIZE_DOWNLOAD_T, &received);
    line += std::to_string(result.response->status) + " (" + std::to_string(took.count()) + " ms, sent " +
            format_size(sent) + ", received " + format_size(received) + ")";
  } else {
    switch (result.error.failure) {
    case TransportFailure::connection: line += "connection error: "; break;
    case TransportFailure::timeout: line += "timeout: "; break;
    case TransportFailure::fatal: line += "error: "; break;
    }
    line += result.error.message + " (" + std::to_string(took.count()) + " ms)";
  }
  settings.trace(redact(line, secrets));
}

CurlTransport::CurlTransport(HttpSettings settings) : m_state(std::make_unique<State>()) {
  init_http();
  m_state->settings = std::move(settings);
  m_state->secrets = m_state->settings.secrets();
  m_state->curl = g_curl.easy_init();
  if (m_state->curl == nullptr) {
    throw std::runtime_error("cannot create a libcurl handle");
  }
}

CurlTransport::~CurlTransport() {
  g_curl.easy_cleanup(m_state->curl);
}

long CurlTransport::connections_opened() const {
  return m_state->connections;
}

HttpResult CurlTransport::send(const HttpRequest& request) {
  State& state = *m_state;
  const auto started = std::chrono::steady_clock::now();
  const auto finish = [&](HttpResult result) {
    if (!result.ok()) {
      result.error.message = redact(result.error.message, state.secrets);
    }
    state.trace(request, result,
                std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started));
    return result;
  };

  HttpResponse response;
  state.set_common_options(response);
  const std::string url = state.settings.base_url + request.target;
  g_curl.easy_setopt(state.curl, CURLOPT_URL, url.c_str());
  if (!request.idempotent) {
    // libcurl sends a request again, silently, when a reused connection
    // closes before any answer; on a fresh connection it does not.
    g_curl.easy_setopt(state.curl, CURLOPT_FRESH_CONNECT, 1L);
  }

  HeaderList headers;
  // No "Expect: 100-continue" round trip before a body: the server is known.
  headers.add("Expect:");
  if (!state.settings.token.empty()) {
    headers.add("Authorization: Bearer " + state.settings.token);
  }

  std::optional<FileBody> file;
  const bool has_body = !request.body_file.empty() || !request.body.empty() || request.method == "POST" ||
                        request.method == "PUT" || request.method == "PATCH";
  if (!request.body_file.empty()) {
    file.emplace();
    file->fd = ::open(request.body_file.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat status {};
    if (file->fd < 0 || ::fstat(file->fd, &status) != 0) {
      const int error = errno;
      return finish(
          failure(TransportFailure::fatal, "cannot read " + request.body_file.string() + ": " + error_text(error)));
    }
    if (!S_ISREG(status.st_mode)) {
      return finish(
          failure(TransportFailure::fatal, "cannot read " + request.body_file.string() + ": not a regular file"));
    }
    file->size = status.st_size;
    g_curl.easy_setopt(state.curl, CURLOPT_UPLOAD, 1L);
    g_curl.easy_setopt(state.curl, CURLOPT_READFUNCTION, read_body);
    g_curl.easy_setopt(state.curl, CURLOPT_READDATA, &*file);
    g_curl.easy_setopt(state.curl, CURLOPT_SEEKFUNCTION, seek_body);
    g_curl.easy_setopt(state.curl, CURLOPT_SEEKDATA, &*file);
    g_curl.easy_setopt(state.curl, CURLOPT_INFILESIZE_LARGE, file->size);
    if (request.method != "PUT") {
      g_curl.easy_setopt(state.curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
  } else if (has_body) {
    g_curl.easy_setopt(state.curl, CURLOPT_POSTFIELDS, request.body.data());
    g_curl.easy_setopt(state.curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    if (request.method != "POST") {
      g_curl.easy_setopt(state.curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
  } else if (request.method == "HEAD") {
    g_curl.easy_setopt(state.curl, CURLOPT_NOBODY, 1L);
  } else if (request.method != "GET") {
    g_curl.easy_setopt(state.curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  if (has_body) {
    // An empty value removes the form Content-Type libcurl adds to a POST.
    headers.add("Content-Type: " + request.content_type);
  }
  g_curl.easy_setopt(state.curl, CURLOPT_HTTPHEADER, headers.get());

  if (file) {
    // A large upload may take long; what fails it is making no progress.
    const long stall_seconds = std::max(1L, static_cast<long>((state.settings.stall_timeout.count() + 999) / 1000));
    g_curl.easy_setopt(state.curl, CURLOPT_LOW_SPEED_LIMIT, k_low_speed_limit);
    g_curl.easy_setopt(state.curl, CURLOPT_LOW_SPEED_TIME, stall_seconds);
  } else {
    g_curl.easy_setopt(state.curl, CURLOPT_TIMEOUT_MS, static_cast<long>(state.settings.request_timeout.count()));
  }

  const CURLcode code = g_curl.easy_perform(state.curl);
  long connects = 0;
  g_curl.easy_getinfo(state.curl, CURLINFO_NUM_CONNECTS, &connects);
  state.connections += connects;
  if (code != CURLE_OK) {
    HttpResult result;
    result.error = state.describe(code, request, file ? &*file : nullptr);
    return finish(std::move(result));
  }
  long status = 0;
  g_curl.easy_getinfo(state.curl, CURLINFO_RESPONSE_CODE, &status);
  response.status = static_cast<int>(status);
  HttpResult result;
  result.response = std::move(response);
  return finish(std::move(result));
}

} // namespace kiln::plugins
