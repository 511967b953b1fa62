#pragma once
// The step dependency graph as indices: steps are numbered in file order and
// each lists the steps it needs. Pure functions, no I/O.

#include <cstdint>
#include <vector>

namespace kiln::core {

using Dependencies = std::vector<std::vector<int>>;

/// A cycle as a path of step indices whose last element equals its first
/// (a -> b -> a), or empty when the graph is acyclic. Deterministic: the
/// cycle reached first from the lowest index, following needs in order.
std::vector<int> find_cycle(const Dependencies& needs);

/// Every step in an order where each comes after all it needs; ties keep
/// file order. Requires an acyclic graph.
std::vector<int> topological_order(const Dependencies& needs);

/// For each step, the number of steps on the longest chain of dependents
/// behind it, itself included: the scheduler starts the longest first.
std::vector<std::int64_t> critical_path_lengths(const Dependencies& needs);

/// For each step, the steps that need it.
Dependencies dependents_of(const Dependencies& needs);

} // namespace kiln::core
