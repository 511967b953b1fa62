#include "plugins/http_transport.hpp"

#include "tests/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <deque>
#include <map>
#include <string>
#include <vector>

using kiln::plugins::HttpRequest;
using kiln::plugins::HttpResponse;
using kiln::plugins::HttpResult;
using kiln::plugins::HttpSettings;
using kiln::plugins::HttpTransport;
using kiln::plugins::RetryEnvironment;
using kiln::plugins::RetryPolicy;
using kiln::plugins::TransportFailure;
using kiln::test::ok;
using Seconds = std::chrono::duration<double>;
using namespace std::chrono_literals;

namespace {

HttpResult status(int code, std::map<std::string, std::string> headers = {}) {
  HttpResult result;
  result.response = HttpResponse{code, std::move(headers), ""};
  return result;
}

HttpResult failed(TransportFailure failure, std::string message = "boom") {
  HttpResult result;
  result.error = {failure, std::move(message)};
  return result;
}

// Time passes only when the loop sleeps or a request "takes" time.
class FakeEnvironment final : public RetryEnvironment {
public:
  void sleep(Seconds duration) override {
    sleeps.push_back(duration.count());
    m_now += std::chrono::duration_cast<std::chrono::steady_clock::duration>(duration);
  }
  std::chrono::steady_clock::time_point now() override { return m_now; }
  std::chrono::system_clock::time_point wall_now() override {
    return wall_start + std::chrono::duration_cast<std::chrono::system_clock::duration>(m_now - m_start);
  }
  double uniform() override { return random; }

  void advance(Seconds duration) { m_now += std::chrono::duration_cast<std::chrono::steady_clock::duration>(duration); }

  std::vector<double> sleeps;
  double random = 0.0;
  // Sun, 06 Nov 1994 08:49:37 GMT.
  std::chrono::system_clock::time_point wall_start = std::chrono::system_clock::time_point(784111777s);

private:
  std::chrono::steady_clock::time_point m_start{};
  std::chrono::steady_clock::time_point m_now{};
};

// Answers from a script; the last answer repeats once the script runs out.
class FakeTransport final : public HttpTransport {
public:
  FakeTransport(std::vector<HttpResult> script, FakeEnvironment* environment = nullptr, Seconds takes = 0s)
      : m_script(script.begin(), script.end()), m_environment(environment), m_takes(takes) {}

  HttpResult send(const HttpRequest& request) override {
    ++sent;
    targets.push_back(request.target);
    if (m_environment != nullptr) {
      m_environment->advance(m_takes);
    }
    HttpResult result = m_script.front();
    if (m_script.size() > 1) {
      m_script.pop_front();
    }
    return result;
  }

  int sent = 0;
  std::vector<std::string> targets;

private:
  std::deque<HttpResult> m_script;
  FakeEnvironment* m_environment;
  Seconds m_takes;
};

HttpRequest post(std::string target = "/api/2.0/mlflow/runs/log-batch") {
  HttpRequest request;
  request.method = "POST";
  request.target = std::move(target);
  request.body = "{}";
  return request;
}

RetryPolicy no_jitter() {
  RetryPolicy policy;
  policy.jitter = 0s;
  return policy;
}

std::function<const char*(const char*)> environment_of(std::map<std::string, std::string> variables) {
  return [variables = std::move(variables)](const char* name) -> const char* {
    const auto found = variables.find(name);
    return found == variables.end() ? nullptr : found->second.c_str();
  };
}

} // namespace

