#pragma once
// Expected failures are values: a result or an error message. Exceptions are
// kept for the unrecoverable and caught in main.

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace kiln::core {

struct Error {
  std::string message;
};

template <typename T>
class [[nodiscard]] Expected {
public:
  Expected(T value) : m_state(std::in_place_index<0>, std::move(value)) {}
  Expected(Error error) : m_state(std::in_place_index<1>, std::move(error)) {}

  bool ok() const { return m_state.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(m_state);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(m_state);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(m_state));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const std::string& error() const {
    assert(!ok());
    return std::get<1>(m_state).message;
  }

private:
  std::variant<T, Error> m_state;
};

template <>
class [[nodiscard]] Expected<void> {
public:
  Expected() = default;
  Expected(Error error) : m_error(std::move(error.message)), m_ok(false) {}

  bool ok() const { return m_ok; }
  explicit operator bool() const { return m_ok; }
  const std::string& error() const {
    assert(!m_ok);
    return m_error;
  }

private:
  std::string m_error;
  bool m_ok = true;
};

} // namespace kiln::core
