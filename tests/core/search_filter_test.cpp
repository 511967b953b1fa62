#include "core/search_filter.hpp"
#include "core/tracker_store.hpp"
#include "tests/support.hpp"

#include "core/sqlite.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <sstream>

using namespace kiln::core;

// Run lists print as {1, 2} in failure messages.
template <>
struct doctest::StringMaker<std::vector<std::int64_t>> {
  static doctest::String convert(const std::vector<std::int64_t>& runs) {
    std::string text = "{";
    for (std::size_t i = 0; i < runs.size(); ++i) {
      text += (i > 0 ? ", " : "") + std::to_string(runs[i]);
    }
    return (text + "}").c_str();
  }
};

namespace {

FilterNode parse(std::string_view text) {
  std::variant<FilterNode, FilterError> result = parse_search_filter(text);
  if (const FilterError* error = std::get_if<FilterError>(&result)) {
    FAIL(text << ": " << error->message << "\n" << error->excerpt);
  }
  return std::get<FilterNode>(std::move(result));
}

FilterError parse_error(std::string_view text) {
  std::variant<FilterNode, FilterError> result = parse_search_filter(text);
  REQUIRE_MESSAGE(std::holds_alternative<FilterError>(result), text);
  return std::get<FilterError>(std::move(result));
}

std::vector<OrderTerm> parse_order(std::string_view text) {
  std::variant<std::vector<OrderTerm>, FilterError> result = parse_order_by(text);
  if (const FilterError* error = std::get_if<FilterError>(&result)) {
    FAIL(text << ": " << error->message << "\n" << error->excerpt);
  }
  return std::get<std::vector<OrderTerm>>(std::move(result));
}

/// A compact rendering of a parse tree: and(...), or(...), entity:name op values.
std::string show(const FilterNode& node) {
  if (node.kind != FilterNode::Kind::comparison) {
    std::string text = node.kind == FilterNode::Kind::all_of ? "and(" : "or(";
    for (std::size_t i = 0; i < node.children.size(); ++i) {
      text += (i > 0 ? ", " : "") + show(node.children[i]);
    }
    return text + ")";
  }
  static const char* const k_entities[] = {"metric", "param", "tag", "attribute"};
  static const char* const k_ops[] = {
      "=", "!=", "<", "<=", ">", ">=", "like", "ilike", "not like", "not ilike", "in", "not in"};
  std::string text = std::string(k_entities[static_cast<int>(node.entity)]) + ":" + node.name + " " +
                     k_ops[static_cast<int>(node.op)] + " ";
  for (std::size_t i = 0; i < node.values.size(); ++i) {
    text += i > 0 ? "," : "";
    const FilterValue& value = node.values[i];
    if (const auto* integer = std::get_if<std::int64_t>(&value)) {
      text += "i" + std::to_string(*integer);
    } else if (const auto* real = std::get_if<double>(&value)) {
      std::ostringstream out;
      out << "d" << *real;
      text += out.str();
    } else {
      text += "'" + std::get<std::string>(value) + "'";
    }
  }
  return text;
}

// --- A real tracker store's database --------------------------------------
// Opened through TrackerStore so the schema is exactly what the migrations
// make, then filled with raw rows for the cases below.

// Run 1: alice's successful lr run; 2: bob's failed svm run whose accuracy
// was logged by a step; 3: still running, NaN accuracy (stored as NULL);
// 4: carol's 'Lr' run; 5: nothing logged at all.
constexpr std::string_view k_data = R"(
INSERT INTO workflow_sources (sha256, content) VALUES ('h', 'name: x');
INSERT INTO runs (number, id, workflow_name, workflow_file, workflow_hash, workflow_source, status, started_ms,
                  ended_ms, user, git_branch) VALUES
  (1, 'a1', 'train', 'w.yaml', 'h', 'h', 'succeeded', 1000, 5000, 'alice', 'main'),
  (2, 'b2', 'train', 'w.yaml', 'h', 'h', 'failed', 2000, 2500, 'bob', 'dev'),
  (3, 'c3', 'eval', 'w.yaml', 'h', 'h', 'running', 3000, NULL, 'alice', 'main'),
  (4, 'd4', 'train', 'w.yaml', 'h', 'h', 'succeeded', 4000, 10000, 'carol', 'main'),
  (5, 'e5', 'deploy', 'w.yaml', 'h', 'h', 'cancelled', 4000, 4500, 'dave', 'main');
INSERT INTO params (run, step, key, value) VALUES
  (1, '', 'model', 'lr'), (1, '', 'C', '1'), (1, '', 'lr', '0.01'), (1, 'fit', 'epochs', '10'),
  (2, '', 'model', 'svm'), (2, '', 'C', '1.0'), (2, '', 'lr', '1e-3'),
  (3, '', 'model', 'lr'), (3, '', 'C', 'abc'), (3, '', 'lr', ''),
  (4, '', 'model', 'Lr'), (4, '', 'C', '10'), (4, '', 'lr', '1abc'), (4, 'fit', 'epochs', '3');
INSERT INTO tags (run, step, key, value) VALUES
  (1, '', 'team', 'ml-core'), (2, '', 'team', 'ML-infra'), (3, '', 'team', 'data'),
  (3, 'eval', 'my key', 'x');
INSERT INTO metric_series (run, step, key, last_value, last_ms) VALUES
  (1, '', 'accuracy', 0.95, 100), (1, '', 'loss', 0.2, 100),
  (2, 'eval', 'accuracy', 0.8, 100), (2, 'train', 'accuracy', 0.5, 50),
  (3, '', 'accuracy', NULL, 100), (3, '', 'loss', 0.5, 100),
  (4, '', 'accuracy', 0.9, 100);
)";

