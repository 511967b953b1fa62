#pragma once
// YAML documents as JSON values, for files that are data rather than
// workflows (a step's YAML metrics file). Built on the positioned tree of
// yaml_tree.hpp, so the file is read by the same parser, with the same
// messages, as a workflow.
//
// Plain scalars resolve by the YAML 1.2 core schema: null, ~ and nothing
// are null; true/false (also True, TRUE...) booleans; decimal, 0o octal and
// 0x hex integers and decimal floats (with .inf, -.inf and .nan) numbers;
// anything else a string. Quoted and block scalars, and `!!str`, are always
// strings. YAML 1.1's yes/no/on/off and 1_000 stay strings.

#include "core/expected.hpp"

#include <nlohmann/json.hpp>

#include <string>

namespace kiln::workflows {

/// Parses one YAML document; an empty one is null. Matches core::YamlToJson.
/// Every problem is reported, one per line, as "file:line:col: message".
core::Expected<nlohmann::json> yaml_to_json(const std::string& text, const std::string& file);

} // namespace kiln::workflows