TEST_SUITE("plugins::send_with_retries") {

  TEST_CASE("a success is sent once") {
    FakeEnvironment environment;
    FakeTransport transport({status(200)});
    const HttpResult result = send_with_retries(transport, post(), no_jitter(), environment);
    REQUIRE(result.ok());
    CHECK(result.response->status == 200);
    CHECK(transport.sent == 1);
    CHECK(environment.sleeps.empty());
  }

  TEST_CASE("backoff doubles from backoff_factor") {
    FakeEnvironment environment;
    FakeTransport transport({status(503), status(503), status(503), status(503), status(200)});
    const HttpResult result = send_with_retries(transport, post(), no_jitter(), environment);
    REQUIRE(result.ok());
    CHECK(result.response->status == 200);
    CHECK(transport.sent == 5);
    CHECK(environment.sleeps == std::vector<double>{2, 4, 8, 16});
  }

  TEST_CASE("jitter adds up to `jitter` seconds, drawn per retry") {
    RetryPolicy policy;
    policy.backoff_factor = 1s;
    policy.jitter = 0.5s;
    for (const double random : {0.0, 0.5, 0.999}) {
      CAPTURE(random);
      FakeEnvironment environment;
      environment.random = random;
      FakeTransport transport({status(500), status(500), status(200)});
      send_with_retries(transport, post(), policy, environment);
      REQUIRE(environment.sleeps.size() == 2);
      CHECK(environment.sleeps[0] == doctest::Approx(1 + 0.5 * random));
      CHECK(environment.sleeps[1] == doctest::Approx(2 + 0.5 * random));
      CHECK(environment.sleeps[0] >= 1.0);
      CHECK(environment.sleeps[0] < 1.5);
    }
  }

  TEST_CASE("the real environment's uniform() is in [0, 1) and spread out") {
    RetryEnvironment& environment = kiln::plugins::system_retry_environment();
    double low = 1;
    double high = 0;
    for (int i = 0; i < 2000; ++i) {
      const double value = environment.uniform();
      REQUIRE(value >= 0.0);
      REQUIRE(value < 1.0);
      low = std::min(low, value);
      high = std::max(high, value);
    }
    CHECK(low < 0.05);
    CHECK(high > 0.95);
    const auto before = environment.now();
    environment.sleep(1ms);
    CHECK(environment.now() - before >= 1ms);
  }

  TEST_CASE("delays are capped at max_delay, jitter added after the cap") {
    RetryPolicy policy = no_jitter();
    policy.max_retries = 6;
    policy.max_delay = 10s;
    FakeEnvironment environment;
    FakeTransport transport({status(502)});
    const HttpResult result = send_with_retries(transport, post(), policy, environment);
    CHECK(environment.sleeps == std::vector<double>{2, 4, 8, 10, 10, 10});

    policy.jitter = 1s;
    FakeEnvironment jittered;
    jittered.random = 0.5;
    FakeTransport again({status(502)});
    send_with_retries(again, post(), policy, jittered);
    CHECK(jittered.sleeps == std::vector<double>{2.5, 4.5, 8.5, 10.5, 10.5, 10.5});
  }

  TEST_CASE("max_retries bounds the tries; the last result is returned") {
    RetryPolicy policy = no_jitter();
    policy.max_retries = 3;
    FakeEnvironment environment;
    FakeTransport transport({status(500), status(502), status(503), status(504), status(200)});
    const HttpResult result = send_with_retries(transport, post(), policy, environment);
    CHECK(transport.sent == 4);
    REQUIRE(result.ok());
    CHECK(result.response->status == 504);

    policy.max_retries = 0;
    FakeTransport once({status(503)});
    send_with_retries(once, post(), policy, environment);
    CHECK(once.sent == 1);
  }

  TEST_CASE("a big max_retries with a zero backoff does not overflow") {
    RetryPolicy policy = no_jitter();
    policy.max_retries = 2000;
    policy.backoff_factor = 0s;
    FakeEnvironment environment;
    FakeTransport transport({status(503)});
    send_with_retries(transport, post(), policy, environment);
    CHECK(transport.sent == 2001);
    CHECK(environment.sleeps.back() == 0.0);
  }

  TEST_CASE("no retry starts when its wait would go past the budget") {
    RetryPolicy policy = no_jitter();
    policy.budget = 10s;
    FakeEnvironment environment;
    FakeTransport transport({status(503)});
    send_with_retries(transport, post(), policy, environment);
    // 2 + 4 = 6 s waited; waiting 8 more would end at 14 s.
    CHECK(environment.sleeps == std::vector<double>{2, 4});
    CHECK(transport.sent == 3);
  }

  TEST_CASE("time spent in requests counts against the budget") {
    RetryPolicy policy = no_jitter();
    policy.budget = 20s;
    FakeEnvironment environment;
    FakeTransport transport({failed(TransportFailure::timeout)}, &environment, 5s);
    const HttpResult result = send_with_retries(transport, post(), policy, environment);
    // 5 (try) + 2 + 5 (try) + 4 + 5 (try) = 21 would be past 20 before the third wait.
    CHECK(environment.sleeps == std::vector<double>{2, 4});
    CHECK(transport.sent == 3);
    CHECK(result.error.failure == TransportFailure::timeout);
  }

  TEST_CASE("Retry-After in seconds is honoured when longer than the backoff") {
    FakeEnvironment environment;
    FakeTransport transport({status(429, {{"retry-after", "30"}}), status(503, {{"retry-after", "1"}}), status(200)});
    send_with_retries(transport, post(), no_jitter(), environment);
    CHECK(environment.sleeps == std::vector<double>{30, 4});
  }

  TEST_CASE("Retry-After is capped at max_delay") {
    RetryPolicy policy = no_jitter();
    policy.max_delay = 60s;
    FakeEnvironment environment;
    FakeTransport transport({status(503, {{"retry-after", "3600"}}), status(200)});
    send_with_retries(transport, post(), policy, environment);
    CHECK(environment.sleeps == std::vector<double>{60});
  }

  TEST_CASE("Retry-After as an HTTP date counts from the wall clock") {
    FakeEnvironment environment;
    // 45 s after the fake wall clock's start.
    FakeTransport transport({status(503, {{"retry-after", "Sun, 06 Nov 1994 08:50:22 GMT"}}), status(200)});
    send_with_retries(transport, post(), no_jitter(), environment);
    CHECK(environment.sleeps == std::vector<double>{45});
  }

  TEST_CASE("4xx answers other than 408 and 429 are not retried") {
    for (const int code : {200, 201, 204, 301, 400, 401, 403, 404, 409, 413}) {
      CAPTURE(code);
      FakeEnvironment environment;
      FakeTransport transport({status(code), status(200)});
      const HttpResult result = send_with_retries(transport, post(), no_jitter(), environment);
      CHECK(transport.sent == 1);
      REQUIRE(result.ok());
      CHECK(result.response->status == code);
    }
  }

  TEST_CASE("408, 429, 5xx, connection errors and timeouts are retried") {
    std::vector<HttpResult> faults = {status(408), status(429), status(500), status(502),
                                      status(503), status(504), status(599)};
    faults.push_back(failed(TransportFailure::connection));
    faults.push_back(failed(TransportFailure::timeout));
    for (const HttpResult& fault : faults) {
      CAPTURE((fault.ok() ? std::to_string(fault.response->status) : fault.error.message));
      CHECK(kiln::plugins::is_retryable(fault));
      FakeEnvironment environment;
      FakeTransport transport({fault, status(200)});
      const HttpResult result = send_with_retries(transport, post(), no_jitter(), environment);
      CHECK(transport.sent == 2);
      REQUIRE(result.ok());
      CHECK(result.response->status == 200);
    }
  }

  TEST_CASE("a fatal error is not retried") {
    FakeEnvironment environment;
    FakeTransport transport({failed(TransportFailure::fatal, "certificate not trusted"), status(200)});
    const HttpResult result = send_with_retries(transport, post(), no_jitter(), environment);
    CHECK(transport.sent == 1);
    CHECK_FALSE(result.ok());
    CHECK(result.error.failure == TransportFailure::fatal);
    CHECK(result.error.message == "certificate not trusted");
    CHECK_FALSE(kiln::plugins::is_retryable(result));
  }

  TEST_CASE("before_retry sees each failure and may stop the retries") {
    FakeEnvironment environment;
    FakeTransport transport({status(503), failed(TransportFailure::connection, "reset"), status(200)});
    std::vector<std::string> seen;
    const HttpResult result =
        send_with_retries(transport, post(), no_jitter(), environment, [&](const HttpResult& failure) {
          seen.push_back(failure.ok() ? std::to_string(failure.response->status) : failure.error.message);
          return seen.size() < 2;
        });
    CHECK(seen == std::vector<std::string>{"503", "reset"});
    CHECK(transport.sent == 2);
    CHECK_FALSE(result.ok());
    CHECK(result.error.message == "reset");
    // It is asked after each wait (the second one too), just before the resend.
    CHECK(environment.sleeps == std::vector<double>{2, 4});
  }

  TEST_CASE("before_retry is not called when no retry would follow") {
    RetryPolicy policy = no_jitter();
    policy.max_retries = 1;
    FakeEnvironment environment;
    FakeTransport transport({status(503)});
    int calls = 0;
    send_with_retries(transport, post(), policy, environment, [&](const HttpResult&) {
      ++calls;
      return true;
    });
    CHECK(calls == 1);
    CHECK(transport.sent == 2);
  }

  TEST_CASE("each retry is traced") {
    RetryPolicy policy = no_jitter();
    policy.max_retries = 2;
    FakeEnvironment environment;
    FakeTransport transport({status(503), failed(TransportFailure::connection, "cannot connect to http://h: refused")});
    std::vector<std::string> lines;
    send_with_retries(transport, post("/x"), policy, environment, {},
                      [&](const std::string& line) { lines.push_back(line); });
    CHECK(lines == std::vector<std::string>{
                       "retrying POST /x in 2.0 s after 503 (retry 1 of 2)",
                       "retrying POST /x in 4.0 s after connection error: cannot connect to http://h: refused "
                       "(retry 2 of 2)",
                   });
  }

} // TEST_SUITE