struct TrackerDatabase {
  kiln::test::TempDir dir;
  std::optional<sqlite::Database> database;
};

std::unique_ptr<TrackerDatabase> tracker_database() {
  auto made = std::make_unique<TrackerDatabase>();
  {
    Expected<std::unique_ptr<TrackerStore>> store = TrackerStore::open(made->dir.path());
    REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error()));
  }
  Expected<sqlite::Database> database = sqlite::Database::open(made->dir.path() / "kiln.db");
  REQUIRE(database.ok());
  made->database.emplace(std::move(database).value());
  // As the store's own connection does.
  Expected<void> like = made->database->exec("PRAGMA case_sensitive_like = ON");
  REQUIRE(like.ok());
  Expected<void> data = made->database->exec(k_data);
  REQUIRE_MESSAGE(data.ok(), data.error());
  return made;
}

/// The run numbers `filter` selects, in `order` (the default: newest first).
std::vector<std::int64_t> select_runs(sqlite::Database& database, std::string_view filter,
                                      std::string_view order = "") {
  SqlFragment where = filter_to_sql(parse(filter));
  SqlFragment order_by = order_to_sql(parse_order(order));
  std::string sql = "SELECT r.number FROM runs r WHERE " + where.sql + " ORDER BY " + order_by.sql;
  INFO(sql);
  Expected<sqlite::Statement> statement = database.prepare(sql);
  REQUIRE_MESSAGE(statement.ok(), statement.error());
  int index = 0;
  for (const SqlFragment* fragment : {&where, &order_by}) {
    for (const FilterValue& arg : fragment->args) {
      ++index;
      std::visit([&](const auto& value) { statement->bind(index, value); }, arg);
    }
  }
  std::vector<std::int64_t> runs;
  Expected<void> rows =
      statement->for_each_row([&](sqlite::StatementRef& row) { runs.push_back(row.column_int64(0)); });
  REQUIRE_MESSAGE(rows.ok(), rows.error());
  return runs;
}

/// The run numbers `filter` selects, ascending.
std::vector<std::int64_t> matching(sqlite::Database& database, std::string_view filter) {
  std::vector<std::int64_t> runs = select_runs(database, filter);
  std::sort(runs.begin(), runs.end());
  return runs;
}

