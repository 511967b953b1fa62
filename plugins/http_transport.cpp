// The transport-independent half of kiln's HTTP layer: tracking URIs and the
// MLFLOW_* variables read the way MLflow's Python client reads them, secret
// redaction, and the retry loop. The loop follows urllib3's Retry as MLflow
// configures it: exponential backoff with additive jitter, Retry-After
// honoured when it asks for longer, and an overall time budget so a dead
// server costs a bounded time rather than max_retries full backoffs.

#include "plugins/http_transport.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>

namespace kiln::plugins {

namespace {

constexpr std::string_view k_redacted = "***";

bool is_blank(const char* value) {
  return value == nullptr || *value == '\0';
}

std::string lower(std::string_view text) {
  std::string result(text);
  for (char& c : result) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return result;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

std::optional<std::string> percent_decode(std::string_view text) {
  std::string result;
  result.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      result += text[i];
      continue;
    }
    if (i + 2 >= text.size()) {
      return std::nullopt;
    }
    const int high = hex_value(text[i + 1]);
    const int low = hex_value(text[i + 2]);
    if (high < 0 || low < 0) {
      return std::nullopt;
    }
    result += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return result;
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  if (from.empty()) {
    return;
  }
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

bool is_scheme_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
}

// Where the userinfo of the authority starting at `authority` ends (the
// position of its '@'), or npos when the authority has none. The authority
// ends at the first '/', '?', '#', quote or blank.
std::size_t userinfo_end(std::string_view text, std::size_t authority) {
  std::size_t at = std::string_view::npos;
  for (std::size_t i = authority; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c == '<' || c == '>' ||
        std::isspace(static_cast<unsigned char>(c))) {
      break;
    }
    if (c == '@') {
      at = i;
    }
  }
  return at;
}

// `text` with the userinfo of every "scheme://userinfo@" replaced by
// `replacement` (which may be empty, in which case the '@' goes too).
std::string replace_userinfo(std::string_view text, std::string_view replacement) {
  std::string result;
  std::size_t copied = 0;
  for (std::size_t found = text.find("://"); found != std::string_view::npos; found = text.find("://", found + 3)) {
    if (found == 0 || !is_scheme_char(text[found - 1])) {
      continue;
    }
    const std::size_t authority = found + 3;
    const std::size_t at = userinfo_end(text, authority);
    if (at == std::string_view::npos) {
      continue;
    }
    result.append(text.substr(copied, authority - copied));
    if (!replacement.empty()) {
      result.append(replacement);
      result += '@';
    }
    copied = at + 1;
    found = at;
  }
  result.append(text.substr(copied));
  return result;
}

bool parse_seconds(std::string_view text, double& seconds) {
  text = trim(text);
  if (text.empty()) {
    return false;
  }
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  return error == std::errc() && end == text.data() + text.size() && std::isfinite(seconds);
}

core::Error variable_error(const char* name, const char* value, std::string_view expected) {
  return core::Error{std::string(name) + "=\"" + value + "\" is not valid: expected " + std::string(expected)};
}

// A non-negative number of seconds from `name`, when it is set.
core::Expected<void> read_seconds(const std::function<const char*(const char*)>& getenv, const char* name,
                                  std::chrono::duration<double>& out) {
  const char* value = getenv(name);
  if (is_blank(value)) {
    return {};
  }
  double seconds = 0;
  if (!parse_seconds(value, seconds) || seconds < 0) {
    return variable_error(name, value, "a number of seconds, 0 or more");
  }
  out = std::chrono::duration<double>(seconds);
  return {};
}

// ---- HTTP dates (RFC 9110 section 5.6.7) ----

constexpr std::array<std::string_view, 12> k_months = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Reads a fixed sequence of fields from an HTTP date, left to right.
class DateReader {
public:
  explicit DateReader(std::string_view text) : m_text(text) {}