TEST_SUITE("plugins::retry_after") {

  const auto now = std::chrono::system_clock::time_point(784111777s); // Sun, 06 Nov 1994 08:49:37 GMT

  std::optional<double> asked(const std::string& value) {
    HttpResponse response;
    response.headers["retry-after"] = value;
    const auto seconds = kiln::plugins::retry_after(response, now);
    return seconds ? std::optional<double>(seconds->count()) : std::nullopt;
  }

  TEST_CASE("delta-seconds") {
    CHECK(asked("0") == 0.0);
    CHECK(asked("120") == 120.0);
    CHECK(asked(" 7 ") == 7.0);
    // Absurd values are cut to a day, not overflowed.
    CHECK(asked("99999999999999999999999999") == 86400.0);
  }

  TEST_CASE("the three HTTP date formats") {
    CHECK(asked("Sun, 06 Nov 1994 08:49:47 GMT") == 10.0);
    CHECK(asked("Sunday, 06-Nov-94 08:50:37 GMT") == 60.0);
    CHECK(asked("Sun Nov  6 08:49:57 1994") == 20.0);
    CHECK(asked("Mon, 07 Nov 1994 08:49:37 GMT") == 86400.0);
  }

  TEST_CASE("a date in the past asks for no wait") {
    CHECK(asked("Sat, 05 Nov 1994 08:49:37 GMT") == 0.0);
  }

  TEST_CASE("absent or unparsable is nullopt") {
    CHECK_FALSE(kiln::plugins::retry_after(HttpResponse{}, now).has_value());
    for (const char* bad : {"", "soon", "-5", "1.5", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:00:00 GMT",
                            "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Foo 1994 08:49:37 GMT"}) {
      CAPTURE(bad);
      CHECK_FALSE(asked(bad).has_value());
    }
  }

} // TEST_SUITE

