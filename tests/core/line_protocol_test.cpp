#include "core/line_protocol.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

using namespace kiln::core;
using Kind = ProtocolCommand::Kind;

namespace {

ProtocolCommand command(std::string_view line) {
  auto parsed = parse_protocol_line(line);
  REQUIRE_MESSAGE(parsed.ok(), (parsed.ok() ? std::string() : parsed.error()));
  REQUIRE(parsed->has_value());
  return **parsed;
}

std::string error_of(std::string_view line) {
  auto parsed = parse_protocol_line(line);
  REQUIRE_FALSE(parsed.ok());
  return parsed.error();
}

bool ordinary(std::string_view line) {
  auto parsed = parse_protocol_line(line);
  REQUIRE(parsed.ok());
  return !parsed->has_value();
}

} // namespace

TEST_SUITE("core::LineProtocol") {
  TEST_CASE("lines without the prefix are ordinary output") {
    CHECK(ordinary(""));
    CHECK(ordinary("epoch 3: loss 0.41"));
    CHECK(ordinary(" ::kiln::metric loss=1"));
    CHECK(ordinary("::kiln:metric loss=1"));
    CHECK(ordinary("::KILN::metric loss=1"));
    CHECK(ordinary("::kil"));
  }

  TEST_CASE("a metric") {
    const ProtocolCommand c = command("::kiln::metric loss=0.5");
    CHECK(c.kind == Kind::metric);
    REQUIRE(c.metrics.size() == 1);
    CHECK(c.metrics[0].key == "loss");
    CHECK(c.metrics[0].value == 0.5);
    CHECK(c.metrics[0].step == 0);
    CHECK(c.metrics[0].timestamp_ms == 0);
    CHECK(c.values.empty());
    CHECK(c.paths.empty());
  }

  TEST_CASE("step and timestamp apply to every metric of the line, wherever they are") {
    const ProtocolCommand c = command("::kiln::metric step=7 loss=0.25 timestamp=1700000000123 train/acc=-1e-3");
    REQUIRE(c.metrics.size() == 2);
    CHECK(c.metrics[0].key == "loss");
    CHECK(c.metrics[0].value == 0.25);
    CHECK(c.metrics[1].key == "train/acc");
    CHECK(c.metrics[1].value == -0.001);
    for (const MetricPoint& point : c.metrics) {
      CHECK(point.step == 7);
      CHECK(point.timestamp_ms == 1700000000123);
    }
    CHECK(command("::kiln::metric loss=1 step=-2").metrics[0].step == -2);
    CHECK(command("::kiln::metric loss=1 step=+4").metrics[0].step == 4);
  }

  TEST_CASE("tabs separate fields; runs of blanks and a trailing CR are ignored") {
    const ProtocolCommand c = command("::kiln::metric\tloss=1  \t acc=2\t\r");
    REQUIRE(c.metrics.size() == 2);
    CHECK(c.metrics[1].key == "acc");
    CHECK(c.metrics[1].value == 2);
    CHECK(command("::kiln::tag a=b\r\n").values == KeyValues{{"a", "b"}});
  }

  TEST_CASE("NaN and the infinities are metric values") {
    const ProtocolCommand c = command("::kiln::metric a=NaN b=-inf c=+Infinity d=INF");
    REQUIRE(c.metrics.size() == 4);
    CHECK(std::isnan(c.metrics[0].value));
    CHECK(c.metrics[1].value == -std::numeric_limits<double>::infinity());
    CHECK(c.metrics[2].value == std::numeric_limits<double>::infinity());
    CHECK(c.metrics[3].value == std::numeric_limits<double>::infinity());
  }

  TEST_CASE("params and tags keep line order, quotes and escapes") {
    const ProtocolCommand p = command(R"(::kiln::param optimizer="adam w" lr=0.01 expr=a=b empty= "my key"=v)");
    CHECK(p.kind == Kind::param);
    CHECK(p.values ==
          KeyValues{{"optimizer", "adam w"}, {"lr", "0.01"}, {"expr", "a=b"}, {"empty", ""}, {"my key", "v"}});

    const ProtocolCommand t = command(R"(::kiln::tag note="say \"hi\" \\ bye" path="C:\data\x" half=ab"c d"e)");
    CHECK(t.kind == Kind::tag);
    CHECK(t.values == KeyValues{{"note", R"(say "hi" \ bye)"}, {"path", R"(C:\data\x)"}, {"half", "abc de"}});
  }

  TEST_CASE("a quoted '=' belongs to the value or the key, not to the split") {
    CHECK(command(R"(::kiln::param a="x=y")").values == KeyValues{{"a", "x=y"}});
    CHECK(error_of(R"(::kiln::param "a=b"=c)") ==
          "param key 'a=b' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
  }

  TEST_CASE("artifacts") {
    const ProtocolCommand c = command(R"(::kiln::artifact model.pkl "reports/my plot.png" a=b.txt)");
    CHECK(c.kind == Kind::artifact);
    CHECK(c.paths == std::vector<std::string>{"model.pkl", "reports/my plot.png", "a=b.txt"});
  }

  TEST_CASE("malformed commands are errors that quote the offending token") {
    CHECK(error_of("::kiln::metrik loss=1") ==
          "unknown kiln command 'metrik' (expected metric, param, tag or artifact)");
    CHECK(error_of("::kiln::Metric loss=1") ==
          "unknown kiln command 'Metric' (expected metric, param, tag or artifact)");
    CHECK(error_of("::kiln::") == "missing kiln command after '::kiln::' (expected metric, param, tag or artifact)");
    CHECK(error_of("::kiln:: metric loss=1") ==
          "missing kiln command after '::kiln::' (expected metric, param, tag or artifact)");
    CHECK(error_of("::kiln::metric loss=abc") == "metric 'loss': 'abc' is not a number");
    CHECK(error_of("::kiln::metric loss=") == "metric 'loss': '' is not a number");
    CHECK(error_of("::kiln::metric loss=0.5,acc=1") == "metric 'loss': '0.5,acc=1' is not a number");
    CHECK(error_of("::kiln::metric loss") == "'loss' has no '=VALUE'");
    CHECK(error_of("::kiln::param lr") == "'lr' has no '=VALUE'");
    CHECK(error_of("::kiln::metric loss=1 step=3.5") == "step must be an integer, got '3.5'");
    CHECK(error_of("::kiln::metric loss=1 step=") == "step must be an integer, got ''");
    CHECK(error_of("::kiln::metric loss=1 timestamp=now") ==
          "timestamp must be an integer (ms since the Unix epoch), got 'now'");
    CHECK(error_of("::kiln::metric loss=1 step=1 step=2") == "step is given twice");
    CHECK(error_of("::kiln::metric a!=1") ==
          "metric key 'a!' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
    CHECK(error_of("::kiln::tag /abs=1") == "tag key '/abs' must not start with '/'");
    CHECK(error_of("::kiln::param =1") == "param a key must not be empty");
    CHECK(error_of(R"(::kiln::param note="open)") == R"(unterminated quote in '"open')");
    CHECK(error_of(R"(::kiln::artifact "a \" b)") == R"(unterminated quote in '"a \" b')");
  }

  TEST_CASE("a command needs at least one item") {
    CHECK(error_of("::kiln::metric") == "metric needs at least one KEY=NUMBER");
    CHECK(error_of("::kiln::metric step=3 timestamp=5") == "metric needs at least one KEY=NUMBER");
    CHECK(error_of("::kiln::param   ") == "param needs at least one KEY=VALUE");
    CHECK(error_of("::kiln::tag") == "tag needs at least one KEY=VALUE");
    CHECK(error_of("::kiln::artifact") == "artifact needs at least one PATH");
    CHECK(error_of(R"(::kiln::artifact "")") == R"(artifact path "" is empty)");
  }

  TEST_CASE("parse_metric_value") {
    CHECK(parse_metric_value("0") == 0.0);
    CHECK(parse_metric_value("-0.5") == -0.5);
    CHECK(parse_metric_value("+0.5") == 0.5);
    CHECK(parse_metric_value(".5") == 0.5);
    CHECK(parse_metric_value("5.") == 5.0);
    CHECK(parse_metric_value("1e3") == 1000.0);
    CHECK(parse_metric_value("2.5E-2") == 0.025);
    CHECK(parse_metric_value("123456789012") == 123456789012.0);
    CHECK(parse_metric_value("1e999") == std::numeric_limits<double>::infinity());
    CHECK(parse_metric_value("-1e999") == -std::numeric_limits<double>::infinity());
    CHECK(parse_metric_value("1e-400") == 0.0);
    for (const std::string text : {"nan", "NaN", "NAN", "-nan", "+nan"}) {
      CAPTURE(text);
      REQUIRE(parse_metric_value(text).has_value());
      CHECK(std::isnan(*parse_metric_value(text)));
    }
    CHECK(parse_metric_value("inf") == std::numeric_limits<double>::infinity());
    CHECK(parse_metric_value("+inf") == std::numeric_limits<double>::infinity());
    CHECK(parse_metric_value("-inf") == -std::numeric_limits<double>::infinity());
    CHECK(parse_metric_value("Infinity") == std::numeric_limits<double>::infinity());
    CHECK(parse_metric_value("-INFINITY") == -std::numeric_limits<double>::infinity());
    for (const std::string text : {"",          "+",   "-",   ".",   "abc",  "1.5x", " 1",  "1 ", "nan(1)", "infinit",
                                   "infinityy", "--1", "+-1", "-+1", "0x10", "1e",   "1e+", "e5", "1,5",    "1_000"}) {
      CAPTURE(text);
      CHECK_FALSE(parse_metric_value(text).has_value());
    }
  }
}