  bool literal(std::string_view expected) {
    if (m_text.substr(0, expected.size()) != expected) {
      return false;
    }
    m_text.remove_prefix(expected.size());
    return true;
  }
  bool spaces() {
    if (m_text.empty() || m_text.front() != ' ') {
      return false;
    }
    while (!m_text.empty() && m_text.front() == ' ') {
      m_text.remove_prefix(1);
    }
    return true;
  }
  bool letters() {
    std::size_t count = 0;
    while (count < m_text.size() && std::isalpha(static_cast<unsigned char>(m_text[count]))) {
      ++count;
    }
    m_text.remove_prefix(count);
    return count > 0;
  }
  bool number(int min_digits, int max_digits, int& value) {
    int digits = 0;
    value = 0;
    while (digits < max_digits && !m_text.empty() && std::isdigit(static_cast<unsigned char>(m_text.front()))) {
      value = value * 10 + (m_text.front() - '0');
      m_text.remove_prefix(1);
      ++digits;
    }
    return digits >= min_digits;
  }
  bool month(int& value) {
    for (std::size_t i = 0; i < k_months.size(); ++i) {
      if (literal(k_months[i])) {
        value = static_cast<int>(i) + 1;
        return true;
      }
    }
    return false;
  }
  bool time(int& hour, int& minute, int& second) {
    return number(2, 2, hour) && literal(":") && number(2, 2, minute) && literal(":") && number(2, 2, second);
  }
  bool done() const { return m_text.empty(); }

private:
  std::string_view m_text;
};

std::optional<std::chrono::system_clock::time_point> parse_http_date(std::string_view text) {
  int day = 0;
  int month = 0;
  int year = 0;
  int hour = 0;
  int minute = 0;
  int second = 0;
  bool parsed = false;
  {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"; also the obsolete
    // RFC 850 form, "Sunday, 06-Nov-94 08:49:37 GMT".
    DateReader reader(text);
    if (reader.letters() && reader.literal(",") && reader.spaces() && reader.number(1, 2, day)) {
      if (reader.literal("-")) {
        parsed = reader.month(month) && reader.literal("-") && reader.number(2, 2, year) && reader.spaces() &&
                 reader.time(hour, minute, second) && reader.spaces() && reader.literal("GMT") && reader.done();
        // RFC 9110: a two-digit year more than 50 years in the future is in the past century.
        year += year < 70 ? 2000 : 1900;
      } else {
        parsed = reader.spaces() && reader.month(month) && reader.spaces() && reader.number(4, 4, year) &&
                 reader.spaces() && reader.time(hour, minute, second) && reader.spaces() && reader.literal("GMT") &&
                 reader.done();
      }
    }
  }
  if (!parsed) {
    // asctime: "Sun Nov  6 08:49:37 1994".
    DateReader reader(text);
    parsed = reader.letters() && reader.spaces() && reader.month(month) && reader.spaces() &&
             reader.number(1, 2, day) && reader.spaces() && reader.time(hour, minute, second) && reader.spaces() &&
             reader.number(4, 4, year) && reader.done();
  }
  if (!parsed || hour > 23 || minute > 59 || second > 60) {
    return std::nullopt;
  }
  const std::chrono::year_month_day date{std::chrono::year(year), std::chrono::month(static_cast<unsigned>(month)),
                                         std::chrono::day(static_cast<unsigned>(day))};
  if (!date.ok()) {
    return std::nullopt;
  }
  const auto since_epoch = std::chrono::sys_days(date).time_since_epoch() + std::chrono::hours(hour) +
                           std::chrono::minutes(minute) + std::chrono::seconds(second);
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(since_epoch));
}

std::string format_seconds(std::chrono::duration<double> duration) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", duration.count());
  return text;
}

std::string describe_failure(const HttpResult& result) {
  if (result.ok()) {
    return std::to_string(result.response->status);
  }
  switch (result.error.failure) {
  case TransportFailure::connection: return "connection error: " + result.error.message;
  case TransportFailure::timeout: return "timeout: " + result.error.message;
  case TransportFailure::fatal: return "error: " + result.error.message;
  }
  return result.error.message;
}

class SystemRetryEnvironment final : public RetryEnvironment {
public:
  void sleep(std::chrono::duration<double> duration) override { std::this_thread::sleep_for(duration); }
  std::chrono::steady_clock::time_point now() override { return std::chrono::steady_clock::now(); }
  std::chrono::system_clock::time_point wall_now() override { return std::chrono::system_clock::now(); }
  double uniform() override {
    // One generator per thread: several pushes may retry at once, and
    // jitter needs no more than a decent spread.
    thread_local std::mt19937_64 generator{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(generator);
  }
};

} // namespace

// ---- Settings ----

std::vector<std::string> HttpSettings::secrets() const {
  std::vector<std::string> result;
  for (const std::string* secret : {&password, &token}) {
    if (!secret->empty()) {
      result.push_back(*secret);
    }
  }
  // A user name without a password is how tokens are often put into URLs
  // (https://TOKEN@host); a user name next to a password is not a secret.
  if (password.empty() && !username.empty()) {
    result.push_back(username);
  }
  return result;
}

