#include "core/tracking_recorder.hpp"
#include "tests/support.hpp"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

using kiln::test::ok;
using kiln::test::TempDir;

using namespace kiln::core;

namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

/// read_outputs_file over a file holding `content`.
Expected<KeyValues> read(const TempDir& dir, const std::string& content) {
  return read_outputs_file(dir.write("step.outputs", content));
}

/// The error of reading `content`; the test stops if it reads fine.
std::string error_of(const TempDir& dir, const std::string& content) {
  auto result = read(dir, content);
  REQUIRE_FALSE(result.ok());
  return result.error();
}

} // namespace

TEST_SUITE("core::read_outputs_file") {
  TEST_CASE("name=value lines, in the order first written; the value keeps '=' and spaces") {
    TempDir dir;
    auto outputs = ok(read(dir, "path=out/model.pkl\nscore=0.7\nurl=http://x/?a=b&c=d\n_under.dot-dash= two words \n"));
    CHECK(outputs == Pairs{{"path", "out/model.pkl"},
                           {"score", "0.7"},
                           {"url", "http://x/?a=b&c=d"},
                           {"_under.dot-dash", " two words "}});
  }

  TEST_CASE("an empty value, and a last line without a newline") {
    TempDir dir;
    CHECK(ok(read(dir, "empty=\nlast=1")) == Pairs{{"empty", ""}, {"last", "1"}});
  }

  TEST_CASE("a later line for a name replaces the value and keeps its place") {
    TempDir dir;
    CHECK(ok(read(dir, "a=1\nb=2\na=3\n")) == Pairs{{"a", "3"}, {"b", "2"}});
  }

  TEST_CASE("NAME<<DELIMITER takes the lines up to DELIMITER, blank ones included") {
    TempDir dir;
    auto outputs = ok(read(dir, "before=x\n"
                                "notes<<EOF\n"
                                "line one\n"
                                "\n"
                                "a=b is not a new output here\n"
                                "EOF\n"
                                "after=y\n"
                                "empty<<END\n"
                                "END\n"));
    CHECK(outputs ==
          Pairs{{"before", "x"}, {"notes", "line one\n\na=b is not a new output here"}, {"after", "y"}, {"empty", ""}});
  }

  TEST_CASE("a delimiter inside a line does not end the value, only a whole line does") {
    TempDir dir;
    CHECK(ok(read(dir, "v<<EOF\n EOF\nEOF2\nEOF\n")) == Pairs{{"v", " EOF\nEOF2"}});
  }

  TEST_CASE("CRLF line endings are read as LF, in plain and heredoc lines") {
    TempDir dir;
    CHECK(ok(read(dir, "a=1\r\nlog<<EOF\r\nx\r\ny\r\nEOF\r\nb=2\r\n")) ==
          Pairs{{"a", "1"}, {"log", "x\ny"}, {"b", "2"}});
  }

  TEST_CASE("blank and whitespace-only lines are ignored") {
    TempDir dir;
    CHECK(ok(read(dir, "\n\na=1\n   \n\t\n\r\nb=2\n\n")) == Pairs{{"a", "1"}, {"b", "2"}});
  }

  TEST_CASE("no file, or an empty one, is no outputs") {
    TempDir dir;
    auto missing = read_outputs_file(dir.path() / "never-written.outputs");
    REQUIRE(missing.ok());
    CHECK(missing->empty());
    CHECK(ok(read(dir, "")).empty());
  }

  TEST_CASE("a line that is not NAME=VALUE fails, naming the file, the line number and the line") {
    TempDir dir;
    const std::string file = dir.file("step.outputs");
    CHECK(error_of(dir, "ok=1\n\njust some text\n") ==
          "KILN_OUTPUTS (" + file + ") line 3: expected NAME=VALUE, got 'just some text'");
    CHECK(error_of(dir, "=value\n") == "KILN_OUTPUTS (" + file + ") line 1: expected NAME=VALUE, got '=value'");
    CHECK(error_of(dir, "1st=value\n") == "KILN_OUTPUTS (" + file + ") line 1: expected NAME=VALUE, got '1st=value'");
    CHECK(error_of(dir, "my name=value\n") ==
          "KILN_OUTPUTS (" + file + ") line 1: expected NAME=VALUE, got 'my name=value'");
    // Line numbers count the lines of a heredoc before it.
    CHECK(error_of(dir, "v<<EOF\na\nb\nEOF\noops\n") ==
          "KILN_OUTPUTS (" + file + ") line 5: expected NAME=VALUE, got 'oops'");
  }

  TEST_CASE("a long bad line is shortened to 80 characters in the error") {
    TempDir dir;
    const std::string line(100, 'x');
    const std::string error = error_of(dir, line + "\n");
    CHECK(error.ends_with("line 1: expected NAME=VALUE, got '" + std::string(77, 'x') + "...'"));
  }

  TEST_CASE("a bad heredoc header fails, naming the line") {
    TempDir dir;
    const std::string file = dir.file("step.outputs");
    CHECK(error_of(dir, "a=1\nnotes<<\nx\n") ==
          "KILN_OUTPUTS (" + file + ") line 2: expected NAME<<DELIMITER, got 'notes<<'");
    CHECK(error_of(dir, "<<EOF\nx\nEOF\n") ==
          "KILN_OUTPUTS (" + file + ") line 1: expected NAME<<DELIMITER, got '<<EOF'");
  }

  TEST_CASE("an unterminated heredoc fails, naming the line where it started and its delimiter") {
    TempDir dir;
    const std::string file = dir.file("step.outputs");
    CHECK(error_of(dir, "a=1\n\nnotes<<EOF\nline\nEOF \n") ==
          "KILN_OUTPUTS (" + file + ") line 3: no line 'EOF' ends the value of 'notes'");
  }
}
