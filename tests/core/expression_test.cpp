#include "core/expression.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

using namespace kiln::core;

// Values print as "number 3", "string 'a'" in failure messages.
template <>
struct doctest::StringMaker<ExprValue> {
  static doctest::String convert(const ExprValue& value) {
    return (std::string(type_name(value)) + " " + to_display(value)).c_str();
  }
};

namespace {

using Vars = std::map<std::string, ExprValue>;

Expression parse(std::string_view text) {
  std::variant<Expression, ExprError> result = Expression::parse(text);
  if (const ExprError* error = std::get_if<ExprError>(&result)) {
    FAIL(text << ": " << error->message << " at " << error->offset);
  }
  return std::get<Expression>(std::move(result));
}

ExprError parse_error(std::string_view text, std::size_t first_column = 1) {
  std::variant<Expression, ExprError> result = Expression::parse(text, first_column);
  REQUIRE_MESSAGE(std::holds_alternative<ExprError>(result), text);
  return std::get<ExprError>(std::move(result));
}

/// References resolve from `vars` by canonical text; always() is true,
/// failure() false, first(x, ...) returns x, anything else is unknown.
Expression::Resolver resolver(const Vars& vars) {
  return [&vars](const ExprReference& reference) -> std::variant<ExprValue, std::string> {
    const auto found = vars.find(reference.text());
    if (found == vars.end()) {
      return "undefined '" + reference.text() + "'";
    }
    return found->second;
  };
}

std::variant<ExprValue, std::string> call_function(const ExprCall& call, const std::vector<ExprValue>& args) {
  if (call.name == "always") {
    return ExprValue(true);
  }
  if (call.name == "failure") {
    return ExprValue(false);
  }
  if (call.name == "first" && !args.empty()) {
    return args.front();
  }
  return "unknown function '" + call.name + "'";
}

std::variant<ExprValue, ExprError> run(std::string_view text, const Vars& vars, Expression::Seen* seen = nullptr) {
  return parse(text).evaluate(resolver(vars), call_function, seen);
}

ExprValue eval(std::string_view text, const Vars& vars = {}) {
  std::variant<ExprValue, ExprError> result = run(text, vars);
  if (const ExprError* error = std::get_if<ExprError>(&result)) {
    FAIL(text << ": " << error->message << " at " << error->offset);
  }
  return std::get<ExprValue>(std::move(result));
}

ExprError eval_error(std::string_view text, const Vars& vars = {}) {
  std::variant<ExprValue, ExprError> result = run(text, vars);
  REQUIRE_MESSAGE(std::holds_alternative<ExprError>(result), text);
  return std::get<ExprError>(std::move(result));
}

const ExprValue k_null;

} // namespace

