#include "core/metrics_file.hpp"
#include "tests/support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <tuple>
using kiln::test::check;
using kiln::test::ok;
using kiln::test::TempDir;

namespace fs = std::filesystem;
using namespace kiln::core;

namespace {

constexpr std::int64_t k_now = 1'700'000'000'000;
constexpr double k_inf = std::numeric_limits<double>::infinity();

// Without a YAML loader: core tests cannot link the workflows library.
const YamlToJson k_no_yaml;

/// The points sorted by key, then step, for comparisons independent of
/// JSON object order.
std::vector<MetricPoint> sorted(std::vector<MetricPoint> points) {
  std::stable_sort(points.begin(), points.end(), [](const MetricPoint& a, const MetricPoint& b) {
    return std::tie(a.key, a.step) < std::tie(b.key, b.step);
  });
  return points;
}

std::vector<MetricPoint> read_ok(const fs::path& file, const YamlToJson& yaml = k_no_yaml) {
  auto points = read_metrics_file(file, k_now, yaml);
  REQUIRE_MESSAGE(points.ok(), (points.ok() ? std::string() : points.error()));
  return std::move(points).value();
}

std::string read_error(const fs::path& file, const YamlToJson& yaml = k_no_yaml) {
  auto points = read_metrics_file(file, k_now, yaml);
  REQUIRE_FALSE(points.ok());
  return points.error();
}

/// "key@step=value@timestamp" per point, for compact exact comparisons.
std::vector<std::string> describe(const std::vector<MetricPoint>& points) {
  std::vector<std::string> out;
  for (const MetricPoint& p : points) {
    std::string value = std::isnan(p.value) ? "nan" : p.value == k_inf ? "inf" : p.value == -k_inf ? "-inf" : "";
    if (value.empty()) {
      char buffer[32];
      std::snprintf(buffer, sizeof buffer, "%g", p.value);
      value = buffer;
    }
    out.push_back(p.key + "@" + std::to_string(p.step) + "=" + value +
                  (p.timestamp_ms == k_now ? "" : "@" + std::to_string(p.timestamp_ms)));
  }
  return out;
}

using Lines = std::vector<std::string>;

} // namespace

