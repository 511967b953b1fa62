#pragma once
// `kiln runs search`: MLflow's run filter syntax, plus OR and parentheses.
//
//   filter     := or
//   or         := and ( OR and )*
//   and        := primary ( AND primary )*
//   primary    := '(' or ')' | comparison
//   comparison := entity op value | entity [NOT] IN '(' value (',' value)* ')'
//   entity     := prefix '.' name
//   prefix     := metrics | metric | params | param | tags | tag
//               | attributes | attribute | attr | run
//   name       := [A-Za-z0-9_.:/-]+ | `backquoted` | "double quoted"
//   op         := = | != | <> | < | <= | > | >= | LIKE | ILIKE | NOT LIKE | NOT ILIKE
//   value      := number | 'single quoted' | "double quoted"
//
// Keywords, prefixes and attribute names are case-insensitive; keys are not.
// A quote inside a quoted name or value is written twice: 'it''s'. A bare
// word as a value is an error (quote it).
//
// A metric condition compares the last value of that key (numbers only;
// LIKE, ILIKE and IN are errors; NaN never matches). Param and tag values are
// strings: a quoted value compares as text (=, !=, LIKE, ILIKE, IN), an
// unquoted number compares numerically (=, !=, <, <=, >, >=, IN), so
// `params.C = 1` matches "1" and "1.0"; a value that is not a number
// literal in full ("abc", "1abc", "") never matches a numeric comparison. < <= > >=
// need an unquoted number, and an IN list is all numbers or all strings.
// A params/tags/metrics condition matches a run when the run itself or any
// of its steps has the key with a matching value; a run without the key
// never matches (not even !=), as in MLflow. LIKE is case-sensitive, ILIKE
// not; % and _ are the wildcards.
//
// Attributes: id (alias run_id), number, workflow (alias run_name), status,
// user (alias user_id), host, git_commit, git_branch, start_time and end_time
// (ms since the epoch, numbers), duration (ms; no end time while a run is
// running, so then it never matches). Text attributes take =, !=, LIKE,
// ILIKE, IN and NOT IN with quoted values; numeric ones =, !=, <, <=, >, >=,
// IN and NOT IN with numbers. A status must be a run status (any case:
// 'FAILED' is 'failed'), except as a LIKE pattern.
//
// Syntax and semantic errors carry the 1-based column (in characters) they
// were found at; parsing stops at the first.

#include "core/expected.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kiln::core {

enum class FilterEntity { metric, param, tag, attribute };

enum class FilterOp { eq, ne, lt, le, gt, ge, like, ilike, not_like, not_ilike, in, not_in };

using FilterValue = std::variant<std::int64_t, double, std::string>;

struct FilterNode {
  enum class Kind { comparison, all_of, any_of };
  Kind kind = Kind::comparison;
  /// Kind::comparison.
  FilterEntity entity = FilterEntity::attribute;
  /// The key, or the attribute's canonical name ("status", "start_time"...).
  std::string name;
  FilterOp op = FilterOp::eq;
  /// One value; several for in / not_in.
  std::vector<FilterValue> values;
  /// 1-based column of the comparison in the filter text.
  int column = 0;
  /// Kind::all_of / any_of: the operands of AND / OR.
  std::vector<FilterNode> children;
};

/// A parse error: what was wrong, and where.
struct FilterError {
  std::string message;
  int column = 0;
  /// Two lines: the filter (tabs and newlines shown as spaces), and a caret
  /// under `column`: for printing after "kiln: error: filter: <message>".
  std::string excerpt;
};

/// Parses `text`; an empty (or all-blank) filter matches every run and
/// yields an all_of node with no children.
std::variant<FilterNode, FilterError> parse_search_filter(std::string_view text);

struct OrderTerm {
  FilterEntity entity = FilterEntity::attribute;
  std::string name;
  bool descending = false;
};

/// "metrics.accuracy DESC, attributes.start_time" (ASC by default). Empty
/// text gives no terms (the caller's default order applies). Params and tags
/// sort as text (the run's own value before a step's), a metric by the value
/// of its most recently logged series.
std::variant<std::vector<OrderTerm>, FilterError> parse_order_by(std::string_view text);

/// SQL for a filter, against the tracker schema (version 2): the runs table
/// aliased `r`, and params / tags / metric_series (see tracker_store.cpp).
struct SqlFragment {
  std::string sql;
  /// Bound in order to the fragment's `?` placeholders.
  std::vector<FilterValue> args;
};
/// A boolean expression for a WHERE clause ("1" for an empty filter).
SqlFragment filter_to_sql(const FilterNode& filter);
/// An ORDER BY list without the keywords (runs without a metric sort last
/// whatever the direction), ending with r.number DESC as the tie-break;
/// "r.number DESC" alone for no terms.
SqlFragment order_to_sql(const std::vector<OrderTerm>& order);

} // namespace kiln::core