core::Expected<HttpSettings> parse_tracking_uri(std::string_view uri) {
  // The URI as an error may show it. A malformed URI's userinfo may hold
  // any character, so everything up to its last '@' goes.
  std::string shown(uri);
  if (const std::size_t at = uri.rfind('@'); at != std::string_view::npos) {
    const std::size_t separator = uri.find("://");
    shown = (separator < at ? std::string(uri.substr(0, separator + 3)) : std::string()) + std::string(k_redacted) +
            std::string(uri.substr(at));
  }
  const auto invalid = [&](std::string_view why) {
    return core::Error{"invalid tracking URI \"" + shown + "\": " + std::string(why)};
  };
  for (const char c : uri) {
    if (std::iscntrl(static_cast<unsigned char>(c)) || c == ' ') {
      return invalid("it contains a space or a control character");
    }
  }
  const std::size_t separator = uri.find("://");
  const std::string scheme = separator == std::string_view::npos ? std::string() : lower(uri.substr(0, separator));
  if (scheme != "http" && scheme != "https") {
    const std::string what =
        uri.empty() ? std::string("it is empty")
                    : (scheme.empty() ? std::string("it has no scheme") : "scheme \"" + scheme + "\" is not supported");
    return invalid(what + "; kiln pushes to an MLflow tracking server, e.g. http://127.0.0.1:5000 or "
                          "https://mlflow.example.com");
  }
  std::string_view rest = uri.substr(separator + 3);
  const std::size_t authority_end = rest.find_first_of("/?#");
  if (authority_end != std::string_view::npos && rest.find('@', authority_end) != std::string_view::npos) {
    return invalid("'@' after the host; in a user name or password, write '/', '?', '#' and '@' as %2F, %3F, %23 "
                   "and %40");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return invalid("a tracking URI has no query or fragment");
  }
  const std::size_t path_start = std::min(rest.find('/'), rest.size());
  std::string_view authority = rest.substr(0, path_start);
  std::string_view path = rest.substr(path_start);

  HttpSettings settings;
  const std::size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const std::size_t colon = userinfo.find(':');
    const auto username = percent_decode(userinfo.substr(0, colon));
    const auto password =
        colon == std::string_view::npos ? std::optional<std::string>("") : percent_decode(userinfo.substr(colon + 1));
    if (!username || !password) {
      return invalid("bad percent-encoding in the user name or password");
    }
    settings.username = *username;
    settings.password = *password;
  }

  // host, [IPv6 literal] or host:port.
  std::string_view host = authority;
  std::optional<std::string_view> port;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return invalid("unterminated [IPv6 address]");
    }
    host = authority.substr(0, close + 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return invalid("unexpected text after the [IPv6 address]");
      }
      port = after.substr(1);
    }
  } else if (std::count(authority.begin(), authority.end(), ':') > 1) {
    return invalid("an IPv6 address must be in brackets");
  } else if (const std::size_t colon = authority.find(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty() || host == "[]") {
    return invalid("it has no host");
  }
  if (port) {
    unsigned number = 0;
    const auto [end, error] = std::from_chars(port->data(), port->data() + port->size(), number);
    if (port->empty() || error != std::errc() || end != port->data() + port->size() || number == 0 || number > 65535) {
      return invalid("port \"" + std::string(*port) + "\" is not a number from 1 to 65535");
    }
  }
  while (!path.empty() && path.back() == '/') {
    path.remove_suffix(1);
  }
  settings.base_url = scheme + "://" + lower(host) + (port ? ":" + std::string(*port) : "") + std::string(path);
  return settings;
}

core::Expected<void> apply_environment(HttpSettings& settings, const std::function<const char*(const char*)>& getenv) {
  const auto take = [&](const char* name, std::string& out) {
    if (const char* value = getenv(name); !is_blank(value)) {
      out = value;
    }
  };
  take("MLFLOW_TRACKING_USERNAME", settings.username);
  take("MLFLOW_TRACKING_PASSWORD", settings.password);
  take("MLFLOW_TRACKING_TOKEN", settings.token);
  take("MLFLOW_TRACKING_SERVER_CERT_PATH", settings.ca_cert_path);

  if (const char* value = getenv("MLFLOW_TRACKING_INSECURE_TLS"); !is_blank(value)) {
    // MLflow's boolean variables: true/false or 1/0, any case.
    const std::string text = lower(trim(value));
    if (text == "true" || text == "1") {
      settings.insecure_tls = true;
    } else if (text == "false" || text == "0") {
      settings.insecure_tls = false;
    } else {
      return variable_error("MLFLOW_TRACKING_INSECURE_TLS", value, "true or false");
    }
  }
  if (settings.insecure_tls && !settings.ca_cert_path.empty()) {
    // As MLflow: asking for both is a mistake, not a choice to make silently.
    return core::Error{"MLFLOW_TRACKING_INSECURE_TLS=true and MLFLOW_TRACKING_SERVER_CERT_PATH are both set; "
                       "unset one of them"};
  }
  if (const char* value = getenv("MLFLOW_HTTP_REQUEST_TIMEOUT"); !is_blank(value)) {
    double seconds = 0;
    if (!parse_seconds(value, seconds) || seconds <= 0 || seconds > 1e9) {
      return variable_error("MLFLOW_HTTP_REQUEST_TIMEOUT", value, "a number of seconds above 0");
    }
    settings.request_timeout = std::max(
        std::chrono::milliseconds(1), std::chrono::milliseconds(static_cast<long long>(std::llround(seconds * 1000))));
  }
  return {};
}

