#include "core/template.hpp"

#include <algorithm>

namespace kiln::core {

namespace {

constexpr std::string_view k_open = "${{";
constexpr std::string_view k_close = "}}";

bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

bool is_name_char(char c) {
  return is_name_start(c) || (c >= '0' && c <= '9') || c == '-';
}

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

// NAME = [A-Za-z_][A-Za-z0-9_-]*
bool is_name(std::string_view s) {
  if (s.empty() || !is_name_start(s[0])) {
    return false;
  }
  for (char c : s) {
    if (!is_name_char(c)) {
      return false;
    }
  }
  return true;
}

// What may follow "NS.": a NAME, except after "steps.", where a step id
// (which may hold '.', '[', ']', '=' and ',' for matrix variants) and a
// field follow; parse_step_ref checks their structure.
bool is_path(std::string_view ns, std::string_view s) {
  if (ns != "steps") {
    return is_name(s);
  }
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return is_name_char(c) || c == '.' || c == '[' || c == ']' || c == '=' || c == ',';
  });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && is_space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

// True when text[pos] starts "$${{", the escape for a literal "${{".
bool is_escape_at(std::string_view text, std::size_t pos) {
  return text.compare(pos, 4, "$${{") == 0;
}

// One step of the scanner shared by scan_template and render_template: from
// `pos`, finds the next "${{" (skipping escapes) and parses its expression.
struct Token {
  enum class Kind { none, ref, error } kind = Kind::none;
  std::size_t literal_end = 0; // text[pos, literal_end) is plain text (escapes unresolved)
  TemplateRef ref;
  TemplateSyntaxError error;
  std::size_t next = 0; // where scanning continues
  bool stop = false;    // an unterminated "${{": nothing after it is scanned
};

Token next_token(std::string_view text, std::size_t pos) {
  Token token;
  std::size_t at = pos;
  while (true) {
    at = text.find(k_open, at);
    if (at == std::string_view::npos) {
      token.literal_end = text.size();
      token.next = text.size();
      return token;
    }
    if (at > 0 && is_escape_at(text, at - 1)) {
      at += k_open.size();
      continue;
    }
    break;
  }
  token.literal_end = at;
  const std::size_t expr_start = at + k_open.size();
  const std::size_t line_end = std::min(text.find('\n', expr_start), text.size());
  const std::size_t close = text.find(k_close, expr_start);
  if (close == std::string_view::npos || close > line_end) {
    token.kind = Token::Kind::error;
    token.error = {at, k_open.size(), "unterminated '${{' (missing '}}')"};
    token.next = text.size();
    token.stop = true;
    return token;
  }
  token.next = close + k_close.size();
  const std::size_t length = token.next - at;
  const std::string_view expr = trim(text.substr(expr_start, close - expr_start));
  if (expr.empty()) {
    token.kind = Token::Kind::error;
    token.error = {at, length, "empty expression in '${{ }}'; write e.g. ${{ params.NAME }}"};
    return token;
  }
  const std::size_t dot = expr.find('.');
  const std::string_view ns = dot == std::string_view::npos ? expr : expr.substr(0, dot);
  const std::string_view name = dot == std::string_view::npos ? std::string_view{} : expr.substr(dot + 1);
  if (dot == std::string_view::npos || !is_name(ns) || !is_path(ns, name)) {
    token.kind = Token::Kind::error;
    token.error = {at, length, "bad expression '" + std::string(expr) + "': expected NAMESPACE.NAME, e.g. params.C"};
    return token;
  }
  token.kind = Token::Kind::ref;
  token.ref = {std::string(ns), std::string(name), at, length};
  return token;
}

// Appends text[from, to) with every "$${{" turned into "${{" (kept as
// written when `keep_escapes`).
void append_literal(std::string& out, std::string_view text, std::size_t from, std::size_t to, bool keep_escapes) {
  if (keep_escapes) {
    out.append(text.substr(from, to - from));
    return;
  }
  std::size_t pos = from;
  while (pos < to) {
    const std::size_t esc = text.find("$${{", pos);
    if (esc == std::string_view::npos || esc >= to) {
      out.append(text.substr(pos, to - pos));
      return;
    }
    out.append(text.substr(pos, esc - pos));
    out.append(k_open);
    pos = esc + 4;
  }
}

} // namespace

