#include "workflows/yaml_json.hpp"

#include "core/metrics_file.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>

namespace fs = std::filesystem;
using kiln::workflows::yaml_to_json;
using nlohmann::json;

namespace {

json parsed(const std::string& text) {
  auto result = yaml_to_json(text, "m.yaml");
  REQUIRE_MESSAGE(result.ok(), (result.ok() ? std::string() : result.error()));
  return std::move(result).value();
}

/// The value of `key: <scalar>`.
json scalar(const std::string& scalar_text) {
  const json document = parsed("v: " + scalar_text + "\n");
  REQUIRE(document.is_object());
  REQUIRE(document.contains("v"));
  return document["v"];
}

std::string error_of(const std::string& text) {
  auto result = yaml_to_json(text, "m.yaml");
  REQUIRE_FALSE(result.ok());
  return result.error();
}

} // namespace

TEST_SUITE("workflows::yaml_to_json") {
  TEST_CASE("integers of the core schema") {
    CHECK(scalar("0") == json(0));
    CHECK(scalar("42") == json(42));
    CHECK(scalar("-7") == json(-7));
    CHECK(scalar("+7") == json(7));
    CHECK(scalar("007") == json(7));
    CHECK(scalar("0o17") == json(15));
    CHECK(scalar("0x1F") == json(31));
    CHECK(scalar("0xff") == json(255));
    CHECK(scalar("42").is_number_integer());
    CHECK(scalar("9223372036854775807") == json(std::numeric_limits<std::int64_t>::max()));
    CHECK(scalar("-9223372036854775808") == json(std::numeric_limits<std::int64_t>::min()));
    CHECK(scalar("18446744073709551615").is_number_unsigned());
    CHECK(scalar("-9223372036854775809").is_number_float());
    CHECK(scalar("99999999999999999999999") == json(1e23));
  }

  TEST_CASE("floats of the core schema, with .inf and .nan") {
    CHECK(scalar("1.5") == json(1.5));
    CHECK(scalar("-0.25") == json(-0.25));
    CHECK(scalar("1e3") == json(1000.0));
    CHECK(scalar("1e3").is_number_float());
    CHECK(scalar("2.5E-2") == json(0.025));
    CHECK(scalar(".5") == json(0.5));
    CHECK(scalar("5.") == json(5.0));
    CHECK(scalar("+.5") == json(0.5));
    CHECK(scalar(".inf") == json(std::numeric_limits<double>::infinity()));
    CHECK(scalar("+.Inf") == json(std::numeric_limits<double>::infinity()));
    CHECK(scalar("-.INF") == json(-std::numeric_limits<double>::infinity()));
    for (const std::string nan : {".nan", ".NaN", ".NAN"}) {
      CAPTURE(nan);
      const json value = scalar(nan);
      REQUIRE(value.is_number_float());
      CHECK(std::isnan(value.get<double>()));
    }
  }

  TEST_CASE("booleans and nulls") {
    CHECK(scalar("true") == json(true));
    CHECK(scalar("True") == json(true));
    CHECK(scalar("FALSE") == json(false));
    CHECK(scalar("null").is_null());
    CHECK(scalar("~").is_null());
    CHECK(parsed("v:\n")["v"].is_null());
  }

  TEST_CASE("anything else is a string, as is every quoted or block scalar") {
    for (const std::string text : {"yes", "no", "on", "1_000", "0o8", "0x", "0xg", "1e", ".", "+", "-x", "1.2.3", "nan",
                                   "inf", "-.nan", "0b101", "1:30", "TRue", "abc"}) {
      CAPTURE(text);
      CHECK(scalar(text) == json(text));
    }
    CHECK(scalar("\"3\"") == json("3"));
    CHECK(scalar("'1.5'") == json("1.5"));
    CHECK(scalar("\"true\"") == json("true"));
    CHECK(scalar("'null'") == json("null"));
    CHECK(scalar("!!str 12") == json("12"));
    CHECK(parsed("v: |\n  12\n")["v"] == json("12\n"));
  }

  TEST_CASE("maps and lists keep their shape; keys stay strings") {
    const json document = parsed("loss: [1.0, 0.5, .nan]\neval:\n  f1: 0.9\n  per_class:\n    - 0.8\n    - 0.7\n"
                                 "1: one\nname: \"run 3\"\n");
    CHECK(document["loss"].size() == 3);
    CHECK(document["loss"][1] == json(0.5));
    CHECK(document["eval"]["f1"] == json(0.9));
    CHECK(document["eval"]["per_class"] == json::array({0.8, 0.7}));
    CHECK(document["1"] == json("one"));
    CHECK(document["name"] == json("run 3"));
    CHECK(parsed("- 1\n- two\n") == json::array({1, "two"}));
    CHECK(parsed("42\n") == json(42));
  }

  TEST_CASE("an empty document is null") {
    CHECK(parsed("").is_null());
    CHECK(parsed("# nothing here\n").is_null());
    CHECK(parsed("\xEF\xBB\xBF"
                 "a: 1\n") == json{{"a", 1}});
  }

  TEST_CASE("errors are file:line:col: message, every one of them") {
    CHECK(error_of("a: 1\nb: 2\na: 3\n") == "m.yaml:3:1: duplicate key 'a' (first at line 1)");
    CHECK(error_of("a: 1\na: 2\nb: 1\nb: 2\n") ==
          "m.yaml:2:1: duplicate key 'a' (first at line 1)\nm.yaml:4:1: duplicate key 'b' (first at line 3)");
    CHECK(error_of("a: [1, 2\n").rfind("m.yaml:", 0) == 0);
    CHECK(error_of("a: \"open\n") == "m.yaml:1:4: invalid YAML: unterminated quoted string (missing closing quote)");
  }

  TEST_CASE("messages worded for workflow files are reworded for data") {
    CHECK(error_of("a: &x 1\nb: *x\n") == "m.yaml:2:4: aliases are not supported");
    CHECK(error_of("a: 1\n---\nb: 2\n") ==
          "m.yaml:2:1: the file must hold a single YAML document; remove this second one");
  }

  TEST_CASE("a YAML metrics file end to end through read_metrics_file") {
    std::string pattern = (fs::temp_directory_path() / "kiln-yaml-json-test-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    const fs::path dir = pattern;
    const fs::path file = dir / "metrics.yml";
    {
      std::ofstream out(file);
      out << "accuracy: 0.93\nloss: [0.9, 0.4, .nan]\neval:\n  f1: 0.88\n  label: best\nstep: 12\n";
    }
    auto points = kiln::core::read_metrics_file(file, 1000, yaml_to_json);
    const fs::path broken = dir / "broken.yaml";
    {
      std::ofstream out(broken);
      out << "a: 1\na: 2\n";
    }
    auto error = kiln::core::read_metrics_file(broken, 1000, yaml_to_json);
    std::error_code ignored;
    fs::remove_all(dir, ignored);

    REQUIRE_MESSAGE(points.ok(), (points.ok() ? std::string() : points.error()));
    std::map<std::string, std::vector<std::pair<std::int64_t, double>>> by_key;
    for (const kiln::core::MetricPoint& point : *points) {
      CHECK(point.timestamp_ms == 1000);
      by_key[point.key].emplace_back(point.step, point.value);
    }
    REQUIRE(by_key.size() == 3);
    CHECK(by_key["accuracy"] == std::vector<std::pair<std::int64_t, double>>{{12, 0.93}});
    CHECK(by_key["eval.f1"] == std::vector<std::pair<std::int64_t, double>>{{12, 0.88}});
    REQUIRE(by_key["loss"].size() == 3);
    CHECK(by_key["loss"][1] == std::pair<std::int64_t, double>{1, 0.4});
    CHECK(std::isnan(by_key["loss"][2].second));

    REQUIRE_FALSE(error.ok());
    CHECK(error.error() == broken.string() + ":2:1: duplicate key 'a' (first at line 1)");
  }
}