std::string percent_encode(std::string_view text, bool keep_slash) {
  static constexpr char k_hex[] = "0123456789ABCDEF";
  std::string result;
  result.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
      result += c;
    } else {
      result += '%';
      result += k_hex[byte >> 4];
      result += k_hex[byte & 0xf];
    }
  }
  return result;
}

std::string redact(std::string_view text, const std::vector<std::string>& secrets) {
  std::string result = replace_userinfo(text, k_redacted);
  // Longest first, so a secret that contains another is replaced whole.
  std::vector<std::string> sorted;
  for (const std::string& secret : secrets) {
    if (!secret.empty()) {
      sorted.push_back(secret);
      if (std::string encoded = percent_encode(secret); encoded != secret) {
        sorted.push_back(std::move(encoded));
      }
    }
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& secret : sorted) {
    replace_all(result, secret, k_redacted);
  }
  return result;
}

std::string display_uri(std::string_view uri) {
  return replace_userinfo(uri, "");
}

// ---- Retries ----

core::Expected<RetryPolicy> RetryPolicy::from_environment(const RetryPolicy& defaults,
                                                          const std::function<const char*(const char*)>& getenv) {
  RetryPolicy policy = defaults;
  if (const char* value = getenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES"); !is_blank(value)) {
    const std::string_view text = trim(value);
    int retries = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), retries);
    if (text.empty() || error != std::errc() || end != text.data() + text.size() || retries < 0) {
      return variable_error("MLFLOW_HTTP_REQUEST_MAX_RETRIES", value, "a whole number, 0 or more");
    }
    policy.max_retries = retries;
  }
  if (auto read = read_seconds(getenv, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", policy.backoff_factor); !read) {
    return core::Error{read.error()};
  }
  if (auto read = read_seconds(getenv, "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", policy.jitter); !read) {
    return core::Error{read.error()};
  }
  return policy;
}

bool is_retryable(const HttpResult& result) {
  if (!result.ok()) {
    return result.error.failure != TransportFailure::fatal;
  }
  const int status = result.response->status;
  return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

std::optional<std::chrono::duration<double>> retry_after(const HttpResponse& response,
                                                         std::chrono::system_clock::time_point now) {
  const auto found = response.headers.find("retry-after");
  if (found == response.headers.end()) {
    return std::nullopt;
  }
  const std::string_view text = trim(found->second);
  if (!text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    // Delta-seconds. Anything beyond a day is as good as a day: callers cap it anyway.
    double seconds = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (error != std::errc() && error != std::errc::result_out_of_range) {
      return std::nullopt;
    }
    return std::chrono::duration<double>(std::min(seconds, 86'400.0));
  }
  const auto date = parse_http_date(text);
  if (!date) {
    return std::nullopt;
  }
  const std::chrono::duration<double> wait = *date - now;
  return std::max(wait, std::chrono::duration<double>::zero());
}

RetryEnvironment& system_retry_environment() {
  static SystemRetryEnvironment environment;
  return environment;
}

HttpResult send_with_retries(HttpTransport& transport, const HttpRequest& request, const RetryPolicy& policy,
                             RetryEnvironment& environment, const std::function<bool(const HttpResult&)>& before_retry,
                             const std::function<void(const std::string&)>& trace) {
  using Seconds = std::chrono::duration<double>;
  const auto started = environment.now();
  HttpResult result = transport.send(request);
  for (int retry = 1; retry <= policy.max_retries && is_retryable(result); ++retry) {
    // 2^62 s is already far beyond any max_delay; the clamp keeps 0 * 2^n finite.
    const double doubling = std::ldexp(1.0, std::min(retry - 1, 62));
    Seconds delay = std::min(policy.max_delay, policy.backoff_factor * doubling);
    delay += policy.jitter * environment.uniform();
    if (result.ok()) {
      if (auto asked = retry_after(*result.response, environment.wall_now())) {
        delay = std::max(delay, std::min(*asked, policy.max_delay));
      }
    }
    const Seconds elapsed = environment.now() - started;
    if (elapsed + delay > policy.budget) {
      break;
    }
    if (trace) {
      trace("retrying " + request.method + " " + request.target + " in " + format_seconds(delay) + " after " +
            describe_failure(result) + " (retry " + std::to_string(retry) + " of " +
            std::to_string(policy.max_retries) + ")");
    }
    environment.sleep(delay);
    // After the wait: a server still committing what the failed try asked
    // for has had the backoff's time to finish before the caller looks.
    if (before_retry && !before_retry(result)) {
      break;
    }
    result = transport.send(request);
  }
  return result;
}

} // namespace kiln::plugins
