#include "core/sqlite.hpp"
#include "tests/support.hpp"

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

  TEST_CASE("a deferring connection leaves its writes in the log; a background checkpoint copies them into the file") {
    kiln::test::TempDir dir;
    const std::filesystem::path file = dir.path() / "d.db";
    const std::filesystem::path log = dir.path() / "d.db-wal";
    // Rows of t in the database file alone: a copy of it, without its log.
    const auto rows_in_file = [&] {
      const std::filesystem::path copy = dir.path() / "copy.db";
      std::filesystem::remove(dir.path() / "copy.db-wal");
      std::filesystem::copy_file(file, copy, std::filesystem::copy_options::overwrite_existing);
      Expected<Database> alone = Database::open(copy);
      REQUIRE(alone.ok());
      return alone->query_int64("SELECT count(*) FROM t").value();
    };
    {
      Expected<Database> database = Database::open(file);
      REQUIRE(database.ok());
      REQUIRE(database->enable_wal(std::chrono::seconds(5)).value() == "wal");
      REQUIRE(
          database->exec("CREATE TABLE t (k INTEGER PRIMARY KEY, s TEXT); INSERT INTO t (s) VALUES ('first')").ok());
    }
    // A connection that does not defer copies the log as it closes.
    CHECK_FALSE(std::filesystem::exists(log));
    CHECK(rows_in_file() == 1);
    {
      Expected<Database> database = Database::open(file);
      REQUIRE(database.ok());
      database->defer_checkpoints();
      // More than the 1,000 pages after which a commit would copy the log.
      REQUIRE(database
                  ->exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) "
                         "INSERT INTO t (s) SELECT printf('%.1000c', 'x') FROM n")
                  .ok());
    }
    REQUIRE(std::filesystem::exists(log));
    CHECK(std::filesystem::file_size(log) > 4096 * 1000);
    CHECK(rows_in_file() == 1);
    {
      // Readers see the rows in the log (and, deferring, leave it).
      Expected<Database> reader = Database::open(file, OpenMode::read_only);
      REQUIRE(reader.ok());
      reader->defer_checkpoints();
      CHECK(reader->query_int64("SELECT count(*) FROM t").value() == 5001);
    }
    BackgroundCheckpoint checkpoint(file);
    CHECK(checkpoint.wait().ok());
    CHECK(checkpoint.done());
    CHECK(rows_in_file() == 5001);
  }

  TEST_CASE("a background checkpoint of a database that is not there fails, naming it") {
    kiln::test::TempDir dir;
    BackgroundCheckpoint checkpoint(dir.path() / "missing.db");
    Expected<void> done = checkpoint.wait();
    REQUIRE_FALSE(done.ok());
    CHECK(done.error().find("missing.db") != std::string::npos);
  }

} // TEST_SUITE