TEST_SUITE("plugins::parse_tracking_uri") {

  TEST_CASE("scheme, host, port and base path; trailing slashes go") {
    CHECK(ok(kiln::plugins::parse_tracking_uri("http://127.0.0.1:5000")).base_url == "http://127.0.0.1:5000");
    CHECK(ok(kiln::plugins::parse_tracking_uri("http://127.0.0.1:5000/")).base_url == "http://127.0.0.1:5000");
    CHECK(ok(kiln::plugins::parse_tracking_uri("HTTPS://MLflow.Example.com/prefix/ml//")).base_url ==
          "https://mlflow.example.com/prefix/ml");
    CHECK(ok(kiln::plugins::parse_tracking_uri("http://[::1]:8080/x")).base_url == "http://[::1]:8080/x");
    const HttpSettings settings = ok(kiln::plugins::parse_tracking_uri("https://host"));
    CHECK(settings.base_url == "https://host");
    CHECK(settings.username.empty());
    CHECK(settings.password.empty());
    CHECK(settings.token.empty());
    CHECK_FALSE(settings.insecure_tls);
  }

  TEST_CASE("userinfo moves into the credentials, percent-decoded") {
    HttpSettings settings = ok(kiln::plugins::parse_tracking_uri("http://alice:s3cret@host:5000/base/"));
    CHECK(settings.base_url == "http://host:5000/base");
    CHECK(settings.username == "alice");
    CHECK(settings.password == "s3cret");

    settings = ok(kiln::plugins::parse_tracking_uri("https://al%40ice:p%3Aw%2Fd%40%25@host"));
    CHECK(settings.base_url == "https://host");
    CHECK(settings.username == "al@ice");
    CHECK(settings.password == "p:w/d@%");

    settings = ok(kiln::plugins::parse_tracking_uri("https://tok3n@host"));
    CHECK(settings.username == "tok3n");
    CHECK(settings.password.empty());
    CHECK(settings.secrets() == std::vector<std::string>{"tok3n"});
  }

  TEST_CASE("bad URIs are errors naming the URI without its userinfo") {
    const auto error = [](std::string_view uri) {
      const auto parsed = kiln::plugins::parse_tracking_uri(uri);
      REQUIRE_FALSE(parsed.ok());
      return parsed.error();
    };
    CHECK(error("ftp://host") ==
          "invalid tracking URI \"ftp://host\": scheme \"ftp\" is not supported; kiln pushes "
          "to an MLflow tracking server, e.g. http://127.0.0.1:5000 or https://mlflow.example.com");
    CHECK(error("file:///tmp/mlruns").find("scheme \"file\" is not supported") != std::string::npos);
    CHECK(error("databricks").find("it has no scheme") != std::string::npos);
    CHECK(error("").find("it is empty") != std::string::npos);
    CHECK(error("http://").find("it has no host") != std::string::npos);
    CHECK(error("http://:5000").find("it has no host") != std::string::npos);
    CHECK(error("http://host:http") == "invalid tracking URI \"http://host:http\": port \"http\" is not a number "
                                       "from 1 to 65535");
    CHECK(error("http://host:0").find("port \"0\"") != std::string::npos);
    CHECK(error("http://host:70000").find("port \"70000\"") != std::string::npos);
    CHECK(error("http://host:").find("port \"\"") != std::string::npos);
    CHECK(error("http://::1:5000").find("IPv6") != std::string::npos);
    CHECK(error("http://host/x?y=1").find("no query") != std::string::npos);
    CHECK(error("http://host /x").find("space") != std::string::npos);

    const std::string bad_userinfo = error("http://bob:hunter2@host:bad");
    CHECK(bad_userinfo == "invalid tracking URI \"http://***@host:bad\": port \"bad\" is not a number from 1 to 65535");
    CHECK(error("http://bob:%zzhunter2@host").find("percent-encoding") != std::string::npos);
    CHECK(error("http://bob:%zzhunter2@host").find("hunter2") == std::string::npos);
    // An unencoded '/' or '#' in a password: the error says how to write it and does not show it.
    const std::string slash = error("http://bob:hun/ter2@host");
    CHECK(slash.find("%2F") != std::string::npos);
    CHECK(slash.find("ter2") == std::string::npos);
    CHECK(error("http://bob:hun#ter2@host").find("ter2") == std::string::npos);
  }

} // TEST_SUITE