TEST_SUITE("core::MetricsFile") {
  TEST_CASE("a JSON object: numbers are metrics at step 0, nested objects flattened with '.'") {
    TempDir dir;
    const fs::path file = dir.write("metrics.json", R"({
  "accuracy": 0.9,
  "eval": {"f1": 0.8, "deep": {"x": 3}},
  "name": "resnet",
  "converged": true,
  "notes": null,
  "big": 12345678901234
})");
    CHECK(describe(sorted(read_ok(file))) ==
          Lines{"accuracy@0=0.9", "big@0=1.23457e+13", "eval.deep.x@0=3", "eval.f1@0=0.8"});
  }

  TEST_CASE("an array of numbers is a history, its index the step") {
    TempDir dir;
    const fs::path file = dir.write("metrics.json", R"({"loss": [1.5, 0.5, "NaN", 0.25], "eval": {"acc": [0.1, 0.2]},
 "mixed": [1, "x", true, 4], "nested": [[1, 2]], "rows": [{"a": 1}, {"a": 2}]})");
    CHECK(describe(sorted(read_ok(file))) == Lines{"eval.acc@0=0.1", "eval.acc@1=0.2", "loss@0=1.5", "loss@1=0.5",
                                                   "loss@2=nan", "loss@3=0.25", "mixed@0=1", "mixed@3=4", "rows.a@0=1",
                                                   "rows.a@1=2"});
  }

  TEST_CASE("the strings NaN, Infinity and -Infinity are those values; other strings are not metrics") {
    TempDir dir;
    const fs::path file =
        dir.write("metrics.json", R"({"a": "NaN", "b": "Infinity", "c": "-Infinity", "d": "nan", "e": "1.5"})");
    CHECK(describe(sorted(read_ok(file))) == Lines{"a@0=nan", "b@0=inf", "c@0=-inf"});
  }

  TEST_CASE("bare NaN and Infinity, as Python's json writes them, are accepted too") {
    TempDir dir;
    CHECK(describe(sorted(read_ok(dir.write("m.json", "{\"a\": NaN, \"b\": {\"c\": -Infinity}, \"s\": \"NaN\"}")))) ==
          Lines{"a@0=nan", "b.c@0=-inf", "s@0=nan"});
    // Flat lines take the fast path, nested ones nlohmann's.
    CHECK(describe(read_ok(dir.write("m.jsonl", "{\"a\": NaN, \"b\": Infinity}\n{\"n\": {\"a\": NaN}}\n"))) ==
          Lines{"a@0=nan", "b@0=inf", "n.a@1=nan"});
  }

  TEST_CASE("a top-level step and timestamp in a JSON object apply to its metrics") {
    TempDir dir;
    CHECK(describe(sorted(read_ok(dir.write("m.json", R"({"step": 40, "timestamp": 5, "loss": 0.5})")))) ==
          Lines{"loss@40=0.5@5"});
    CHECK(describe(sorted(read_ok(dir.write("n.json", R"({"eval": {"step": 2}, "loss": 0.5})")))) ==
          Lines{"eval.step@0=2", "loss@0=0.5"});
  }

  TEST_CASE("JSON Lines with steps and timestamps") {
    TempDir dir;
    const fs::path file = dir.write("history.jsonl", "{\"step\": 10, \"loss\": 0.5, \"acc\": 0.7}\n"
                                                     "{\"step\": 20, \"loss\": 0.25, \"timestamp\": 1234}\n"
                                                     "{\"timestamp\": 99, \"step\": 30, \"eval\": {\"f1\": 0.5}}\n");
    CHECK(describe(read_ok(file)) == Lines{"loss@10=0.5", "acc@10=0.7", "loss@20=0.25@1234", "eval.f1@30=0.5@99"});
  }

  TEST_CASE("JSON Lines without step: a line's index among the objects is its step; blank lines are skipped") {
    TempDir dir;
    const fs::path file = dir.write("history.ndjson", "\n{\"loss\": 3}\n\n   \n{\"loss\": 2}\r\n"
                                                      "{\"step\": 100, \"loss\": 1}\n{}\n{\"loss\": 0}");
    CHECK(describe(read_ok(file)) == Lines{"loss@0=3", "loss@1=2", "loss@100=1", "loss@4=0"});
  }

  TEST_CASE("the extension decides regardless of case, and a .json file of several objects is JSON Lines") {
    TempDir dir;
    CHECK(describe(read_ok(dir.write("H.JSONL", "{\"a\": 1}\n{\"a\": 2}\n"))) == Lines{"a@0=1", "a@1=2"});
    CHECK(describe(read_ok(dir.write("h.json", "{\"a\": 1}\n\n{\"a\": 2, \"b\": {\"c\": 3}}\n"))) ==
          Lines{"a@0=1", "a@1=2", "b.c@1=3"});
    // One object on one line, then blank lines: one object.
    CHECK(describe(read_ok(dir.write("one.json", "{\"step\": 3, \"a\": 1}\n\n"))) == Lines{"a@3=1"});
    // A pretty-printed object's first line is not an object by itself.
    CHECK(describe(sorted(read_ok(dir.write("pretty.json", "{\n  \"a\": 1,\n  \"b\": 2\n}\n")))) ==
          Lines{"a@0=1", "b@0=2"});
  }

  TEST_CASE("lines the fast path declines give the same points through nlohmann") {
    TempDir dir;
    const fs::path file = dir.write("h.jsonl", "{\"step\": 1, \"loss\": 1e-3}\n"
                                               "{ \"step\" : 2 ,\t\"loss\":-2.5E+2 }\n"
                                               "{\"step\": 3, \"loss\": 4, \"note\": \"warm\"}\n"
                                               "{\"step\": 4.0, \"loss\": 5}\n"
                                               "{\"step\": 5, \"lo\\u0073s\": 6}\n"
                                               "{\"step\": 6, \"loss\": 1e-400}\n"
                                               "{\"step\": 7, \"loss\": 1, \"loss\": 7}\n");
    CHECK(describe(read_ok(file)) ==
          Lines{"loss@1=0.001", "loss@2=-250", "loss@3=4", "loss@4=5", "loss@5=6", "loss@6=0", "loss@7=7"});
  }

  TEST_CASE("a UTF-8 byte order mark is skipped") {
    TempDir dir;
    CHECK(describe(read_ok(dir.write("b.jsonl", "\xEF\xBB\xBF{\"a\": 1}\n"))) == Lines{"a@0=1"});
    CHECK(describe(read_ok(dir.write("b.json", "\xEF\xBB\xBF{\"a\": 1}"))) == Lines{"a@0=1"});
  }

  TEST_CASE("an empty file holds no metrics") {
    TempDir dir;
    CHECK(read_ok(dir.write("e.json", "")).empty());
    CHECK(read_ok(dir.write("e.jsonl", "\n\n")).empty());
    CHECK(read_ok(dir.write("e.json", " \n\t\n")).empty());
    CHECK(read_ok(dir.write("e.yaml", "")).empty());
  }

  TEST_CASE("a long history is read whole, across the reader's blocks") {
    TempDir dir;
    std::string text;
    for (int i = 0; i < 100'000; ++i) {
      text += "{\"step\": " + std::to_string(i) + ", \"loss\": " + std::to_string(i) + ".5, \"acc\": 0.5}\n";
    }
    // The last line has no newline; a very long line spans blocks.
    text += "{\"loss\": 1, \"pad\": \"" + std::string(3 << 20, 'x') + "\"}";
    const std::vector<MetricPoint> points = read_ok(dir.write("long.jsonl", text));
    REQUIRE(points.size() == 200'001);
    CHECK(points[199'998].key == "loss");
    CHECK(points[199'998].step == 99'999);
    CHECK(points[199'998].value == 99'999.5);
    CHECK(points[200'000].step == 100'000);
  }

  TEST_CASE("JSON Lines errors name the file and the line") {
    TempDir dir;
    const fs::path array = dir.write("m.jsonl", "{\"a\": 1}\n\n[1, 2]\n");
    CHECK(read_error(array) == array.string() + ":3: expected an object, got an array");
    const fs::path number = dir.write("n.jsonl", "3\n");
    CHECK(read_error(number) == number.string() + ":1: expected an object, got a number");

    const fs::path invalid = dir.write("i.jsonl", "{\"a\": 1}\n{\"a\": 1\n");
    CHECK(read_error(invalid) == invalid.string() +
                                     ":2:8: invalid JSON: syntax error while parsing object - unexpected end of "
                                     "input; expected '}'");
    const fs::path literal = dir.write("l.jsonl", "{\"a\": 1}\n{\"a\": 1}\n{\"a\": x}\n");
    CHECK(read_error(literal).rfind(literal.string() + ":3:7: invalid JSON: syntax error", 0) == 0);
    // JSON's grammar, not from_chars': no leading zero, digits around '.'.
    for (const std::string bad : {"{\"a\": 01}", "{\"a\": .5}", "{\"a\": 1.}", "{\"a\": +1}", "{\"a\": 1} x",
                                  "{\"a\": nan}", "{\"a\": 1,}", "{'a': 1}"}) {
      CAPTURE(bad);
      const fs::path file = dir.write("g.jsonl", bad);
      CHECK(read_error(file).rfind(file.string() + ":1:", 0) == 0);
    }
  }

  TEST_CASE("step and timestamp must be integers") {
    TempDir dir;
    const fs::path fraction = dir.write("s.jsonl", "{\"step\": 1, \"a\": 1}\n{\"step\": 3.5, \"a\": 1}\n");
    CHECK(read_error(fraction) == fraction.string() + ":2: 'step' must be an integer, got 3.5");
    const fs::path text = dir.write("t.jsonl", "{\"step\": \"3\", \"a\": 1}\n");
    CHECK(read_error(text) == text.string() + ":1: 'step' must be an integer, got \"3\"");
    const fs::path time = dir.write("u.jsonl", "{\"timestamp\": null, \"a\": 1}\n");
    CHECK(read_error(time) == time.string() + ":1: 'timestamp' must be an integer (ms since the Unix epoch), got null");
    const fs::path object = dir.write("o.json", "{\"step\": [1], \"a\": 1}");
    CHECK(read_error(object) == object.string() + ": 'step' must be an integer, got [1]");
  }

  TEST_CASE("metric keys follow MLflow's rules") {
    TempDir dir;
    const fs::path line = dir.write("k.jsonl", "{\"ok\": 1}\n{\"a b!\": 1}\n");
    CHECK(read_error(line) ==
          line.string() + ":2: metric key 'a b!' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
    const fs::path nested = dir.write("n.jsonl", "{\"eval\": {\"f1@5\": 1, \"x\": \"y\"}}\n");
    CHECK(read_error(nested) ==
          nested.string() + ":1: metric key 'eval.f1@5' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
    const fs::path object = dir.write("o.json", "{\"/abs\": 1}");
    CHECK(read_error(object) == object.string() + ": metric key '/abs' must not start with '/'");
  }

  TEST_CASE("whole-file JSON errors give the line and column") {
    TempDir dir;
    const fs::path file = dir.write("m.json", "{\n  \"a\": 1,\n  \"b\": x\n}\n");
    CHECK(read_error(file).rfind(file.string() + ":3:8: invalid JSON: syntax error while parsing value", 0) == 0);
    const fs::path array = dir.write("a.json", "[\n1, 2]\n");
    CHECK(read_error(array) == array.string() + ": expected an object of metrics, got an array");
  }

  TEST_CASE("a missing or unreadable file is reported with the system's reason") {
    TempDir dir;
    const fs::path missing = dir.write("x.json", "").parent_path() / "missing.jsonl";
    CHECK(read_error(missing) == missing.string() + ": No such file or directory");
    CHECK(read_error(missing.parent_path() / "missing.json") ==
          (missing.parent_path() / "missing.json").string() + ": No such file or directory");
    const fs::path directory = missing.parent_path() / "d.jsonl";
    fs::create_directory(directory);
    CHECK(read_error(directory) == directory.string() + ": Is a directory");
  }

  TEST_CASE("YAML goes through the caller's loader") {
    TempDir dir;
    const fs::path file = dir.write("m.yaml", "loss: 0.5\n");
    std::string seen_text;
    std::string seen_file;
    const YamlToJson fake = [&](const std::string& text, const std::string& name) -> Expected<nlohmann::json> {
      seen_text = text;
      seen_file = name;
      return nlohmann::json{{"loss", 0.5}, {"eval", {{"f1", {1, 2}}}}, {"step", 3}};
    };
    CHECK(describe(sorted(read_ok(file, fake))) == Lines{"eval.f1@0=1", "eval.f1@1=2", "loss@3=0.5"});
    CHECK(seen_text == "loss: 0.5\n");
    CHECK(seen_file == file.string());

    const YamlToJson failing = [](const std::string&, const std::string& name) -> Expected<nlohmann::json> {
      return Error{name + ":1:3: invalid YAML: oops"};
    };
    CHECK(read_error(file, failing) == file.string() + ":1:3: invalid YAML: oops");

    const YamlToJson list = [](const std::string&, const std::string&) -> Expected<nlohmann::json> {
      return nlohmann::json::array({1, 2});
    };
    CHECK(read_error(dir.write("l.yml", "- 1\n"), list) ==
          (file.parent_path() / "l.yml").string() + ": expected a map of metrics, got a list");
    CHECK(read_error(file) == file.string() + ": YAML metrics files are not supported here");
  }

  TEST_CASE("flatten_metrics appends one object's points with the given step and timestamp") {
    std::vector<MetricPoint> out{MetricPoint{"before", 1, 0, 0}};
    const nlohmann::json object = {{"step", 9}, {"a", 1.5}, {"b", {{"c", "Infinity"}, {"d", false}}}, {"h", {4, 5}}};
    flatten_metrics(object, 7, 123, out);
    // "step" is not special here: only read_metrics_file takes it out.
    CHECK(describe(sorted(out)) ==
          Lines{"a@7=1.5@123", "b.c@7=inf@123", "before@0=1@0", "h@0=4@123", "h@1=5@123", "step@7=9@123"});
    std::vector<MetricPoint> none;
    flatten_metrics(nlohmann::json::array({1, 2}), 0, 0, none);
    CHECK(none.empty());
  }
}
