#include "core/sqlite.hpp"

#include <doctest/doctest.h>

using namespace kiln::core;
using namespace kiln::core::sqlite;

namespace {

Database memory_database() {
  Expected<Database> database = Database::open(":memory:");
  REQUIRE(database.ok());
  REQUIRE(database->exec("CREATE TABLE t (k INTEGER PRIMARY KEY, s TEXT, d REAL)").ok());
  return std::move(database).value();
}

std::int64_t count(Database& database) {
  Expected<std::int64_t> n = database.query_int64("SELECT count(*) FROM t");
  REQUIRE(n.ok());
  return *n;
}

} // namespace

TEST_SUITE("core::sqlite") {

  TEST_CASE("bind, step and read columns") {
    Database database = memory_database();
    {
      Expected<CachedStatement> insert = database.cached("INSERT INTO t (k, s, d) VALUES (?1, ?2, ?3)");
      REQUIRE(insert.ok());
      insert->bind_all(1, std::string("one"), 1.5);
      REQUIRE(insert->run().ok());
      insert->bind_all(std::int64_t{2}, nullptr, std::optional<double>{});
      REQUIRE(insert->run().ok());
    }
    CHECK(database.last_insert_rowid() == 2);

    Expected<Statement> select = database.prepare("SELECT k, s, d FROM t ORDER BY k");
    REQUIRE(select.ok());
    Expected<bool> row = select->step();
    REQUIRE(row.ok());
    REQUIRE(*row);
    CHECK(select->column_int64(0) == 1);
    CHECK(select->column_text(1) == "one");
    CHECK(select->column_double(2) == 1.5);
    row = select->step();
    REQUIRE(row.ok());
    REQUIRE(*row);
    CHECK(select->is_null(1));
    CHECK(select->column_text(1).empty());
    CHECK_FALSE(select->column_optional_int64(2).has_value());
    row = select->step();
    REQUIRE(row.ok());
    CHECK_FALSE(*row);
  }

  TEST_CASE("errors are values naming what failed") {
    Database database = memory_database();
    Expected<Statement> bad = database.prepare("SELECT nope FROM t");
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().find("no such column: nope") != std::string::npos);

    REQUIRE(database.exec("INSERT INTO t (k) VALUES (1)").ok());
    Expected<void> duplicate = database.exec("INSERT INTO t (k) VALUES (1)");
    REQUIRE_FALSE(duplicate.ok());
    CHECK(duplicate.error().find("UNIQUE constraint failed") != std::string::npos);

    Expected<CachedStatement> insert = database.cached("INSERT INTO t (k) VALUES (?1)");
    REQUIRE(insert.ok());
    insert->bind(5, 1); // no such parameter
    CHECK_FALSE(insert->run().ok());
  }

  TEST_CASE("a transaction rolls back unless committed") {
    Database database = memory_database();
    {
      Expected<Transaction> transaction = database.begin(TransactionKind::immediate);
      REQUIRE(transaction.ok());
      REQUIRE(database.exec("INSERT INTO t (k) VALUES (1)").ok());
    }
    CHECK(count(database) == 0);
    {
      Expected<Transaction> transaction = database.begin(TransactionKind::immediate);
      REQUIRE(transaction.ok());
      REQUIRE(database.exec("INSERT INTO t (k) VALUES (1)").ok());
      REQUIRE(transaction->commit().ok());
    }
    CHECK(count(database) == 1);
  }

  TEST_CASE("foreign key checks are off while the guard lives, and on again after") {
    Database database = memory_database();
    REQUIRE(database.exec("PRAGMA foreign_keys = ON; CREATE TABLE c (k INTEGER REFERENCES t (k))").ok());
    CHECK_FALSE(database.exec("INSERT INTO c (k) VALUES (7)").ok());
    {
      Expected<ForeignKeysOff> off = database.foreign_keys_off();
      REQUIRE(off.ok());
      Expected<Transaction> transaction = database.begin(TransactionKind::immediate);
      REQUIRE(transaction.ok());
      CHECK(database.exec("INSERT INTO c (k) VALUES (7)").ok());
      REQUIRE(transaction->commit().ok());
    }
    CHECK(database.query_int64("PRAGMA foreign_keys").value() == 1);
    CHECK_FALSE(database.exec("INSERT INTO c (k) VALUES (8)").ok());
  }

  TEST_CASE("a cached statement is reset when its lease ends") {
    Database database = memory_database();
    REQUIRE(database.exec("INSERT INTO t (k) VALUES (1), (2)").ok());
    {
      Expected<CachedStatement> select = database.cached("SELECT k FROM t ORDER BY k");
      REQUIRE(select.ok());
      Expected<bool> row = select->step();
      REQUIRE(row.ok());
      CHECK(*row);
      // Abandoned mid-result.
    }
    Expected<CachedStatement> again = database.cached("SELECT k FROM t ORDER BY k");
    REQUIRE(again.ok());
    Expected<bool> row = again->step();
    REQUIRE(row.ok());
    REQUIRE(*row);
    CHECK(again->column_int64(0) == 1);
  }

} // TEST_SUITE