TEST_SUITE("core::Expression") {
  TEST_CASE("literals") {
    CHECK(eval("3") == ExprValue(3));
    CHECK(eval("0.9") == ExprValue(0.9));
    CHECK(eval("1e-3") == ExprValue(0.001));
    CHECK(eval("2E+2") == ExprValue(200));
    CHECK(eval("true") == ExprValue(true));
    CHECK(eval("false") == ExprValue(false));
    CHECK(eval("null") == k_null);
    CHECK(eval("'single'") == ExprValue("single"));
    CHECK(eval("\"double\"") == ExprValue("double"));
    CHECK(eval(R"('it\'s' )") == ExprValue("it's"));
    CHECK(eval(R"("say \"hi\"")") == ExprValue("say \"hi\""));
    CHECK(eval(R"('a\\b\nc\td')") == ExprValue("a\\b\nc\td"));
    CHECK(eval(R"("it's")") == ExprValue("it's"));
    CHECK(eval("''") == ExprValue(""));
    CHECK(eval("  \n 42 \t ") == ExprValue(42));
  }

  TEST_CASE("values: to_display and type_name") {
    CHECK(to_display(ExprValue(0.1)) == "0.1");
    CHECK(to_display(ExprValue(3.0)) == "3");
    CHECK(to_display(ExprValue(1e21)) == "1e+21");
    CHECK(to_display(ExprValue(-0.5)) == "-0.5");
    CHECK(to_display(ExprValue(-0.0)) == "0");
    CHECK(to_display(ExprValue(123456789.0)) == "123456789");
    CHECK(to_display(ExprValue(0.1 + 0.2)) == "0.30000000000000004");
    CHECK(to_display(ExprValue(std::nan(""))) == "nan");
    CHECK(to_display(ExprValue(std::numeric_limits<double>::infinity())) == "inf");
    CHECK(to_display(ExprValue(-std::numeric_limits<double>::infinity())) == "-inf");
    CHECK(to_display(ExprValue()) == "null");
    CHECK(to_display(ExprValue(true)) == "true");
    CHECK(to_display(ExprValue(false)) == "false");
    CHECK(to_display(ExprValue("text")) == "'text'");
    CHECK(to_display(ExprValue("it's a\\b\n")) == R"('it\'s a\\b\n')");
    CHECK(type_name(ExprValue()) == "null");
    CHECK(type_name(ExprValue(false)) == "boolean");
    CHECK(type_name(ExprValue(1)) == "number");
    CHECK(type_name(ExprValue("")) == "string");
    // A displayed string reads back as the same value.
    const ExprValue tricky("a'b\\c\td\ne\"");
    CHECK(eval(to_display(tricky)) == tricky);
  }

  TEST_CASE("NaN and infinity can arise from arithmetic") {
    const ExprValue huge = eval("1e308 * 10");
    REQUIRE(huge.is_number());
    CHECK(std::isinf(huge.as_number()));
    const ExprValue nan = eval("1e308 * 10 - 1e308 * 10");
    REQUIRE(nan.is_number());
    CHECK(std::isnan(nan.as_number()));
    CHECK(to_display(nan) == "nan");
    // NaN is unordered: every comparison but != is false.
    CHECK(eval("x == x", {{"x", ExprValue(std::nan(""))}}) == ExprValue(false));
    CHECK(eval("x != x", {{"x", ExprValue(std::nan(""))}}) == ExprValue(true));
    CHECK(eval("x >= 0.9", {{"x", ExprValue(std::nan(""))}}) == ExprValue(false));
    CHECK(eval("x < 0.9", {{"x", ExprValue(std::nan(""))}}) == ExprValue(false));
    CHECK(std::isnan(eval("max(1, x)", {{"x", ExprValue(std::nan(""))}}).as_number()));
    CHECK(std::isnan(eval("min(x, 1)", {{"x", ExprValue(std::nan(""))}}).as_number()));
  }

  TEST_CASE("arithmetic operators, precedence and associativity") {
    CHECK(eval("1 + 2") == ExprValue(3));
    CHECK(eval("5 - 7") == ExprValue(-2));
    CHECK(eval("6 * 7") == ExprValue(42));
    CHECK(eval("7 / 2") == ExprValue(3.5));
    CHECK(eval("7 % 3") == ExprValue(1));
    CHECK(eval("-7 % 3") == ExprValue(-1));
    CHECK(eval("7.5 % 2") == ExprValue(1.5));
    CHECK(eval("1 + 2 * 3") == ExprValue(7));
    CHECK(eval("(1 + 2) * 3") == ExprValue(9));
    CHECK(eval("10 - 4 - 3") == ExprValue(3));
    CHECK(eval("10 - (4 - 3)") == ExprValue(9));
    CHECK(eval("100 / 10 / 5") == ExprValue(2));
    CHECK(eval("2 * 9 % 4") == ExprValue(2));
    CHECK(eval("2 + 9 % 4") == ExprValue(3));
    CHECK(eval("-2 * 3") == ExprValue(-6));
    CHECK(eval("- - 3") == ExprValue(3));
    CHECK(eval("2 - -3") == ExprValue(5));
    CHECK(eval("2--3") == ExprValue(5));
    CHECK(eval("-(1 + 2) * 2") == ExprValue(-6));
    CHECK(eval("1+2*3-4/2") == ExprValue(5));
    CHECK(eval("'ab' + 'cd' + ''") == ExprValue("abcd"));
  }

  TEST_CASE("arithmetic type errors and division by zero") {
    ExprError error = eval_error("1 / 0");
    CHECK(error.message == "division by zero");
    CHECK(error.offset == 2);
    CHECK(error.length == 1);
    error = eval_error("1 + 5 % (2 - 2)");
    CHECK(error.message == "division by zero");
    CHECK(error.offset == 6);
    error = eval_error("1 + 'a'");
    CHECK(error.message == "cannot apply '+' to number 1 and string 'a'");
    CHECK(error.offset == 2);
    error = eval_error("'a' - 'b'");
    CHECK(error.message == "cannot apply '-' to string 'a' and string 'b'");
    error = eval_error("true * 2");
    CHECK(error.message == "cannot apply '*' to boolean true and number 2");
    CHECK(error.offset == 5);
    error = eval_error("1 + -'x'");
    CHECK(error.message == "cannot apply '-' to string 'x'");
    CHECK(error.offset == 4);
    // Numeric strings are numbers only in comparisons.
    error = eval_error("'42' + 1");
    CHECK(error.message == "cannot apply '+' to string '42' and number 1");
    // Long strings are cut short in messages.
    error = eval_error("x * 2", {{"x", ExprValue(std::string(100, 'y'))}});
    CHECK(error.message == "cannot apply '*' to string '" + std::string(60, 'y') + "'... and number 2");
  }

  TEST_CASE("null propagates through arithmetic and comparisons") {
    CHECK(eval("null + 1") == k_null);
    CHECK(eval("1 - null") == k_null);
    CHECK(eval("null * 'a'") == k_null);
    CHECK(eval("null / 0") == k_null);
    CHECK(eval("-null") == k_null);
    CHECK(eval("null + 1 + 2") == k_null);
    CHECK(eval("null < 1") == k_null);
    CHECK(eval("1 == null") == k_null);
    CHECK(eval("null == null") == k_null);
    CHECK(eval("'a' != null") == k_null);
    CHECK(eval("previous.accuracy <= accuracy", {{"previous.accuracy", k_null}, {"accuracy", ExprValue(0.9)}}) ==
          k_null);
  }

  TEST_CASE("comparisons of numbers, strings and booleans") {
    CHECK(eval("1 < 2") == ExprValue(true));
    CHECK(eval("2 < 2") == ExprValue(false));
    CHECK(eval("2 <= 2") == ExprValue(true));
    CHECK(eval("3 <= 2") == ExprValue(false));
    CHECK(eval("3 > 2") == ExprValue(true));
    CHECK(eval("2 > 2") == ExprValue(false));
    CHECK(eval("2 >= 2") == ExprValue(true));
    CHECK(eval("1 >= 2") == ExprValue(false));
    CHECK(eval("2 == 2.0") == ExprValue(true));
    CHECK(eval("2 != 2") == ExprValue(false));
    CHECK(eval("0.1 + 0.2 == 0.3") == ExprValue(false));
    CHECK(eval("1 + 1 == 2") == ExprValue(true));
    CHECK(eval("'abc' < 'abd'") == ExprValue(true));
    CHECK(eval("'b' > 'abc'") == ExprValue(true));
    CHECK(eval("'abc' == 'abc'") == ExprValue(true));
    CHECK(eval("'abc' != 'ABC'") == ExprValue(true));
    CHECK(eval("'10' < '9'") == ExprValue(true));
    CHECK(eval("true == true") == ExprValue(true));
    CHECK(eval("true != false") == ExprValue(true));
    CHECK(eval("false == true") == ExprValue(false));
  }

  TEST_CASE("a string that is a number compares with a number numerically") {
    CHECK(eval("'10' < 9") == ExprValue(false));
    CHECK(eval("9 < '10'") == ExprValue(true));
    CHECK(eval("'42' == 42") == ExprValue(true));
    CHECK(eval("42 != '42'") == ExprValue(false));
    CHECK(eval("'4.2e1' == 42") == ExprValue(true));
    CHECK(eval("'-0.5' < 0") == ExprValue(true));
    CHECK(eval("'+3' == 3") == ExprValue(true));
    CHECK(eval("steps.count.outputs.n >= 3", {{"steps.count.outputs.n", ExprValue(" 42\n")}}) == ExprValue(true));

    ExprError error = eval_error("'abc' < 3");
    CHECK(error.message == "cannot compare string 'abc' with number 3");
    CHECK(error.offset == 6);
    CHECK(error.length == 1);
    error = eval_error("3 == 'abc'");
    CHECK(error.message == "cannot compare number 3 with string 'abc'");
    CHECK(error.offset == 2);
    CHECK(error.length == 2);
    CHECK(eval_error("'42x' == 42").message == "cannot compare string '42x' with number 42");
    CHECK(eval_error("'' == 0").message == "cannot compare string '' with number 0");
    CHECK(eval_error("'nan' != 0").message == "cannot compare string 'nan' with number 0");
    CHECK(eval_error("'inf' > 0").message == "cannot compare string 'inf' with number 0");
    CHECK(eval_error("'0x10' == 16").message == "cannot compare string '0x10' with number 16");
  }

  TEST_CASE("comparisons of mismatched types are errors naming both") {
    ExprError error = eval_error("true == 1");
    CHECK(error.message == "cannot compare boolean true with number 1");
    CHECK(error.offset == 5);
    CHECK(error.length == 2);
    CHECK(eval_error("'true' != true").message == "cannot compare string 'true' with boolean true");
    CHECK(eval_error("false < 1").message == "cannot compare boolean false with number 1");
    error = eval_error("true < false");
    CHECK(error.message == "'<' needs numbers or strings, got boolean true and boolean false");
    CHECK(error.offset == 5);
    CHECK(eval_error("true >= true").message == "'>=' needs numbers or strings, got boolean true and boolean true");
  }

  TEST_CASE("and, or and not use three-valued logic") {
    struct Row {
      ExprValue a;
      ExprValue b;
      ExprValue conjunction;
      ExprValue disjunction;
    };
    const ExprValue t(true);
    const ExprValue f(false);
    const std::vector<Row> table{
        {t, t, t, t},           {t, f, f, t},           {t, k_null, k_null, t},
        {f, t, f, t},           {f, f, f, f},           {f, k_null, f, k_null},
        {k_null, t, k_null, t}, {k_null, f, f, k_null}, {k_null, k_null, k_null, k_null},
    };
    for (const Row& row : table) {
      const Vars vars{{"a", row.a}, {"b", row.b}};
      CAPTURE(row.a);
      CAPTURE(row.b);
      CHECK(eval("a and b", vars) == row.conjunction);
      CHECK(eval("a && b", vars) == row.conjunction);
      CHECK(eval("a or b", vars) == row.disjunction);
      CHECK(eval("a || b", vars) == row.disjunction);
    }
    CHECK(eval("not true") == f);
    CHECK(eval("not false") == t);
    CHECK(eval("not null") == k_null);
    CHECK(eval("!true") == f);
    CHECK(eval("!!true") == t);
    CHECK(eval("not not false") == f);
    CHECK(eval("null and true and false") == f);
    CHECK(eval("null or false or true") == t);
    CHECK(eval("true and true and null") == k_null);
  }

  TEST_CASE("logical precedence: or < and < not < comparisons") {
    // If `or` bound tighter: (true or false) and false = false.
    CHECK(eval("true or false and false") == ExprValue(true));
    CHECK(eval("false and true or true") == ExprValue(true));
    CHECK(eval("true || false && false") == ExprValue(true));
    // If `not` covered the `and`: not (false and false) = true.
    CHECK(eval("not false and false") == ExprValue(false));
    CHECK(eval("not (false and false)") == ExprValue(true));
    // `not` and `!` take the whole comparison: !(1 == 2), not (!1) == 2.
    CHECK(eval("not 1 == 2") == ExprValue(true));
    CHECK(eval("!1 == 2") == ExprValue(true));
    CHECK(eval("1 < 2 and 2 < 3") == ExprValue(true));
    CHECK(eval("1 + 1 == 2 and 'a' + 'b' == 'ab'") == ExprValue(true));
    CHECK(eval("(true or false) and false") == ExprValue(false));
    CHECK(eval("a >= b and deploy", {{"a", ExprValue(0.95)}, {"b", ExprValue(0.9)}, {"deploy", ExprValue(true)}}) ==
          ExprValue(true));
  }

  TEST_CASE("and and or short-circuit") {
    // `boom` fails if it is ever resolved.
    const Vars vars{{"t", ExprValue(true)}, {"f", ExprValue(false)}, {"n", k_null}};
    CHECK(eval("false and boom", vars) == ExprValue(false));
    CHECK(eval("f and boom and boom", vars) == ExprValue(false));
    CHECK(eval("true or boom", vars) == ExprValue(true));
    CHECK(eval("n or t or boom", vars) == ExprValue(true));
    CHECK(eval("f and 1 / 0 == 1", vars) == ExprValue(false));
    // Only the decisive value stops: null and true go on.
    ExprError error = eval_error("n and boom", vars);
    CHECK(error.message == "undefined 'boom'");
    CHECK(error.offset == 6);
    CHECK(error.length == 4);
    CHECK(eval_error("t and boom", vars).message == "undefined 'boom'");
    CHECK(eval_error("f or boom", vars).message == "undefined 'boom'");
    CHECK(eval_error("n or boom", vars).message == "undefined 'boom'");
    // A call on the right is not made either.
    int calls = 0;
    const Expression::CallResolver counting = [&calls](const ExprCall&, const std::vector<ExprValue>&) {
      ++calls;
      return std::variant<ExprValue, std::string>(ExprValue(true));
    };
    const Expression expr = parse("f and always()");
    CHECK(std::get<ExprValue>(expr.evaluate(resolver(vars), counting)) == ExprValue(false));
    CHECK(calls == 0);
    CHECK(std::get<ExprValue>(parse("t and always()").evaluate(resolver(vars), counting)) == ExprValue(true));
    CHECK(calls == 1);
  }

  TEST_CASE("and, or and not need booleans") {
    ExprError error = eval_error("3 and true");
    CHECK(error.message == "expected a boolean, got number 3");
    CHECK(error.offset == 0);
    CHECK(error.length == 1);
    error = eval_error("true and 'yes'");
    CHECK(error.message == "expected a boolean, got string 'yes'");
    CHECK(error.offset == 9);
    CHECK(error.length == 5);
    error = eval_error("false or (1 + 2)");
    CHECK(error.message == "expected a boolean, got number 3");
    CHECK(error.offset == 9);
    CHECK(error.length == 7);
    error = eval_error("not 'abc'");
    CHECK(error.message == "expected a boolean, got string 'abc'");
    CHECK(error.offset == 4);
    CHECK(eval_error("!0").message == "expected a boolean, got number 0");
    error = eval_error("true and x", {{"x", ExprValue("true")}});
    CHECK(error.message == "expected a boolean, got string 'true'");
    CHECK(error.offset == 9);
  }

  TEST_CASE("references: dotted names, hyphens and indexes") {
    Expression expr = parse("steps.evaluate.metrics.accuracy >= params.min_accuracy");
    REQUIRE(expr.references().size() == 2);
    CHECK(expr.references()[0].path == std::vector<std::string>{"steps", "evaluate", "metrics", "accuracy"});
    CHECK(expr.references()[0].offset == 0);
    CHECK(expr.references()[0].length == 31);
    CHECK(expr.references()[1].path == std::vector<std::string>{"params", "min_accuracy"});
    CHECK(expr.references()[1].offset == 35);
    CHECK(expr.references()[1].length == 19);

    expr = parse("steps.pre-process.status == 'succeeded'");
    REQUIRE(expr.references().size() == 1);
    CHECK(expr.references()[0].path == std::vector<std::string>{"steps", "pre-process", "status"});
    CHECK(expr.references()[0].text() == "steps.pre-process.status");

    expr = parse("steps.a-b-c.x_1-2");
    REQUIRE(expr.references().size() == 1);
    CHECK(expr.references()[0].path == std::vector<std::string>{"steps", "a-b-c", "x_1-2"});

    // '-' after the first name, or with a space on either side, is minus.
    CHECK(eval("a-b", {{"a", ExprValue(5)}, {"b", ExprValue(3)}}) == ExprValue(2));
    CHECK(eval("m.x - 1", {{"m.x", ExprValue(5)}}) == ExprValue(4));
    CHECK(eval("m.x -1", {{"m.x", ExprValue(5)}}) == ExprValue(4));
    CHECK(eval("m.x- 1", {{"m.x", ExprValue(5)}}) == ExprValue(4));
    CHECK(eval("m.x-1", {{"m.x-1", ExprValue(7)}}) == ExprValue(7));
    CHECK(eval("m.x--1", {{"m.x", ExprValue(5)}}) == ExprValue(6));
    CHECK(eval("m[\"x\"]-1", {{"m.x", ExprValue(5)}}) == ExprValue(4));
    expr = parse("a-b");
    REQUIRE(expr.references().size() == 2);
    CHECK(expr.references()[1].offset == 2);

    expr = parse(R"(steps.train.metrics["val/loss"] < 0.5)");
    REQUIRE(expr.references().size() == 1);
    CHECK(expr.references()[0].path == std::vector<std::string>{"steps", "train", "metrics", "val/loss"});
    CHECK(expr.references()[0].text() == R"(steps.train.metrics["val/loss"])");
    CHECK(expr.references()[0].length == 31);

    expr = parse(R"(steps["train[C=0.1]"].outputs.model)");
    REQUIRE(expr.references().size() == 1);
    CHECK(expr.references()[0].path == std::vector<std::string>{"steps", "train[C=0.1]", "outputs", "model"});
    CHECK(expr.references()[0].text() == R"(steps["train[C=0.1]"].outputs.model)");

    // Canonical text: a name that can be dotted is, others are quoted.
    expr = parse(R"(steps['train'][ "a b" ]["x-"]["1a"]["-x"]["q\"\\"]["pre-process"].and)");
    REQUIRE(expr.references().size() == 1);
    CHECK(expr.references()[0].path ==
          std::vector<std::string>{"steps", "train", "a b", "x-", "1a", "-x", "q\"\\", "pre-process", "and"});
    CHECK(expr.references()[0].text() == R"(steps.train["a b"]["x-"]["1a"]["-x"]["q\"\\"].pre-process.and)");

    expr = parse("matrix.C == 0.1 and _private.x1");
    REQUIRE(expr.references().size() == 2);
    CHECK(expr.references()[0].text() == "matrix.C");
    CHECK(expr.references()[1].text() == "_private.x1");
    // Keywords are case-sensitive: only lower case is reserved.
    CHECK(parse("True.x").references().at(0).text() == "True.x");
  }

  TEST_CASE("references() and calls() list every occurrence in text order") {
    const Expression expr =
        parse("always() or steps.a.status == 'failed' and min(x, y) > 0 and failure(steps.a.status, first(1))");
    REQUIRE(expr.references().size() == 4);
    CHECK(expr.references()[0].text() == "steps.a.status");
    CHECK(expr.references()[0].offset == 12);
    CHECK(expr.references()[1].text() == "x");
    CHECK(expr.references()[2].text() == "y");
    CHECK(expr.references()[3].text() == "steps.a.status");
    CHECK(expr.references()[3].offset == 69);
    REQUIRE(expr.calls().size() == 3);
    CHECK(expr.calls()[0].name == "always");
    CHECK(expr.calls()[0].offset == 0);
    CHECK(expr.calls()[0].length == 6);
    CHECK(expr.calls()[0].arity == 0);
    CHECK(expr.calls()[1].name == "failure");
    CHECK(expr.calls()[1].offset == 61);
    CHECK(expr.calls()[1].length == 7);
    CHECK(expr.calls()[1].arity == 2);
    CHECK(expr.calls()[2].name == "first");
    CHECK(expr.calls()[2].arity == 1);
  }

  TEST_CASE("calls: built-ins and the caller's functions") {
    CHECK(eval("min(3, 1, 2)") == ExprValue(1));
    CHECK(eval("max(3, 1, 2)") == ExprValue(3));
    CHECK(eval("max(-1, -2)") == ExprValue(-1));
    CHECK(eval("abs(-2.5)") == ExprValue(2.5));
    CHECK(eval("abs(2)") == ExprValue(2));
    CHECK(eval("abs(a - b) < 0.01", {{"a", ExprValue(0.905)}, {"b", ExprValue(0.9)}}) == ExprValue(true));
    CHECK(eval("max(1, null)") == k_null);
    CHECK(eval("abs(null)") == k_null);
    CHECK(eval("min(max(1, 2), 3) + abs(-1)") == ExprValue(3));
    CHECK(eval("always()") == ExprValue(true));
    CHECK(eval("always ( )") == ExprValue(true));
    CHECK(eval("failure() or always()") == ExprValue(true));
    CHECK(eval("first(1 + 1, 'x') * 2") == ExprValue(4));
    CHECK(eval("not failure()") == ExprValue(true));

    ExprError error = eval_error("min(1, 'a')");
    CHECK(error.message == "min() expects numbers, got string 'a'");
    CHECK(error.offset == 7);
    CHECK(error.length == 3);
    CHECK(eval_error("abs(true)").message == "abs() expects numbers, got boolean true");

    error = eval_error("1 < 2 and alwys()");
    CHECK(error.message == "unknown function 'alwys'");
    CHECK(error.offset == 10);
    CHECK(error.length == 5);
    // Without a call resolver every such call is unknown.
    const std::variant<ExprValue, ExprError> result = parse("true and always()").evaluate(resolver({}), nullptr);
    REQUIRE(std::holds_alternative<ExprError>(result));
    CHECK(std::get<ExprError>(result).message == "unknown function 'always'");
    CHECK(std::get<ExprError>(result).offset == 9);
    // An argument's error comes before the call.
    CHECK(eval_error("alwys(1 / 0)").message == "division by zero");
    // The built-ins need no resolver.
    CHECK(std::get<ExprValue>(parse("max(1, 2)").evaluate(nullptr, nullptr)) == ExprValue(2));
  }

  TEST_CASE("resolver errors are placed at the reference") {
    ExprError error = eval_error("1 + params.missing * 2");
    CHECK(error.message == "undefined 'params.missing'");
    CHECK(error.offset == 4);
    CHECK(error.length == 14);
    const std::variant<ExprValue, ExprError> result = parse("  a.b").evaluate(nullptr, nullptr);
    REQUIRE(std::holds_alternative<ExprError>(result));
    CHECK(std::get<ExprError>(result).message == "cannot resolve 'a.b' here");
    CHECK(std::get<ExprError>(result).offset == 2);
    CHECK(std::get<ExprError>(result).length == 3);
    // A parenthesised reference: the mark is on the reference only.
    CHECK(eval_error("(nope) > 1").offset == 1);
  }

  TEST_CASE("seen records each evaluated reference once, in evaluation order") {
    const Vars vars{{"accuracy", ExprValue(0.87)},
                    {"params.min_accuracy", ExprValue(0.9)},
                    {"params.deploy", ExprValue(true)},
                    {"steps.train.metrics[\"val/loss\"]", ExprValue(0.2)}};
    Expression::Seen seen;
    std::variant<ExprValue, ExprError> result =
        run("accuracy >= params.min_accuracy or (accuracy > 0.5 and params.deploy)", vars, &seen);
    CHECK(std::get<ExprValue>(result) == ExprValue(true));
    REQUIRE(seen.size() == 3);
    CHECK(seen[0].first == "accuracy");
    CHECK(seen[0].second == ExprValue(0.87));
    CHECK(seen[1].first == "params.min_accuracy");
    CHECK(seen[1].second == ExprValue(0.9));
    CHECK(seen[2].first == "params.deploy");

    // Short-circuited references are not seen; index names are canonical.
    seen.clear();
    result = run("params.min_accuracy > 1 and accuracy > 0 or steps.train.metrics['val/loss'] < 1", vars, &seen);
    CHECK(std::get<ExprValue>(result) == ExprValue(true));
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].first == "params.min_accuracy");
    CHECK(seen[1].first == "steps.train.metrics[\"val/loss\"]");
    CHECK(seen[1].second == ExprValue(0.2));

    // What was seen before an error stays.
    seen.clear();
    result = run("accuracy > 0 and nope", vars, &seen);
    CHECK(std::holds_alternative<ExprError>(result));
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].first == "accuracy");
  }

  TEST_CASE("syntax errors: message and position") {
    struct Case {
      std::string text;
      std::size_t offset;
      std::size_t length;
      std::string message;
    };
    const std::vector<Case> cases{
        {"", 0, 1, "empty expression"},
        {"   ", 3, 1, "empty expression"},
        {"a and", 5, 1, "expected an operand after 'and'"},
        {"a and or b", 6, 2, "expected an operand after 'and', found 'or'"},
        {"a +", 3, 1, "expected an operand after '+'"},
        {"not", 3, 1, "expected an operand after 'not'"},
        {"and b", 0, 3, "expected an operand before 'and'"},
        {"== 1", 0, 2, "expected an operand before '=='"},
        {"(* 2)", 1, 1, "expected an operand before '*'"},
        {"min(1, , 2)", 7, 1, "expected an operand after ',', found ','"},
        {"'abc", 0, 1, "unterminated string"},
        {"x == \"abc", 5, 1, "unterminated string"},
        {"'a\\'", 0, 1, "unterminated string"},
        {"'a\\qb'", 2, 2, "unknown escape '\\q' in string; write '\\\\' for a backslash"},
        {")", 0, 1, "unexpected ')'"},
        {"a)", 1, 1, "unexpected ')'"},
        {"(a or b", 7, 1, "expected ')' to close '(' at column 1"},
        {"x and (a or (b)", 15, 1, "expected ')' to close '(' at column 7"},
        {"(a b)", 3, 1, "expected an operator or ')' before 'b'"},
        {"f(a b)", 4, 1, "expected ',' or ')' before 'b'"},
        {"f(a,", 4, 1, "expected an operand after ','"},
        {"f(a", 3, 1, "expected ')' to close '(' at column 2"},
        {"()", 1, 1, "expected an operand after '(', found ')'"},
        {"a b", 2, 1, "expected an operator before 'b'"},
        {"a 'b'", 2, 3, "expected an operator before a string"},
        {"a < b < c", 6, 1, "comparisons cannot be chained; use 'and': a < b and b < c"},
        {"x + 1 == y >= (z)", 11, 2, "comparisons cannot be chained; use 'and': x + 1 == y and y >= (z)"},
        {"a < b < ", 6, 1, "comparisons cannot be chained; use 'and'"},
        {"a = 1", 2, 1, "'=' is not an operator; did you mean '=='?"},
        {"a <> 1", 2, 2, "'<>' is not an operator; did you mean '!='?"},
        {"a & b", 2, 1, "'&' is not an operator; did you mean '&&' or 'and'?"},
        {"a | b", 2, 1, "'|' is not an operator; did you mean '||' or 'or'?"},
        {"a # b", 2, 1, "unexpected character '#'"},
        {"a \xC3\xA9", 2, 2, "unexpected character '\xC3\xA9'"},
        {"steps.", 6, 1, "expected a name after '.'"},
        {"steps.+1", 6, 1, "expected a name after '.'"},
        {"steps.1x", 6, 1, "a name after '.' cannot start with a digit; write [\"1x\"]"},
        {"m.accuracy-0.1", 13, 1,
         "expected a name after '.'; a '-' joined to names is part of the name ('accuracy-0'): put spaces around "
         "'-' to subtract"},
        {"steps .x", 6, 1, "unexpected '.'; a reference is written without spaces, e.g. steps.train.status"},
        {".5", 0, 1, "unexpected '.'"},
        {"a[1]", 2, 1, "expected a quoted name after '[', e.g. metrics[\"val/loss\"]"},
        {"a['x'", 5, 1, "expected ']' after the quoted name"},
        {"a['x' b]", 6, 1, "expected ']' after the quoted name"},
        {"a['x", 2, 1, "unterminated string"},
        {"true.x", 0, 4, "'true' is a reserved word and cannot start a reference"},
        {"null['x']", 0, 4, "'null' is a reserved word and cannot start a reference"},
        {"1.", 0, 2, "invalid number '1.'"},
        {"1.x", 0, 3, "invalid number '1.x'"},
        {"3abc + 1", 0, 4, "invalid number '3abc'"},
        {"1e", 0, 2, "invalid number '1e'"},
        {"1e+", 0, 3, "invalid number '1e+'"},
        {"1.2.3", 0, 5, "invalid number '1.2.3'"},
        {"1e999", 0, 5, "number out of range '1e999'"},
        {"steps.a.status()", 0, 14, "only a plain name can be called: 'steps.a.status' is a reference"},
        {"a['b']()", 0, 6, "only a plain name can be called: 'a['b']' is a reference"},
        {"abs()", 0, 3, "abs() takes 1 argument, got 0"},
        {"abs(1, 2)", 0, 3, "abs() takes 1 argument, got 2"},
        {"min(1)", 0, 3, "min() takes at least 2 arguments, got 1"},
        {"max()", 0, 3, "max() takes at least 2 arguments, got 0"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.text);
      const ExprError error = parse_error(c.text);
      CHECK(error.message == c.message);
      CHECK(error.offset == c.offset);
      CHECK(error.length == c.length);
    }
  }

  TEST_CASE("columns in messages count from first_column and from line starts") {
    CHECK(parse_error("(a or b", 11).message == "expected ')' to close '(' at column 11");
    CHECK(parse_error("x and (a", 11).message == "expected ')' to close '(' at column 17");
    CHECK(parse_error("x and\n  (a", 11).message == "expected ')' to close '(' at column 3");
    // Characters, not bytes.
    CHECK(parse_error("'\xC3\xA9' == (a", 1).message == "expected ')' to close '(' at column 8");
  }

  TEST_CASE("nesting is limited") {
    const int limit = Expression::k_max_nesting;
    const std::string deep_ok = std::string(limit, '(') + "1" + std::string(limit, ')');
    CHECK(eval(deep_ok) == ExprValue(1));
    const std::string too_deep = std::string(limit + 1, '(') + "1" + std::string(limit + 1, ')');
    ExprError error = parse_error(too_deep);
    CHECK(error.message == "expression nested too deeply");
    CHECK(error.offset == static_cast<std::size_t>(limit));

    std::string nots;
    for (int i = 0; i < 5000; ++i) {
      nots += "not ";
    }
    CHECK(parse_error(nots + "true").message == "expression nested too deeply");
    CHECK(parse_error(std::string(5000, '-') + "1").message == "expression nested too deeply");
    std::string calls;
    for (int i = 0; i < 5000; ++i) {
      calls += "abs(";
    }
    CHECK(parse_error(calls + "1" + std::string(5000, ')')).message == "expression nested too deeply");
    // Long flat expressions are not nesting.
    std::string sum = "0";
    std::string conjunction = "true";
    for (int i = 0; i < 20000; ++i) {
      sum += " + 1";
      conjunction += " and true";
    }
    CHECK(eval(sum) == ExprValue(20000));
    CHECK(eval(conjunction) == ExprValue(true));
  }

  TEST_CASE("expressions copy and default-construct") {
    const Expression empty;
    CHECK(empty.empty());
    CHECK(empty.text().empty());
    CHECK(empty.references().empty());
    CHECK(empty.calls().empty());
    CHECK(std::get<ExprValue>(empty.evaluate(nullptr, nullptr)) == k_null);

    Expression copy;
    {
      const Expression original = parse(" x > 1 ");
      copy = original;
    }
    CHECK_FALSE(copy.empty());
    CHECK(copy.text() == " x > 1 ");
    REQUIRE(copy.references().size() == 1);
    CHECK(copy.references()[0].offset == 1);
    CHECK(std::get<ExprValue>(copy.evaluate(resolver({{"x", ExprValue(2)}}), nullptr)) == ExprValue(true));
  }
}
