// CurlTransport against a real HTTP server: tests/plugins/http_fault_server.py,
// started per test as a child process on a port of its choosing.

#include "plugins/curl_transport.hpp"

#include "core/hash.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using kiln::plugins::CurlTransport;
using kiln::plugins::HttpRequest;
using kiln::plugins::HttpResult;
using kiln::plugins::HttpSettings;
using kiln::plugins::TransportFailure;
using nlohmann::json;
using namespace kiln::plugins::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* k_password = "pa:ss@w/rd-4711";
constexpr const char* k_token = "tok-0123456789abcdef";

// Starts `args`, its output going to `output` when not empty.
pid_t spawn(const std::vector<std::string>& args, const std::string& output = "") {
  std::vector<char*> argv;
  for (const std::string& arg : args) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  if (!output.empty()) {
    ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  pid_t pid = -1;
  const int spawned = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  REQUIRE(spawned == 0);
  return pid;
}

// Runs `args` to the end; its output is shown when it fails.
void run(const TempDir& dir, const std::vector<std::string>& args) {
  const std::string output = dir.file("run-output");
  const pid_t pid = spawn(args, output);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), args[0] << " failed: " << read_file(output));
}

// A port nothing listens on (just released by us).
int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t size = sizeof address;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

// The fault server as a child process, stopped with the test. Writes to a
// dropped connection must not kill the test binary, as they do not kill kiln.
class FaultServer {
public:
  explicit FaultServer(const TempDir& dir, std::vector<std::string> options = {}, std::string scheme = "http")
      : m_scheme(std::move(scheme)) {
    m_previous_sigpipe = std::signal(SIGPIPE, SIG_IGN);
    // libcurl honours http_proxy; the server is local.
    ::setenv("no_proxy", "127.0.0.1", 1);
    const std::string port_file = dir.file("port-" + std::to_string(++s_started));
    std::vector<std::string> args = {"/usr/bin/python3", std::string(KILN_TEST_DATA) + "/plugins/http_fault_server.py",
                                     "--port-file", port_file};
    args.insert(args.end(), options.begin(), options.end());
    m_pid = spawn(args);
    REQUIRE_MESSAGE(wait_for_file(port_file), "the fault server did not start");
    m_port = std::stoi(read_file(port_file));
  }
  ~FaultServer() {
    ::kill(m_pid, SIGTERM);
    ::waitpid(m_pid, nullptr, 0);
    std::signal(SIGPIPE, m_previous_sigpipe);
  }
  FaultServer(const FaultServer&) = delete;
  FaultServer& operator=(const FaultServer&) = delete;

  int port() const { return m_port; }
  std::string url() const { return m_scheme + "://127.0.0.1:" + std::to_string(m_port); }

private:
  static inline int s_started = 0;
  std::string m_scheme;
  pid_t m_pid = -1;
  int m_port = 0;
  void (*m_previous_sigpipe)(int) = SIG_DFL;
};

// Every error and trace line of a test, so it can check none holds a secret.
struct Collected {
  std::vector<std::string> lines;

  void add(const HttpResult& result) {
    if (!result.ok()) {
      lines.push_back(result.error.message);
    }
  }
  void check_clean() const {
    for (const std::string& line : lines) {
      CAPTURE(line);
      CHECK(line.find(k_password) == std::string::npos);
      CHECK(line.find(k_token) == std::string::npos);
      CHECK(line.find("4711") == std::string::npos);
      CHECK(line.find("0123456789abcdef") == std::string::npos);
    }
  }
};

HttpSettings settings_for(const std::string& url, Collected* collected = nullptr) {
  HttpSettings settings = kiln::test::ok(kiln::plugins::parse_tracking_uri(url));
  settings.request_timeout = 5s;
  settings.connect_timeout = 2s;
  if (collected != nullptr) {
    settings.trace = [collected](const std::string& line) { collected->lines.push_back(line); };
  }
  return settings;
}