TemplateScan scan_template(std::string_view text) {
  TemplateScan scan;
  std::size_t pos = 0;
  while (pos < text.size()) {
    Token token = next_token(text, pos);
    if (token.kind == Token::Kind::ref) {
      scan.refs.push_back(std::move(token.ref));
    } else if (token.kind == Token::Kind::error) {
      scan.errors.push_back(std::move(token.error));
    }
    if (token.stop || token.kind == Token::Kind::none) {
      break;
    }
    pos = token.next;
  }
  return scan;
}

std::optional<StepRef> parse_step_ref(std::string_view path) {
  // The step id may itself hold dots: the field is the last ".outputs.",
  // ".metrics." or ".status" that leaves a non-empty id before it.
  for (std::string_view field : {"outputs", "metrics"}) {
    const std::string marker = "." + std::string(field) + ".";
    const std::size_t at = path.rfind(marker);
    if (at != std::string_view::npos && at > 0 && at + marker.size() < path.size()) {
      const std::string_view name = path.substr(at + marker.size());
      if (name.find('.') == std::string_view::npos || field == "metrics") {
        return StepRef{std::string(path.substr(0, at)), std::string(field), std::string(name)};
      }
    }
  }
  if (path.size() > 7 && path.ends_with(".status")) {
    return StepRef{std::string(path.substr(0, path.size() - 7)), "status", ""};
  }
  return std::nullopt;
}

std::vector<std::string_view> template_fields(std::string_view ns) {
  if (ns == "run") {
    return {"id", "number"};
  }
  if (ns == "step") {
    return {"id"};
  }
  if (ns == "workflow") {
    return {"name"};
  }
  return {};
}

Expected<std::string> render_template(std::string_view text, const TemplateContext& ctx) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    Token token = next_token(text, pos);
    append_literal(out, text, pos, token.literal_end, ctx.keep_steps);
    if (token.kind == Token::Kind::none) {
      break;
    }
    if (token.kind == Token::Kind::error) {
      return Error{token.error.message};
    }
    const TemplateRef& ref = token.ref;
    const std::size_t value_start = out.size();
    if (ref.ns == "steps") {
      if (ctx.keep_steps) {
        out.append(text.substr(ref.offset, ref.length));
        pos = token.next;
        continue;
      }
      if (!ctx.steps) {
        return Error{"steps." + ref.name + " is not available here"};
      }
      auto value = ctx.steps(ref.name);
      if (!value) {
        return Error{value.error()};
      }
      out += *value;
    } else if (ref.ns == "matrix") {
      const auto it =
          std::find_if(ctx.matrix.begin(), ctx.matrix.end(), [&](const auto& m) { return m.first == ref.name; });
      if (it == ctx.matrix.end()) {
        return Error{"matrix." + ref.name + " is not defined for this step"};
      }
      out += it->second;
    } else if (ref.ns == "params") {
      const Param* param = ctx.workflow != nullptr ? ctx.workflow->param(ref.name) : nullptr;
      if (param == nullptr) {
        return Error{"undefined parameter '" + ref.name + "'"};
      }
      out += param->value;
    } else if (ref.ns == "env") {
      std::optional<std::string> value;
      if (ctx.env) {
        value = ctx.env(ref.name);
      }
      if (!value) {
        return Error{"env." + ref.name + " is not set"};
      }
      out += *value;
    } else if (ref.ns == "run" && ref.name == "id") {
      out += ctx.run_id;
    } else if (ref.ns == "run" && ref.name == "number") {
      out += std::to_string(ctx.run_number);
    } else if (ref.ns == "step" && ref.name == "id") {
      out += ctx.step_id;
    } else if (ref.ns == "workflow" && ref.name == "name") {
      if (ctx.workflow == nullptr) {
        return Error{"workflow.name is not available here"};
      }
      out += ctx.workflow->name;
    } else if (template_fields(ref.ns).empty()) {
      return Error{"unknown namespace '" + ref.ns + "' in '" + ref.ns + "." + ref.name + "'"};
    } else {
      return Error{"unknown field '" + ref.ns + "." + ref.name + "'"};
    }
    if (ctx.keep_steps) {
      // The result is rendered again once the steps' values are known: a
      // value holding "${{" must stay literal through that second pass.
      for (std::size_t at = out.find("${{", value_start); at != std::string::npos; at = out.find("${{", at + 4)) {
        out.insert(at, 1, '$');
      }
    }
    pos = token.next;
  }
  return out;
}

} // namespace kiln::core
