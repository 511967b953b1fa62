#include "core/workflow.hpp"

namespace kiln::core {

std::string_view to_string(StepKind kind) {
  switch (kind) {
  case StepKind::task: return "task";
  case StepKind::train: return "train";
  case StepKind::evaluate: return "evaluate";
  case StepKind::predict: return "predict";
  }
  return "task";
}

std::string_view to_string(ParamType type) {
  switch (type) {
  case ParamType::string: return "string";
  case ParamType::integer: return "int";
  case ParamType::floating: return "float";
  case ParamType::boolean: return "bool";
  }
  return "string";
}

const StepOutput* Step::output(std::string_view name) const {
  for (const auto& out : outputs) {
    if (out.name == name) {
      return &out;
    }
  }
  return nullptr;
}

const Step* Workflow::step(std::string_view id) const {
  for (const auto& s : steps) {
    if (s.id == id) {
      return &s;
    }
  }
  return nullptr;
}

const Param* Workflow::param(std::string_view name) const {
  for (const auto& p : params) {
    if (p.name == name) {
      return &p;
    }
  }
  return nullptr;
}

} // namespace kiln::core