TEST_SUITE("plugins::redact") {

  TEST_CASE("secrets become ***, longest first") {
    CHECK(kiln::plugins::redact("token abc123 and abc", {"abc123", "abc"}) == "token *** and ***");
    CHECK(kiln::plugins::redact("nothing here", {"", "zzz"}) == "nothing here");
    CHECK(kiln::plugins::redact("pw=pw pw", {"pw"}) == "***=*** ***");
  }

  TEST_CASE("userinfo in any URL goes, and percent-encoded secrets too") {
    CHECK(kiln::plugins::redact("GET http://u:p@host:5000/x failed", {}) == "GET http://***@host:5000/x failed");
    CHECK(kiln::plugins::redact("a https://tok@h and b http://x:y@k/", {}) == "a https://***@h and b http://***@k/");
    CHECK(kiln::plugins::redact("mail a@b.c, http://host/a@b", {}) == "mail a@b.c, http://host/a@b");
    CHECK(kiln::plugins::redact("sent p%40ss%2F", {"p@ss/"}) == "sent ***");
  }

  TEST_CASE("secrets in a curl error string") {
    const std::vector<std::string> secrets = {"hunter2", "tok-XYZ"};
    CHECK(kiln::plugins::redact("Failed to connect to hunter2.example port 443 after 3 ms: Couldn't connect "
                                "to server (Bearer tok-XYZ)",
                                secrets) ==
          "Failed to connect to ***.example port 443 after 3 ms: Couldn't connect to server (Bearer ***)");
    CHECK(kiln::plugins::redact("URL rejected: Malformed input to a URL function: http://alice:hunter2@[bad",
                                secrets) == "URL rejected: Malformed input to a URL function: http://***@[bad");
  }

  TEST_CASE("display_uri drops userinfo only") {
    CHECK(kiln::plugins::display_uri("https://alice:pw@host:1/base") == "https://host:1/base");
    CHECK(kiln::plugins::display_uri("http://host:5000") == "http://host:5000");
  }

  TEST_CASE("secrets() lists the password and token, not a user name that has a password") {
    HttpSettings settings;
    settings.username = "alice";
    settings.password = "pw";
    settings.token = "tok";
    CHECK(settings.secrets() == std::vector<std::string>{"pw", "tok"});
    CHECK(HttpSettings{}.secrets().empty());
  }

} // TEST_SUITE

