#include "cli/console.hpp"
#include "cli/output.hpp"
#include "core/tracker_store.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <limits>
#include <sstream>

using kiln::cli::csv_field;
using kiln::cli::FastWriter;
using kiln::cli::format_metric;
using kiln::cli::OutputFormat;
using kiln::cli::parse_output_format;
using kiln::cli::Table;
using kiln::cli::write_csv_row;

namespace {

constexpr double k_nan = std::numeric_limits<double>::quiet_NaN();
constexpr double k_inf = std::numeric_limits<double>::infinity();

std::string csv_row(const std::vector<std::string>& fields) {
  std::ostringstream out;
  write_csv_row(out, fields);
  return out.str();
}

/// Everything written to a temporary file's descriptor.
std::string read_all(std::FILE* file) {
  std::rewind(file);
  std::string text;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, file)) > 0;) {
    text.append(buf, n);
  }
  return text;
}

} // namespace

TEST_SUITE("cli::OutputFormat") {
  TEST_CASE("names round-trip") {
    for (auto format : {OutputFormat::table, OutputFormat::json, OutputFormat::csv}) {
      CHECK(parse_output_format(to_string(format)) == format);
    }
    CHECK_FALSE(parse_output_format("CSV"));
    CHECK_FALSE(parse_output_format(""));
  }
}

TEST_SUITE("cli::Csv") {
  TEST_CASE("plain fields are written as they are") {
    CHECK(csv_field("loss") == "loss");
    CHECK(csv_field("") == "");
    CHECK(csv_field("0.41") == "0.41");
    CHECK(csv_field("a b") == "a b");
  }

  TEST_CASE("commas, quotes, line breaks and edge spaces are quoted") {
    CHECK(csv_field("a,b") == "\"a,b\"");
    CHECK(csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
    CHECK(csv_field("\"") == "\"\"\"\"");
    CHECK(csv_field("two\nlines") == "\"two\nlines\"");
    CHECK(csv_field("cr\r") == "\"cr\r\"");
    CHECK(csv_field(" padded") == "\" padded\"");
    CHECK(csv_field("padded ") == "\"padded \"");
  }

  TEST_CASE("rows end with LF") {
    CHECK(csv_row({"step", "value"}) == "step,value\n");
    CHECK(csv_row({"a,b", "", "c"}) == "\"a,b\",,c\n");
    CHECK(csv_row({}) == "\n");
    // A lone empty field is not an empty line.
    CHECK(csv_row({""}) == "\"\"\n");
  }
}

TEST_SUITE("cli::Table") {
  TEST_CASE("csv has the header and every row, nothing padded or cut") {
    Table table({"RUN", "NOTE"});
    table.add({"1", "first, and \"best\""});
    table.add({"12345678901234567890", ""});
    std::ostringstream out;
    table.print_csv(out);
    CHECK(out.str() == "RUN,NOTE\n"
                       "1,\"first, and \"\"best\"\"\"\n"
                       "12345678901234567890,\n");
  }

  TEST_CASE("columns align by code points, so sparklines fit") {
    Table table({"RUN", "LOSS", "N"});
    table.add({"1", "▁▃▅█", "4"});
    table.add({"22", "ok", "1"});
    std::ostringstream out;
    table.print(out);
    CHECK(out.str() == "RUN  LOSS  N\n"
                       "1    ▁▃▅█  4\n"
                       "22   ok    1\n");
  }
}

TEST_SUITE("cli::format_metric") {
  TEST_CASE("shortest text that reads back") {
    CHECK(format_metric(0.41) == "0.41");
    CHECK(format_metric(1e-05) == "1e-05");
    CHECK(format_metric(0.1 + 0.2) == "0.30000000000000004");
    CHECK(format_metric(3.0) == "3");
    CHECK(format_metric(-2.5) == "-2.5");
    CHECK(format_metric(123456789.0) == "123456789");
    CHECK(format_metric(1e20) == "1e+20");
    CHECK(format_metric(0.0) == "0");
    CHECK(format_metric(std::numeric_limits<double>::max()) == "1.7976931348623157e+308");
    for (double v : {0.41, 1e-05, 0.1 + 0.2, 6.02214076e23, -1.0 / 3.0}) {
      CHECK(std::stod(format_metric(v)) == v);
    }
  }

  TEST_CASE("not finite") {
    CHECK(format_metric(k_nan) == "nan");
    CHECK(format_metric(-k_nan) == "nan");
    CHECK(format_metric(k_inf) == "inf");
    CHECK(format_metric(-k_inf) == "-inf");
  }

  TEST_CASE("json follows MLflow for NaN and infinities") {
    CHECK(kiln::core::metric_value_json(0.41).dump() == "0.41");
    CHECK(kiln::core::metric_value_json(2.0).dump() == "2.0");
    CHECK(kiln::core::metric_value_json(k_nan) == "NaN");
    CHECK(kiln::core::metric_value_json(k_inf) == "Infinity");
    CHECK(kiln::core::metric_value_json(-k_inf) == "-Infinity");
  }
}

TEST_SUITE("cli::FastWriter") {
  TEST_CASE("writes text, integers, doubles and csv fields to a descriptor") {
    std::FILE* file = std::tmpfile();
    REQUIRE(file != nullptr);
    {
      FastWriter out(fileno(file));
      out.append("step,timestamp,value");
      out.newline();
      out.append_int(0);
      out.append(',');
      out.append_int(-9'223'372'036'854'775'807LL - 1);
      out.append(',');
      out.append_double(0.41);
      out.newline();
      out.append_int(7);
      out.append(',');
      out.append_csv("a,b");
      out.append(',');
      out.append_double(k_nan);
      out.newline();
      CHECK(out.ok());
    }
    CHECK(read_all(file) == "step,timestamp,value\n"
                            "0,-9223372036854775808,0.41\n"
                            "7,\"a,b\",nan\n");
    std::fclose(file);
  }

  TEST_CASE("output larger than the buffer arrives whole and in order") {
    std::FILE* file = std::tmpfile();
    REQUIRE(file != nullptr);
    std::string expected;
    const std::string long_text(100'000, 'x');
    {
      FastWriter out(fileno(file));
      for (int i = 0; i < 100'000; ++i) {
        out.append_int(i);
        out.append(',');
        out.append_double(i / 4.0);
        out.newline();
        expected += std::to_string(i) + "," + format_metric(i / 4.0) + "\n";
      }
      out.append(long_text);
      expected += long_text;
      CHECK(out.flush());
    }
    CHECK(read_all(file) == expected);
    std::fclose(file);
  }

  TEST_CASE("a reader that went away stops the output with EPIPE") {
    // kiln ignores SIGPIPE (cli/app.cpp); so does this test.
    auto previous = std::signal(SIGPIPE, SIG_IGN);
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    ::close(fds[0]);
    {
      FastWriter out(fds[1]);
      out.append("lost\n");
      CHECK(out.ok()); // still buffered
      CHECK_FALSE(out.flush());
      CHECK(out.error() == EPIPE);
      for (int i = 0; i < 100'000; ++i) {
        out.append_int(i); // dropped, without another write
        out.newline();
      }
      CHECK(out.error() == EPIPE);
    }
    ::close(fds[1]);
    std::signal(SIGPIPE, previous);
  }

  TEST_CASE("a pipe with a reader gets the text") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    {
      FastWriter out(fds[1]);
      out.append("1,2\n");
      CHECK(out.flush());
    }
    ::close(fds[1]);
    char buf[16] = {};
    CHECK(::read(fds[0], buf, sizeof buf) == 4);
    CHECK(std::string(buf) == "1,2\n");
    ::close(fds[0]);
  }
}
