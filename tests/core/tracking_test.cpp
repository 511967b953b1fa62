#include "core/tracking.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace kiln::core;

TEST_SUITE("core::Tracking") {
  TEST_CASE("artifact kinds round-trip through their names") {
    for (ArtifactKind kind :
         {ArtifactKind::output, ArtifactKind::model, ArtifactKind::prediction, ArtifactKind::logged}) {
      CHECK(parse_artifact_kind(to_string(kind)) == kind);
    }
    CHECK(to_string(ArtifactKind::output) == "output");
    CHECK(to_string(ArtifactKind::model) == "model");
    CHECK(to_string(ArtifactKind::prediction) == "prediction");
    CHECK(to_string(ArtifactKind::logged) == "logged");
    CHECK_FALSE(parse_artifact_kind("Model").has_value());
    CHECK_FALSE(parse_artifact_kind("").has_value());
  }

  TEST_CASE("keys MLflow accepts") {
    for (const std::string key : {"a", "Ab-5_", "a/b/c", "a.b.c", ".a", "b.", "a..a/._./o_O/.e.", "a b/c d", "eval.f1",
                                  "train/loss", "...", "._"}) {
      CAPTURE(key);
      CHECK(check_key(key) == "");
    }
    CHECK(check_key(std::string(250, 'k')) == "");
  }

  TEST_CASE("keys MLflow rejects, with the reason") {
    CHECK(check_key("") == "a key must not be empty");
    CHECK(check_key("a b!") == "key 'a b!' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
    CHECK(check_key("f1@k") == "key 'f1@k' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
    CHECK(check_key("a:b") == "key 'a:b' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
    CHECK(check_key("a\\b") == "key 'a\\b' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
    CHECK(check_key("caf\xC3\xA9") == "key 'caf\xC3\xA9' may contain only letters, digits, '_', '-', '.', ' ' and '/'");
    CHECK(check_key("/a") == "key '/a' must not start with '/'");
    CHECK(check_key("/") == "key '/' must not start with '/'");
    CHECK(check_key("a/") == "key 'a/' must not end with '/'");
    CHECK(check_key("a//b") == "key 'a//b' must not contain '//'");
    CHECK(check_key("..") == "key '..' must not contain a '..' path component");
    CHECK(check_key("a/../b") == "key 'a/../b' must not contain a '..' path component");
    CHECK(check_key("../a") == "key '../a' must not contain a '..' path component");
    CHECK(check_key(".") == "key '.' must not contain a '.' path component");
    CHECK(check_key("a/./b") == "key 'a/./b' must not contain a '.' path component");
  }

  TEST_CASE("a key over 250 characters is refused and cut short in the message") {
    const std::string key(251, 'k');
    CHECK(check_key(key) == "key '" + std::string(40, 'k') + "...' is 251 characters long (at most 250)");
  }
}