TEST_SUITE("plugins::apply_environment") {

  TEST_CASE("variables fill the settings; unset and empty ones keep the URI's values") {
    HttpSettings settings = ok(kiln::plugins::parse_tracking_uri("http://uri-user:uri-pw@host"));
    kiln::test::check(kiln::plugins::apply_environment(settings, environment_of({{"MLFLOW_TRACKING_PASSWORD", ""}})));
    CHECK(settings.username == "uri-user");
    CHECK(settings.password == "uri-pw");
    CHECK(settings.request_timeout == 120s);

    kiln::test::check(
        kiln::plugins::apply_environment(settings, environment_of({{"MLFLOW_TRACKING_USERNAME", "env-user"},
                                                                   {"MLFLOW_TRACKING_PASSWORD", "env-pw"},
                                                                   {"MLFLOW_TRACKING_TOKEN", "env-token"},
                                                                   {"MLFLOW_TRACKING_SERVER_CERT_PATH", "/etc/ca.pem"},
                                                                   {"MLFLOW_HTTP_REQUEST_TIMEOUT", "30"}})));
    CHECK(settings.username == "env-user");
    CHECK(settings.password == "env-pw");
    CHECK(settings.token == "env-token");
    CHECK(settings.ca_cert_path == "/etc/ca.pem");
    CHECK_FALSE(settings.insecure_tls);
    CHECK(settings.request_timeout == 30s);
    CHECK(settings.base_url == "http://host");
  }

  TEST_CASE("MLFLOW_TRACKING_INSECURE_TLS takes true/false/1/0 in any case") {
    for (const auto& [text, expected] : std::vector<std::pair<std::string, bool>>{
             {"true", true}, {"TRUE", true}, {"1", true}, {"false", false}, {"False", false}, {"0", false}}) {
      CAPTURE(text);
      HttpSettings settings;
      settings.insecure_tls = !expected;
      kiln::test::check(
          kiln::plugins::apply_environment(settings, environment_of({{"MLFLOW_TRACKING_INSECURE_TLS", text}})));
      CHECK(settings.insecure_tls == expected);
    }
  }

  TEST_CASE("fractional timeouts") {
    HttpSettings settings;
    kiln::test::check(
        kiln::plugins::apply_environment(settings, environment_of({{"MLFLOW_HTTP_REQUEST_TIMEOUT", "2.5"}})));
    CHECK(settings.request_timeout == 2500ms);
  }

  TEST_CASE("bad values are errors naming the variable") {
    const auto error = [](std::map<std::string, std::string> variables) {
      HttpSettings settings;
      const auto applied = kiln::plugins::apply_environment(settings, environment_of(std::move(variables)));
      REQUIRE_FALSE(applied.ok());
      return applied.error();
    };
    CHECK(error({{"MLFLOW_TRACKING_INSECURE_TLS", "yes please"}}) ==
          "MLFLOW_TRACKING_INSECURE_TLS=\"yes please\" is not valid: expected true or false");
    CHECK(error({{"MLFLOW_HTTP_REQUEST_TIMEOUT", "abc"}}) ==
          "MLFLOW_HTTP_REQUEST_TIMEOUT=\"abc\" is not valid: expected a number of seconds above 0");
    CHECK(error({{"MLFLOW_HTTP_REQUEST_TIMEOUT", "0"}}).starts_with("MLFLOW_HTTP_REQUEST_TIMEOUT="));
    CHECK(error({{"MLFLOW_HTTP_REQUEST_TIMEOUT", "-1"}}).starts_with("MLFLOW_HTTP_REQUEST_TIMEOUT="));
    CHECK(error({{"MLFLOW_HTTP_REQUEST_TIMEOUT", "10s"}}).starts_with("MLFLOW_HTTP_REQUEST_TIMEOUT="));
    CHECK(error({{"MLFLOW_TRACKING_INSECURE_TLS", "true"}, {"MLFLOW_TRACKING_SERVER_CERT_PATH", "/ca.pem"}})
              .find("unset one of them") != std::string::npos);
  }

} // TEST_SUITE