using Runs = std::vector<std::int64_t>;

} // namespace

TEST_SUITE("core::SearchFilter") {

  TEST_CASE("comparisons of each entity") {
    CHECK(show(parse("metrics.accuracy > 0.9")) == "metric:accuracy > d0.9");
    CHECK(show(parse("params.model = 'lr'")) == "param:model = 'lr'");
    CHECK(show(parse("tags.team LIKE 'ml%'")) == "tag:team like 'ml%'");
    CHECK(show(parse("attributes.status = 'failed'")) == "attribute:status = 'failed'");
    CHECK(show(parse("metrics.loss <= -1e-3")) == "metric:loss <= d-0.001");
    CHECK(show(parse("metrics.step >= 10")) == "metric:step >= i10");
    CHECK(show(parse("params.C != 1")) == "param:C != i1");
    CHECK(show(parse("params.C <> \"x\"")) == "param:C != 'x'");
    CHECK(show(parse("tags.note = 'it''s'")) == "tag:note = 'it's'");
    CHECK(show(parse("params.model NOT LIKE 'l%'")) == "param:model not like 'l%'");
    CHECK(show(parse("params.model not ilike 'L%'")) == "param:model not ilike 'L%'");
    CHECK(show(parse("params.model IN ('lr', 'svm')")) == "param:model in 'lr','svm'");
    CHECK(show(parse("params.C not in (1, 2.5)")) == "param:C not in i1,d2.5");
    CHECK(show(parse("attributes.number IN (1,2,3)")) == "attribute:number in i1,i2,i3");
  }

  TEST_CASE("keys: plain, dotted, backquoted and double-quoted") {
    CHECK(show(parse("metrics.val.loss < 1")) == "metric:val.loss < i1");
    CHECK(show(parse("metrics.f1-score>0.5")) == "metric:f1-score > d0.5");
    CHECK(show(parse("metrics.`my key` < 1")) == "metric:my key < i1");
    CHECK(show(parse("tags.\"mlflow.source\" = 'x'")) == "tag:mlflow.source = 'x'");
    CHECK(show(parse("tags.`a``b` = 'x'")) == "tag:a`b = 'x'");
    CHECK(show(parse("metric.a = 1 and param.b = 'x' and tag.c = 'y'")) ==
          "and(metric:a = i1, param:b = 'x', tag:c = 'y')");
  }

  TEST_CASE("attribute aliases resolve to canonical names") {
    CHECK(show(parse("attributes.run_id = 'x'")) == "attribute:id = 'x'");
    CHECK(show(parse("attributes.run_name = 'train'")) == "attribute:workflow = 'train'");
    CHECK(show(parse("attr.user_id = 'bob'")) == "attribute:user = 'bob'");
    CHECK(show(parse("run.start_time > 5")) == "attribute:start_time > i5");
    CHECK(show(parse("Attributes.Status = 'FAILED'")) == "attribute:status = 'failed'");
    CHECK(show(parse("attributes.status LIKE 'FAIL%'")) == "attribute:status like 'FAIL%'");
  }

  TEST_CASE("AND binds tighter than OR; parentheses group") {
    CHECK(show(parse("metrics.a > 1 or metrics.b > 2 and metrics.c > 3")) ==
          "or(metric:a > i1, and(metric:b > i2, metric:c > i3))");
    CHECK(show(parse("metrics.a > 1 and metrics.b > 2 or metrics.c > 3")) ==
          "or(and(metric:a > i1, metric:b > i2), metric:c > i3)");
    CHECK(show(parse("(metrics.a > 1 or metrics.b > 2) and metrics.c > 3")) ==
          "and(or(metric:a > i1, metric:b > i2), metric:c > i3)");
    CHECK(show(parse("((metrics.a > 1))")) == "metric:a > i1");
    CHECK(show(parse("metrics.a > 1 AND metrics.b > 2 Or metrics.c > 3 oR metrics.d > 4")) ==
          "or(and(metric:a > i1, metric:b > i2), metric:c > i3, metric:d > i4)");
  }

  TEST_CASE("an empty filter matches everything") {
    FilterNode empty = parse("  \t ");
    CHECK(empty.kind == FilterNode::Kind::all_of);
    CHECK(empty.children.empty());
    CHECK(filter_to_sql(empty).sql == "1");
    CHECK(filter_to_sql(empty).args.empty());
  }

  TEST_CASE("comparisons record their column") {
    FilterNode node = parse("metrics.a > 1 and  params.b = 'x'");
    REQUIRE(node.children.size() == 2);
    CHECK(node.children[0].column == 1);
    CHECK(node.children[1].column == 20);
  }

  TEST_CASE("errors: message, column and excerpt") {
    struct Case {
      std::string_view filter;
      int column;
      std::string_view message;
    };
    const Case cases[] = {
        {"metricz.accuracy > 1", 1,
         "unknown entity 'metricz'; expected metrics, params, tags or attributes (did you mean 'metrics'?)"},
        {"attributes.stauts = 'failed'", 12,
         "unknown attribute 'stauts'; expected id, run_id, number, workflow, run_name, status, user, user_id, host, "
         "git_commit, git_branch, start_time, end_time or duration (did you mean 'status'?)"},
        {"metrics.accuracy foo", 18, "expected a comparison operator after 'metrics.accuracy', found 'foo'"},
        {"metrics.`my key`", 17,
         "expected a comparison operator after 'metrics.`my key`', found the end of the filter"},
        {"metrics.accuracy >", 19, "expected a value after '>', found the end of the filter"},
        {"params.model = lr", 16, "expected a value after '=', found 'lr' (quote text: 'lr')"},
        {"params.model = 'lr", 16, "unterminated string starting here"},
        {"metrics.`my key < 1", 9, "unterminated name starting here"},
        {"(metrics.a > 1 and params.b = 'x'", 34, "expected ')' to close '(' at column 1, found the end of the filter"},
        {"metrics.a > 1)", 14, "unexpected ')' without a matching '('"},
        {"metrics.a > 1 params.b = 'x'", 15, "expected AND, OR or the end of the filter, found 'params.b'"},
        {"metrics.a > 1 and", 18, "expected a condition after 'and', found the end of the filter"},
        {"metrics.a > 1 or ()", 19, "expected a condition, found ')'"},
        {"params.model IN ()", 18, "an IN list needs at least one value"},
        {"params.model IN ('a' 'b')", 22, "expected ',' or ')' to close the IN list at column 17, found 'b'"},
        {"params.model IN 'a'", 17, "expected '(' after 'IN', found 'a'"},
        {"params.model NOT = 'a'", 18, "expected LIKE, ILIKE or IN after 'NOT', found '='"},
        {"metrics.accuracy LIKE '9%'", 18, "metrics are compared as numbers: use =, !=, <, <=, >, >="},
        {"metrics.accuracy in (1)", 18, "metrics are compared as numbers: use =, !=, <, <=, >, >="},
        {"metrics.accuracy > 'high'", 20, "metrics are compared as numbers: expected a number, found 'high'"},
        {"params.lr > '0.1'", 13, "'>' compares params.lr as a number: write the value without quotes"},
        {"params.model LIKE 5", 19, "LIKE needs a quoted pattern, such as '5%'"},
        {"params.C IN (1, 'x')", 17, "an IN list cannot mix numbers and strings"},
        {"attributes.status = 'done'", 21,
         "unknown run status 'done'; expected running, succeeded, failed, cancelled or crashed"},
        {"attributes.status != 'faild'", 22,
         "unknown run status 'faild'; expected running, succeeded, failed, cancelled or crashed (did you mean "
         "'failed'?)"},
        {"attributes.start_time > 'yesterday'", 25,
         "attributes.start_time is a number (milliseconds since the epoch), found 'yesterday'"},
        {"attributes.duration LIKE '1%'", 21,
         "attributes.duration is a number (milliseconds): use =, !=, <, <=, >, >=, IN or NOT IN"},
        {"attributes.user > 'a'", 17, "attributes.user is text: use =, !=, LIKE, ILIKE, IN or NOT IN"},
        {"attributes.id = 42", 17, "attributes.id is text: quote the value, found '42'"},
        {"status = 'failed'", 1, "missing prefix before 'status' (did you mean 'attributes.status'?)"},
        {"accuracy > 1", 1,
         "missing prefix before 'accuracy': write metrics.accuracy, params.accuracy, tags.accuracy or "
         "attributes.accuracy"},
        {"metrics. > 1", 9, "expected a name after 'metrics.'"},
        {"params.x = `y`", 12, "backquotes are for names; quote a value with '...'"},
        {"metrics.a > 1abc", 13, "invalid number '1abc'"},
        {"metrics.a > 1 & metrics.b > 2", 15, "unexpected character '&'"},
        {"and metrics.a > 1", 1, "expected a condition, found 'and'"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.filter);
      FilterError error = parse_error(c.filter);
      CHECK(error.message == c.message);
      CHECK(error.column == c.column);
      CHECK(error.excerpt ==
            std::string(c.filter) + "\n" + std::string(static_cast<std::size_t>(c.column - 1), ' ') + "^");
    }
  }

  TEST_CASE("the excerpt keeps the caret under the column") {
    FilterError error = parse_error("tags.\"é\" = 'x' and\nfoo");
    CHECK(error.column == 20);
    CHECK(error.message == "missing prefix before 'foo': write metrics.foo, params.foo, tags.foo or attributes.foo");
    CHECK(error.excerpt == "tags.\"é\" = 'x' and foo\n                   ^");
  }

  TEST_CASE("order by") {
    std::vector<OrderTerm> terms = parse_order("metrics.accuracy DESC, attributes.run_name, params.`my key` asc");
    REQUIRE(terms.size() == 3);
    CHECK(terms[0].entity == FilterEntity::metric);
    CHECK(terms[0].name == "accuracy");
    CHECK(terms[0].descending);
    CHECK(terms[1].entity == FilterEntity::attribute);
    CHECK(terms[1].name == "workflow");
    CHECK_FALSE(terms[1].descending);
    CHECK(terms[2].entity == FilterEntity::param);
    CHECK(terms[2].name == "my key");
    CHECK_FALSE(terms[2].descending);
    CHECK(parse_order(" ").empty());
    CHECK(order_to_sql({}).sql == "r.number DESC");

    struct Case {
      std::string_view order;
      int column;
      std::string_view message;
    };
    const Case cases[] = {
        {"metrics.a DESC foo", 16, "expected ',' or the end of the ordering, found 'foo'"},
        {"metrics.a foo", 11, "expected ASC, DESC, ',' or the end of the ordering, found 'foo'"},
        {"metrics.a,", 11, "expected a field to order by after ',', found the end of the ordering"},
        {"DESC", 1, "expected a field to order by, such as metrics.accuracy, found 'DESC'"},
        {"paramz.a", 1,
         "unknown entity 'paramz'; expected metrics, params, tags or attributes (did you mean 'params'?)"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.order);
      std::variant<std::vector<OrderTerm>, FilterError> result = parse_order_by(c.order);
      REQUIRE(std::holds_alternative<FilterError>(result));
      CHECK(std::get<FilterError>(result).message == c.message);
      CHECK(std::get<FilterError>(result).column == c.column);
    }
  }

  TEST_CASE("user values are bound, never spliced into the SQL") {
    SqlFragment sql = filter_to_sql(parse("params.`secret key` = 'secret value' or attributes.user IN ('x', 'y')"));
    CHECK(sql.sql.find("secret") == std::string::npos);
    CHECK(sql.sql == "(r.number IN (SELECT run FROM params WHERE key = ? AND value = ?) OR r.user IN (?,?))");
    REQUIRE(sql.args.size() == 4);
    CHECK(std::get<std::string>(sql.args[0]) == "secret key");
    CHECK(std::get<std::string>(sql.args[1]) == "secret value");

    auto tracker = tracker_database();
    sqlite::Database& database = *tracker->database;
    CHECK(matching(database, "params.model = 'x'' OR 1=1 --'") == Runs{});
    CHECK(matching(database, "tags.`my key` = 'x'") == Runs{3});
  }

  TEST_CASE("metrics: any series of the key, NULL (NaN) never matches") {
    auto tracker = tracker_database();
    sqlite::Database& database = *tracker->database;
    CHECK(matching(database, "metrics.accuracy > 0.85") == Runs{1, 4});
    CHECK(matching(database, "metrics.accuracy >= 0.8") == Runs{1, 2, 4});
    CHECK(matching(database, "metrics.accuracy < 0.6") == Runs{2});
    CHECK(matching(database, "metrics.accuracy = 0.9") == Runs{4});
    CHECK(matching(database, "metrics.accuracy != 0.9") == Runs{1, 2});
    CHECK(matching(database, "metrics.loss <= 1") == Runs{1, 3});
    CHECK(matching(database, "metrics.missing > -1000") == Runs{});
  }

  TEST_CASE("params and tags as text: =, != (never without the key), LIKE, ILIKE, IN") {
    auto tracker = tracker_database();
    sqlite::Database& database = *tracker->database;
    CHECK(matching(database, "params.model = 'lr'") == Runs{1, 3});
    CHECK(matching(database, "params.model != 'lr'") == Runs{2, 4});
    CHECK(matching(database, "params.model LIKE 'l%'") == Runs{1, 3});
    CHECK(matching(database, "params.model ILIKE 'l%'") == Runs{1, 3, 4});
    CHECK(matching(database, "params.model NOT LIKE 'l%'") == Runs{2, 4});
    CHECK(matching(database, "params.model NOT ILIKE 'L%'") == Runs{2});
    CHECK(matching(database, "params.model LIKE 'L_'") == Runs{4});
    CHECK(matching(database, "tags.team LIKE 'ml%'") == Runs{1});
    CHECK(matching(database, "tags.team ILIKE 'ml%'") == Runs{1, 2});
    CHECK(matching(database, "params.model IN ('lr', 'svm')") == Runs{1, 2, 3});
    CHECK(matching(database, "params.model NOT IN ('lr')") == Runs{2, 4});
    // A step's param counts for its run.
    CHECK(matching(database, "params.epochs = '3'") == Runs{4});
    CHECK(matching(database, "params.C = '1'") == Runs{1});
  }

  TEST_CASE("params compared with a number compare numerically, only when the value is a number") {
    auto tracker = tracker_database();
    sqlite::Database& database = *tracker->database;
    // C: 1 -> '1', 2 -> '1.0', 3 -> 'abc', 4 -> '10'.
    CHECK(matching(database, "params.C = 1") == Runs{1, 2});
    CHECK(matching(database, "params.C != 1") == Runs{4});
    CHECK(matching(database, "params.C > 1") == Runs{4});
    CHECK(matching(database, "params.C >= 0") == Runs{1, 2, 4});
    CHECK(matching(database, "params.C <= 0") == Runs{});
    CHECK(matching(database, "params.C IN (1, 10)") == Runs{1, 2, 4});
    CHECK(matching(database, "params.C NOT IN (10)") == Runs{1, 2});
    // lr: 1 -> '0.01', 2 -> '1e-3', 3 -> '', 4 -> '1abc'; CAST alone would read '' as 0 and '1abc' as 1.
    CHECK(matching(database, "params.lr < 0.005") == Runs{2});
    CHECK(matching(database, "params.lr < 100") == Runs{1, 2});
    CHECK(matching(database, "params.lr = 0") == Runs{});
    CHECK(matching(database, "params.epochs > 5") == Runs{1});
  }

  TEST_CASE("attributes") {
    auto tracker = tracker_database();
    sqlite::Database& database = *tracker->database;
    CHECK(matching(database, "attributes.status = 'failed'") == Runs{2});
    CHECK(matching(database, "attributes.status = 'SUCCEEDED'") == Runs{1, 4});
    CHECK(matching(database, "attributes.status IN ('succeeded', 'cancelled')") == Runs{1, 4, 5});
    CHECK(matching(database, "attributes.status != 'running'") == Runs{1, 2, 4, 5});
    CHECK(matching(database, "attributes.run_name = 'train'") == Runs{1, 2, 4});
    CHECK(matching(database, "attributes.workflow LIKE 'e%'") == Runs{3});
    CHECK(matching(database, "attributes.run_id = 'b2'") == Runs{2});
    CHECK(matching(database, "attributes.user ILIKE 'ALICE'") == Runs{1, 3});
    CHECK(matching(database, "attributes.git_branch != 'main'") == Runs{2});
    CHECK(matching(database, "attributes.number IN (2, 5)") == Runs{2, 5});
    CHECK(matching(database, "attributes.start_time >= 3000") == Runs{3, 4, 5});
    CHECK(matching(database, "attributes.end_time < 5000") == Runs{2, 5});
    // A running run has no end, so no duration: it never matches.
    CHECK(matching(database, "attributes.duration > 1000") == Runs{1, 4});
    CHECK(matching(database, "attributes.duration != 0") == Runs{1, 2, 4, 5});
  }

  TEST_CASE("AND, OR and parentheses") {
    auto tracker = tracker_database();
    sqlite::Database& database = *tracker->database;
    CHECK(matching(database, "attributes.user = 'alice' and metrics.loss < 0.3") == Runs{1});
    CHECK(matching(database, "params.model = 'svm' or attributes.user = 'alice' and metrics.loss > 0.3") == Runs{2, 3});
    CHECK(matching(database, "(params.model = 'svm' or attributes.user = 'alice') and metrics.loss > 0.3") == Runs{3});
    CHECK(matching(database, "params.model = 'svm' OR tags.team = 'data' OR attributes.number = 5") == Runs{2, 3, 5});
    CHECK(matching(database, "") == Runs{1, 2, 3, 4, 5});
  }

  TEST_CASE("ordering: missing values last in both directions, newest run breaks ties") {
    auto tracker = tracker_database();
    sqlite::Database& database = *tracker->database;
    // accuracy: 1 -> 0.95, 2 -> 0.8 (latest series), 3 -> NaN, 4 -> 0.9, 5 -> none.
    CHECK(select_runs(database, "", "metrics.accuracy DESC") == Runs{1, 4, 2, 5, 3});
    CHECK(select_runs(database, "", "metrics.accuracy") == Runs{2, 4, 1, 5, 3});
    CHECK(select_runs(database, "attributes.status != 'failed'", "metrics.accuracy ASC") == Runs{4, 1, 5, 3});
    // model: 1, 3 -> 'lr', 2 -> 'svm', 4 -> 'Lr' (upper case sorts first), 5 -> none.
    CHECK(select_runs(database, "", "params.model") == Runs{4, 3, 1, 2, 5});
    CHECK(select_runs(database, "", "params.model DESC") == Runs{2, 3, 1, 4, 5});
    CHECK(select_runs(database, "", "tags.team, attributes.number") == Runs{2, 3, 1, 4, 5});
    // A running run has no end time: last either way.
    CHECK(select_runs(database, "", "attributes.end_time DESC") == Runs{4, 1, 5, 2, 3});
    CHECK(select_runs(database, "", "attributes.end_time") == Runs{2, 5, 1, 4, 3});
    CHECK(select_runs(database, "", "attributes.duration DESC") == Runs{4, 1, 5, 2, 3});
    CHECK(select_runs(database, "", "attributes.start_time DESC, attributes.user") == Runs{4, 5, 3, 2, 1});
    CHECK(select_runs(database, "") == Runs{5, 4, 3, 2, 1});
  }
}