HttpRequest request(std::string method, std::string target, std::string body = "", std::string content_type = "") {
  HttpRequest result;
  result.method = std::move(method);
  result.target = std::move(target);
  result.body = std::move(body);
  result.content_type = std::move(content_type);
  return result;
}

json send_json(CurlTransport& transport, const HttpRequest& request, int expected_status = 200) {
  const HttpResult result = transport.send(request);
  REQUIRE_MESSAGE(result.ok(), result.error.message);
  CHECK(result.response->status == expected_status);
  return json::parse(result.response->body);
}

std::string sha256_of_zeros(std::uint64_t size) {
  kiln::core::Sha256 hash;
  const std::string zeros(1 << 20, '\0');
  for (std::uint64_t left = size; left > 0;) {
    const std::uint64_t chunk = std::min<std::uint64_t>(left, zeros.size());
    hash.update(zeros.data(), chunk);
    left -= chunk;
  }
  return hash.finish();
}

// A self-signed certificate for 127.0.0.1 (its own CA) in `dir`.
void make_certificate(const TempDir& dir) {
  run(dir, {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            dir.file("key.pem"), "-out", dir.file("cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost"});
}

} // namespace

TEST_SUITE("plugins::CurlTransport") {

  TEST_CASE("requests share one kept-alive connection") {
    TempDir dir;
    FaultServer server(dir);
    CurlTransport transport(settings_for(server.url()));
    for (int i = 0; i < 10; ++i) {
      const json echo = send_json(transport, request(i % 2 == 0 ? "GET" : "POST", "/echo", "{}", "application/json"));
      CHECK(echo["path"] == "/echo");
    }
    CHECK(transport.connections_opened() == 1);
    CHECK(send_json(transport, request("GET", "/connections"))["connections"] == 1);
    CHECK(transport.connections_opened() == 1);
  }

  TEST_CASE("a request that is not idempotent goes over a new connection") {
    TempDir dir;
    FaultServer server(dir);
    CurlTransport transport(settings_for(server.url()));
    send_json(transport, request("GET", "/echo"));
    HttpRequest create = request("POST", "/echo", "{}", "application/json");
    create.idempotent = false;
    send_json(transport, create);
    CHECK(transport.connections_opened() == 2);
    send_json(transport, create);
    CHECK(transport.connections_opened() == 3);
    // Later requests reuse a kept connection again.
    send_json(transport, request("GET", "/echo"));
    CHECK(transport.connections_opened() == 3);
    CHECK(send_json(transport, request("GET", "/connections"))["connections"] == 3);
  }

  TEST_CASE("methods, bodies and headers") {
    TempDir dir;
    FaultServer server(dir);
    CurlTransport transport(settings_for(server.url() + "/"));

    json echo = send_json(transport, request("POST", "/echo", R"({"a": 1})", "application/json"));
    CHECK(echo["method"] == "POST");
    CHECK(echo["body_length"] == 8);
    CHECK(echo["content_type"] == "application/json");
    CHECK(echo["user_agent"] == std::string("kiln/") + KILN_VERSION);
    CHECK(echo["expect"] == "");
    CHECK(echo["auth_scheme"] == "");

    // libcurl's default form Content-Type is not sent.
    echo = send_json(transport, request("POST", "/echo"));
    CHECK(echo["body_length"] == 0);
    CHECK(echo["content_type"] == "");

    for (const char* method : {"PUT", "PATCH", "DELETE"}) {
      CAPTURE(method);
      echo = send_json(transport, request(method, "/echo", "12345", "text/plain"));
      CHECK(echo["method"] == method);
      CHECK(echo["body_length"] == 5);
      CHECK(echo["content_type"] == "text/plain");
    }
    echo = send_json(transport, request("DELETE", "/echo"));
    CHECK(echo["method"] == "DELETE");
    echo = send_json(transport, request("GET", "/echo?x=1"));
    CHECK(echo["method"] == "GET");
    CHECK(echo["body_length"] == 0);

    const HttpResult result = transport.send(request("GET", "/echo"));
    REQUIRE(result.ok());
    CHECK(result.response->headers.at("content-type") == "application/json");
    CHECK(result.response->headers.count("Content-Type") == 0);
    CHECK(transport.connections_opened() == 1);
  }

  TEST_CASE("an HTTP error status is a response, with its headers") {
    TempDir dir;
    FaultServer server(dir);
    CurlTransport transport(settings_for(server.url()));
    HttpResult result = transport.send(request("POST", "/status/503?retry_after=7", "{}"));
    REQUIRE(result.ok());
    CHECK(result.response->status == 503);
    CHECK(result.response->headers.at("retry-after") == "7");
    CHECK(json::parse(result.response->body)["status"] == 503);

    result = transport.send(request("GET", "/status/404"));
    REQUIRE(result.ok());
    CHECK(result.response->status == 404);
    CHECK(result.response->headers.count("retry-after") == 0);
  }

  TEST_CASE("send_with_retries over a real connection") {
    TempDir dir;
    FaultServer server(dir);
    CurlTransport transport(settings_for(server.url()));
    kiln::plugins::RetryPolicy policy;
    policy.max_retries = 2;
    policy.backoff_factor = 0.01s;
    policy.jitter = 0.01s;
    std::vector<std::string> traced;
    const HttpResult result = send_with_retries(transport, request("GET", "/status/503?retry_after=0"), policy,
                                                kiln::plugins::system_retry_environment(), {},
                                                [&](const std::string& line) { traced.push_back(line); });
    REQUIRE(result.ok());
    CHECK(result.response->status == 503);
    CHECK(traced.size() == 2);
    CHECK(transport.connections_opened() == 1);
  }

  TEST_CASE("Basic credentials from the URI's userinfo") {
    TempDir dir;
    FaultServer server(dir, {"--user", "alice", "--password", k_password});
    Collected collected;
    CurlTransport transport(
        settings_for("http://alice:pa%3Ass%40w%2Frd-4711@127.0.0.1:" + std::to_string(server.port()), &collected));
    const json echo = send_json(transport, request("GET", "/echo"));
    CHECK(echo["auth_scheme"] == "Basic");
    CHECK(echo["auth_ok"] == true);

    HttpSettings wrong = settings_for(server.url());
    wrong.username = "alice";
    wrong.password = "not it";
    CurlTransport rejected(wrong);
    CHECK(send_json(rejected, request("GET", "/echo"))["auth_ok"] == false);
    collected.check_clean();
  }

  TEST_CASE("a Bearer token wins over Basic credentials") {
    TempDir dir;
    FaultServer server(dir, {"--user", "alice", "--password", k_password, "--token", k_token});
    HttpSettings settings = settings_for(server.url());
    settings.username = "alice";
    settings.password = k_password;
    settings.token = k_token;
    CurlTransport transport(settings);
    const json echo = send_json(transport, request("POST", "/echo", "{}", "application/json"));
    CHECK(echo["auth_scheme"] == "Bearer");
    CHECK(echo["auth_ok"] == true);
  }

  TEST_CASE("no response within request_timeout is a timeout") {
    TempDir dir;
    FaultServer server(dir);
    Collected collected;
    HttpSettings settings = settings_for(server.url(), &collected);
    settings.request_timeout = 300ms;
    CurlTransport transport(settings);
    const auto started = std::chrono::steady_clock::now();
    const HttpResult result = transport.send(request("GET", "/slow/5000"));
    const auto took = std::chrono::steady_clock::now() - started;
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.failure == TransportFailure::timeout);
    CHECK(result.error.message.starts_with("GET " + server.url() + "/slow/5000 timed out: "));
    CHECK(took >= 250ms);
    CHECK(took < 3s);
    // A slow answer within the limit is fine.
    CHECK(transport.send(request("GET", "/slow/10")).ok());
  }

  TEST_CASE("a connection dropped without a response is a connection error") {
    TempDir dir;
    FaultServer server(dir);
    CurlTransport transport(settings_for(server.url()));
    const HttpResult result = transport.send(request("POST", "/drop", "{}"));
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.failure == TransportFailure::connection);
    CHECK(result.error.message.starts_with("connection to " + server.url() + " lost during POST /drop: "));
    CHECK(kiln::plugins::is_retryable(result));
    // The transport recovers on a new connection.
    CHECK(send_json(transport, request("GET", "/echo"))["method"] == "GET");
    CHECK(transport.connections_opened() == 2);
  }

  TEST_CASE("a refused connection is a connection error") {
    const std::string url = "http://127.0.0.1:" + std::to_string(unused_port());
    CurlTransport transport(settings_for(url));
    const HttpResult result = transport.send(request("GET", "/echo"));
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.failure == TransportFailure::connection);
    CHECK(result.error.message == "cannot connect to " + url + ": Connection refused");
  }

  TEST_CASE("file bodies are streamed: 1 MiB, and a sparse 64 MiB") {
    TempDir dir;
    FaultServer server(dir);
    Collected collected;
    CurlTransport transport(settings_for(server.url(), &collected));

    std::string content(1 << 20, '\0');
    for (std::size_t i = 0; i < content.size(); ++i) {
      content[i] = static_cast<char>((i * 7919) >> 3);
    }
    HttpRequest upload = request("PUT", "/sink");
    upload.content_type = "application/octet-stream";
    upload.body_file = dir.write("one-mib", content);
    json sink = send_json(transport, upload);
    CHECK(sink["method"] == "PUT");
    CHECK(sink["bytes"] == content.size());
    CHECK(sink["sha256"] == kiln::core::sha256_hex(content));
    REQUIRE(collected.lines.size() == 1);
    CHECK(collected.lines[0].starts_with("PUT /sink -> 200 ("));
    CHECK(collected.lines[0].find(" ms, sent 1.0 MiB, received ") != std::string::npos);

    constexpr std::uint64_t k_sparse_size = 64ull << 20;
    upload.body_file = dir.path() / "sparse";
    { std::ofstream create(upload.body_file); }
    std::filesystem::resize_file(upload.body_file, k_sparse_size);
    sink = send_json(transport, upload);
    CHECK(sink["bytes"] == k_sparse_size);
    CHECK(sink["sha256"] == sha256_of_zeros(k_sparse_size));

    // Another method for a file body, and the empty file.
    upload.method = "POST";
    upload.body_file = dir.write("empty", "");
    sink = send_json(transport, upload);
    CHECK(sink["method"] == "POST");
    CHECK(sink["bytes"] == 0);
    CHECK(transport.connections_opened() == 1);
  }

  TEST_CASE("file uploads have no whole-request timeout") {
    TempDir dir;
    FaultServer server(dir);
    HttpSettings settings = settings_for(server.url());
    settings.request_timeout = 100ms;
    settings.stall_timeout = 1s;
    CurlTransport transport(settings);
    HttpRequest upload = request("PUT", "/slow/400");
    upload.body_file = dir.write("small", "0123456789");
    CHECK(send_json(transport, upload)["slept_ms"] == 400);

    // The stall limit itself is not tested here: libcurl averages the speed
    // over the last 5 s, so a stall after a burst takes 6 s or more to show.
  }

  TEST_CASE("an unreadable body file is fatal, before anything is sent") {
    TempDir dir;
    FaultServer server(dir);
    CurlTransport transport(settings_for(server.url()));
    HttpRequest upload = request("PUT", "/sink");
    upload.body_file = dir.path() / "missing";
    HttpResult result = transport.send(upload);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.failure == TransportFailure::fatal);
    CHECK(result.error.message == "cannot read " + upload.body_file.string() + ": No such file or directory");

    upload.body_file = dir.path();
    result = transport.send(upload);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.failure == TransportFailure::fatal);
    CHECK(result.error.message.ends_with("not a regular file"));
    CHECK(transport.connections_opened() == 0);
  }

  TEST_CASE("TLS: verified by default, with a CA file, or not at all when insecure") {
    TempDir dir;
    make_certificate(dir);
    FaultServer server(dir, {"--cert", dir.file("cert.pem"), "--key", dir.file("key.pem")}, "https");
    Collected collected;

    CurlTransport verified(settings_for(server.url(), &collected));
    const HttpResult result = verified.send(request("GET", "/echo"));
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.failure == TransportFailure::fatal);
    CHECK(result.error.message.starts_with("cannot verify the TLS certificate of " + server.url() + ": "));
    CHECK_FALSE(kiln::plugins::is_retryable(result));

    HttpSettings with_ca = settings_for(server.url(), &collected);
    with_ca.ca_cert_path = dir.file("cert.pem");
    CurlTransport trusting(with_ca);
    CHECK(send_json(trusting, request("GET", "/echo"))["method"] == "GET");
    CHECK(send_json(trusting, request("GET", "/echo"))["method"] == "GET");
    CHECK(trusting.connections_opened() == 1);

    HttpSettings insecure = settings_for(server.url(), &collected);
    insecure.insecure_tls = true;
    CurlTransport unverified(insecure);
    CHECK(send_json(unverified, request("POST", "/echo", "{}"))["method"] == "POST");

    HttpSettings bad_ca = settings_for(server.url(), &collected);
    bad_ca.ca_cert_path = dir.file("no-such-ca.pem");
    CurlTransport misconfigured(bad_ca);
    const HttpResult missing_ca = misconfigured.send(request("GET", "/echo"));
    REQUIRE_FALSE(missing_ca.ok());
    CHECK(missing_ca.error.failure == TransportFailure::fatal);
  }

  TEST_CASE("trace lines: one per request, with status, time and sizes") {
    TempDir dir;
    FaultServer server(dir);
    Collected collected;
    CurlTransport transport(settings_for(server.url(), &collected));
    send_json(transport, request("POST", "/echo", std::string(2000, 'x'), "application/json"));
    transport.send(request("GET", "/drop"));
    REQUIRE(collected.lines.size() == 2);
    CHECK(collected.lines[0].starts_with("POST /echo -> 200 ("));
    CHECK(collected.lines[0].find(" ms, sent 2.0 KiB, received ") != std::string::npos);
    CHECK(collected.lines[0].ends_with(" B)"));
    CHECK(collected.lines[1].starts_with("GET /drop -> connection error: connection to " + server.url() +
                                         " lost during GET /drop: "));
  }

  TEST_CASE("credentials never appear in errors or trace lines") {
    TempDir dir;
    make_certificate(dir);
    FaultServer plain(dir, {"--user", "alice", "--password", k_password});
    FaultServer tls(dir, {"--cert", dir.file("cert.pem"), "--key", dir.file("key.pem")}, "https");
    Collected collected;
    const std::string userinfo = "alice:pa%3Ass%40w%2Frd-4711@";
    const std::vector<std::string> urls = {
        "http://" + userinfo + "127.0.0.1:" + std::to_string(plain.port()),
        "https://" + userinfo + "127.0.0.1:" + std::to_string(tls.port()),
        "http://" + userinfo + "127.0.0.1:" + std::to_string(unused_port()),
        // The token as a URL user name.
        std::string("http://") + k_token + "@127.0.0.1:" + std::to_string(unused_port()),
    };
    for (const std::string& url : urls) {
      for (const bool with_token : {false, true}) {
        HttpSettings settings = settings_for(url, &collected);
        settings.request_timeout = 200ms;
        if (with_token) {
          settings.token = k_token;
        }
        CurlTransport transport(settings);
        for (const char* target : {"/echo", "/drop", "/slow/1000", "/status/401"}) {
          collected.add(transport.send(request("POST", target, "{}", "application/json")));
        }
        // A secret in a file name is redacted as anywhere else.
        HttpRequest upload = request("PUT", "/sink");
        upload.body_file = dir.path() / (settings.password.empty() ? settings.username : settings.password);
        collected.add(transport.send(upload));
      }
    }
    CHECK(collected.lines.size() >= urls.size() * 2 * 5);
    collected.check_clean();
  }

} // TEST_SUITE
