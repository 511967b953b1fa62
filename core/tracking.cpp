#include "core/tracking.hpp"

namespace kiln::core {

namespace {

// MLflow's limit on metric, param and tag keys (MAX_ENTITY_KEY_LENGTH).
constexpr std::size_t k_max_key_length = 250;

// ASCII only: MLflow's Python regex also admits non-ASCII letters through
// \w, but a key kiln accepts must be one every MLflow server accepts.
bool is_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.' || c == ' ' || c == '/';
}

std::string quoted(std::string_view key) {
  // A key far too long is cut in the message, not in what it says.
  constexpr std::size_t k_shown = 40;
  if (key.size() > k_shown) {
    return "'" + std::string(key.substr(0, k_shown)) + "...'";
  }
  return "'" + std::string(key) + "'";
}

} // namespace

std::string_view to_string(ArtifactKind kind) {
  switch (kind) {
  case ArtifactKind::output: return "output";
  case ArtifactKind::model: return "model";
  case ArtifactKind::prediction: return "prediction";
  case ArtifactKind::logged: return "logged";
  }
  return "output";
}

std::optional<ArtifactKind> parse_artifact_kind(std::string_view text) {
  for (ArtifactKind kind :
       {ArtifactKind::output, ArtifactKind::model, ArtifactKind::prediction, ArtifactKind::logged}) {
    if (text == to_string(kind)) {
      return kind;
    }
  }
  return std::nullopt;
}

// MLflow treats keys as file names in places, so it also requires a key to
// be its own normal form as a path (posixpath.normpath(key) == key): no
// empty, "." or ".." component, hence no leading, trailing or doubled '/'.
std::string describe_owner(std::string_view step) {
  return step.empty() ? std::string("the run") : "step '" + std::string(step) + "'";
}

std::string check_key(std::string_view key) {
  if (key.empty()) {
    return "a key must not be empty";
  }
  if (key.size() > k_max_key_length) {
    return "key " + quoted(key) + " is " + std::to_string(key.size()) + " characters long (at most " +
           std::to_string(k_max_key_length) + ")";
  }
  for (char c : key) {
    if (!is_key_char(c)) {
      return "key " + quoted(key) + " may contain only letters, digits, '_', '-', '.', ' ' and '/'";
    }
  }
  if (key.front() == '/') {
    return "key " + quoted(key) + " must not start with '/'";
  }
  if (key.back() == '/') {
    return "key " + quoted(key) + " must not end with '/'";
  }
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = key.find('/', start);
    const std::string_view component = key.substr(start, slash == std::string_view::npos ? key.npos : slash - start);
    if (component == "..") {
      return "key " + quoted(key) + " must not contain a '..' path component";
    }
    if (component == ".") {
      return "key " + quoted(key) + " must not contain a '.' path component";
    }
    if (component.empty()) {
      return "key " + quoted(key) + " must not contain '//'";
    }
    if (slash == std::string_view::npos) {
      return "";
    }
    start = slash + 1;
  }
}

} // namespace kiln::core
