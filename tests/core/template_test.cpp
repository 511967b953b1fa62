#include "core/template.hpp"

#include <doctest/doctest.h>

#include <map>

using namespace kiln::core;

namespace {

Workflow sample_workflow() {
  Workflow wf;
  wf.name = "iris";
  Param c;
  c.name = "C";
  c.type = ParamType::floating;
  c.value = "0.5";
  wf.params.push_back(c);
  Param n;
  n.name = "max-iter";
  n.type = ParamType::integer;
  n.value = "200";
  wf.params.push_back(n);
  return wf;
}

TemplateContext sample_context(const Workflow& wf) {
  TemplateContext ctx;
  ctx.workflow = &wf;
  ctx.run_id = "abc123";
  ctx.run_number = 7;
  ctx.step_id = "train";
  ctx.env = [](std::string_view name) -> std::optional<std::string> {
    if (name == "HOME") {
      return std::string("/home/me");
    }
    return std::nullopt;
  };
  return ctx;
}

std::string render(std::string_view text) {
  const Workflow wf = sample_workflow();
  auto out = render_template(text, sample_context(wf));
  REQUIRE_MESSAGE(out.ok(), (out.ok() ? std::string() : out.error()));
  return *out;
}

std::string render_error(std::string_view text) {
  const Workflow wf = sample_workflow();
  auto out = render_template(text, sample_context(wf));
  REQUIRE_FALSE(out.ok());
  return out.error();
}

} // namespace

TEST_SUITE("core::Template") {
  TEST_CASE("scan finds references with offsets") {
    const std::string text = "train --C ${{ params.C }} --id ${{run.id}}";
    const TemplateScan scan = scan_template(text);
    REQUIRE(scan.ok());
    REQUIRE(scan.refs.size() == 2);
    CHECK(scan.refs[0].ns == "params");
    CHECK(scan.refs[0].name == "C");
    CHECK(scan.refs[0].offset == 10);
    CHECK(scan.refs[0].length == 15);
    CHECK(text.substr(scan.refs[0].offset, scan.refs[0].length) == "${{ params.C }}");
    CHECK(scan.refs[1].ns == "run");
    CHECK(scan.refs[1].name == "id");
    CHECK(text.substr(scan.refs[1].offset, scan.refs[1].length) == "${{run.id}}");
  }

  TEST_CASE("scan reports syntax errors with offsets and keeps going") {
    const std::string text = "a ${{ }} b ${{ params.C x }} c ${{ params.ok }} d ${{ params.";
    const TemplateScan scan = scan_template(text);
    REQUIRE(scan.errors.size() == 3);
    CHECK(scan.errors[0].offset == 2);
    CHECK(scan.errors[0].length == 6);
    CHECK(scan.errors[0].message == "empty expression in '${{ }}'; write e.g. ${{ params.NAME }}");
    CHECK(scan.errors[1].offset == 11);
    CHECK(scan.errors[1].message == "bad expression 'params.C x': expected NAMESPACE.NAME, e.g. params.C");
    CHECK(scan.errors[2].offset == text.rfind("${{"));
    CHECK(scan.errors[2].length == 3);
    CHECK(scan.errors[2].message == "unterminated '${{' (missing '}}')");
    REQUIRE(scan.refs.size() == 1);
    CHECK(scan.refs[0].name == "ok");
  }

  TEST_CASE("an expression does not span lines") {
    const TemplateScan scan = scan_template("a ${{ params.C\n}}");
    REQUIRE(scan.errors.size() == 1);
    CHECK(scan.errors[0].message == "unterminated '${{' (missing '}}')");
  }

  TEST_CASE("bad names") {
    CHECK(scan_template("${{ params }}").errors.size() == 1);
    CHECK(scan_template("${{ params. }}").errors.size() == 1);
    CHECK(scan_template("${{ 1x.y }}").errors.size() == 1);
    CHECK(scan_template("${{ params.a.b }}").errors.size() == 1);
    CHECK(scan_template("${{ params.max-iter }}").ok());
  }

  TEST_CASE("escaped opening is not a reference") {
    const TemplateScan scan = scan_template("echo $${{ not.a_ref }} $$ ${{ params.C }}");
    CHECK(scan.ok());
    REQUIRE(scan.refs.size() == 1);
    CHECK(scan.refs[0].name == "C");
  }

  TEST_CASE("render resolves every namespace") {
    CHECK(render("--C ${{ params.C }} --n ${{params.max-iter}}") == "--C 0.5 --n 200");
    CHECK(render("${{ run.id }}/${{ run.number }}/${{ step.id }}/${{ workflow.name }}") == "abc123/7/train/iris");
    CHECK(render("home=${{ env.HOME }}") == "home=/home/me");
    CHECK(render("no templates, $$ and $HOME stay") == "no templates, $$ and $HOME stay");
    CHECK(render("") == "");
  }

  TEST_CASE("render unescapes $${{") {
    CHECK(render("echo '$${{ params.C }}'") == "echo '${{ params.C }}'");
    CHECK(render("$$${{ params.C }}") == "$${{ params.C }}");
  }

  TEST_CASE("render errors") {
    CHECK(render_error("${{ env.NOPE }}") == "env.NOPE is not set");
    CHECK(render_error("${{ params.X }}") == "undefined parameter 'X'");
    CHECK(render_error("${{ run.nope }}") == "unknown field 'run.nope'");
    CHECK(render_error("${{ foo.bar }}") == "unknown namespace 'foo' in 'foo.bar'");
    CHECK(render_error("${{ params.C") == "unterminated '${{' (missing '}}')");
  }

  TEST_CASE("render without an env function treats env as unset") {
    TemplateContext ctx;
    auto out = render_template("${{ env.HOME }}", ctx);
    REQUIRE_FALSE(out.ok());
    CHECK(out.error() == "env.HOME is not set");
  }

  TEST_CASE("template_fields") {
    CHECK(template_fields("run") == std::vector<std::string_view>{"id", "number"});
    CHECK(template_fields("params").empty());
  }
}