TEST_SUITE("plugins::RetryPolicy") {

  TEST_CASE("from_environment reads the three variables over the defaults") {
    RetryPolicy defaults;
    defaults.max_delay = 30s;
    const RetryPolicy unchanged = ok(RetryPolicy::from_environment(defaults, environment_of({})));
    CHECK(unchanged.max_retries == 7);
    CHECK(unchanged.backoff_factor == 2s);
    CHECK(unchanged.jitter == 1s);
    CHECK(unchanged.max_delay == 30s);

    const RetryPolicy policy =
        ok(RetryPolicy::from_environment(defaults, environment_of({{"MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"},
                                                                   {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.5"},
                                                                   {"MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0"}})));
    CHECK(policy.max_retries == 3);
    CHECK(policy.backoff_factor == 0.5s);
    CHECK(policy.jitter == 0s);
    CHECK(policy.max_delay == 30s);
    CHECK(policy.budget == 600s);
  }

  TEST_CASE("bad values are errors naming the variable") {
    const auto error = [](std::string name, std::string value) {
      const auto policy = RetryPolicy::from_environment(RetryPolicy{}, environment_of({{name, value}}));
      REQUIRE_FALSE(policy.ok());
      return policy.error();
    };
    CHECK(error("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "many") ==
          "MLFLOW_HTTP_REQUEST_MAX_RETRIES=\"many\" is not valid: expected a whole number, 0 or more");
    CHECK(error("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "-1").starts_with("MLFLOW_HTTP_REQUEST_MAX_RETRIES="));
    CHECK(error("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2.5").starts_with("MLFLOW_HTTP_REQUEST_MAX_RETRIES="));
    CHECK(error("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "-2") ==
          "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=\"-2\" is not valid: expected a number of seconds, 0 or more");
    CHECK(error("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "x").starts_with("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER="));
    CHECK(error("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "nan").starts_with("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="));
  }

} // TEST_SUITE
