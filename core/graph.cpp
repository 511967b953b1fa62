#include "core/graph.hpp"

#include <algorithm>
#include <queue>

namespace kiln::core {

std::vector<int> find_cycle(const Dependencies& needs) {
  // Iterative depth-first search with colours; the grey stack is the path.
  const int n = static_cast<int>(needs.size());
  enum : std::uint8_t { white, grey, black };
  std::vector<std::uint8_t> colour(n, white);
  std::vector<std::pair<int, std::size_t>> stack;
  for (int root = 0; root < n; ++root) {
    if (colour[root] != white) {
      continue;
    }
    stack.push_back({root, 0});
    colour[root] = grey;
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next == needs[node].size()) {
        colour[node] = black;
        stack.pop_back();
        continue;
      }
      const int dep = needs[node][next++];
      if (dep < 0 || dep >= n) {
        continue;
      }
      if (colour[dep] == grey) {
        std::vector<int> cycle;
        auto it = std::find_if(stack.begin(), stack.end(), [dep](const auto& e) { return e.first == dep; });
        for (; it != stack.end(); ++it) {
          cycle.push_back(it->first);
        }
        cycle.push_back(dep);
        return cycle;
      }
      if (colour[dep] == white) {
        colour[dep] = grey;
        stack.push_back({dep, 0});
      }
    }
  }
  return {};
}

Dependencies dependents_of(const Dependencies& needs) {
  Dependencies out(needs.size());
  for (std::size_t i = 0; i < needs.size(); ++i) {
    for (int dep : needs[i]) {
      out[dep].push_back(static_cast<int>(i));
    }
  }
  return out;
}

std::vector<int> topological_order(const Dependencies& needs) {
  const auto dependents = dependents_of(needs);
  std::vector<int> remaining(needs.size());
  std::priority_queue<int, std::vector<int>, std::greater<>> ready;
  for (std::size_t i = 0; i < needs.size(); ++i) {
    remaining[i] = static_cast<int>(needs[i].size());
    if (remaining[i] == 0) {
      ready.push(static_cast<int>(i));
    }
  }
  std::vector<int> order;
  order.reserve(needs.size());
  while (!ready.empty()) {
    const int node = ready.top();
    ready.pop();
    order.push_back(node);
    for (int d : dependents[node]) {
      if (--remaining[d] == 0) {
        ready.push(d);
      }
    }
  }
  return order;
}

std::vector<std::int64_t> critical_path_lengths(const Dependencies& needs) {
  const auto order = topological_order(needs);
  const auto dependents = dependents_of(needs);
  std::vector<std::int64_t> length(needs.size(), 1);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    for (int d : dependents[*it]) {
      length[*it] = std::max(length[*it], length[d] + 1);
    }
  }
  return length;
}

} // namespace kiln::core
