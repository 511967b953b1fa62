#pragma once
// A small RAII wrapper over SQLite: a connection, statements with
// bind/step/column, transactions, and prepared statements cached per
// connection. This pair is the only place that includes sqlite3.h; the
// handles below are the C library's opaque types, forward-declared.
//
// A connection is used by one thread. Errors are values carrying SQLite's
// message and the database file; nothing here throws.

#include "core/expected.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

struct sqlite3;
struct sqlite3_stmt;

namespace kiln::core::sqlite {

/// A non-owning view of a prepared statement. Binds are 1-based, columns
/// 0-based, as in SQLite. A bind error (a programming mistake: a bad index)
/// is remembered and reported by the next step().
/// Bytes bound as a BLOB rather than TEXT.
struct Blob {
  std::string_view bytes;
};

class StatementRef {
public:
  void bind(int index, std::int64_t value);
  void bind(int index, int value) { bind(index, static_cast<std::int64_t>(value)); }
  void bind(int index, bool value) { bind(index, static_cast<std::int64_t>(value ? 1 : 0)); }
  void bind(int index, double value);
  void bind(int index, std::string_view value);
  void bind(int index, const std::string& value) { bind(index, std::string_view(value)); }
  void bind(int index, const char* value) { bind(index, std::string_view(value)); }
  void bind(int index, std::nullptr_t);
  void bind(int index, Blob value);
  template <typename T>
  void bind(int index, const std::optional<T>& value) {
    if (value) {
      bind(index, *value);
    } else {
      bind(index, nullptr);
    }
  }

  /// Binds the arguments to parameters 1, 2, ... in order.
  template <typename... Args>
  void bind_all(const Args&... args) {
    int index = 0;
    (bind(++index, args), ...);
  }

  /// true: a row is ready to read; false: the statement is done. The
  /// statement is reset when it is done or fails, so it releases its locks.
  Expected<bool> step();
  /// Steps to completion, ignoring any rows: for INSERT/UPDATE/DDL.
  Expected<void> run();
  /// Steps to completion, calling `on_row(*this)` for each row.
  template <typename OnRow>
  Expected<void> for_each_row(OnRow&& on_row) {
    for (;;) {
      Expected<bool> row = step();
      if (!row) {
        return Error{row.error()};
      }
      if (!*row) {
        return {};
      }
      on_row(*this);
    }
  }
  /// Resets to before the first step and clears the bindings.
  void reset();

  bool is_null(int column) const;
  std::int64_t column_int64(int column) const;
  int column_int(int column) const { return static_cast<int>(column_int64(column)); }
  double column_double(int column) const;
  /// "" for NULL.
  std::string column_text(int column) const;
  std::optional<std::int64_t> column_optional_int64(int column) const;
  /// A BLOB's (or text's) bytes; "" for NULL.
  std::string column_blob(int column) const;

  std::string_view sql() const;

protected:
  explicit StatementRef(sqlite3_stmt* statement) : m_statement(statement) {}
  Error error_here(int code) const;

  sqlite3_stmt* m_statement = nullptr;
  int m_bind_error = 0;
};

/// An owned prepared statement; finalized on destruction.
class Statement : public StatementRef {
public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

private:
  friend class Database;
  explicit Statement(sqlite3_stmt* statement) : StatementRef(statement) {}
};

/// A lease on a statement from the connection's cache. Destroying the lease
/// resets the statement, so an abandoned SELECT never keeps a read
/// transaction (and its WAL snapshot) open.
class CachedStatement : public StatementRef {
public:
  CachedStatement(CachedStatement&& other) noexcept;
  CachedStatement& operator=(CachedStatement&&) = delete;
  CachedStatement(const CachedStatement&) = delete;
  CachedStatement& operator=(const CachedStatement&) = delete;
  ~CachedStatement();

private:
  friend class Database;
  explicit CachedStatement(sqlite3_stmt* statement) : StatementRef(statement) {}
};

enum class TransactionKind {
  /// Takes locks as statements need them; for read-only work.
  deferred,
  /// Takes the write lock at BEGIN, waiting on the busy handler. Writers
  /// must use this: a deferred transaction that later writes can fail with
  /// SQLITE_BUSY on the lock upgrade without waiting.
  immediate,
};

class Database;

/// An open transaction; rolled back on destruction unless committed.
class Transaction {
public:
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  Expected<void> commit();

private:
  friend class Database;
  explicit Transaction(Database* database) : m_database(database) {}
  Database* m_database = nullptr;
};

/// Foreign key checks off on a connection until destroyed, then on again.
/// Taken outside a transaction: SQLite ignores the pragma inside one. For
/// writes whose references hold by construction (rows copied from rows that
/// were checked), where the check's lookup per row is the cost.
class ForeignKeysOff {
public:
  ForeignKeysOff(ForeignKeysOff&& other) noexcept;
  ForeignKeysOff& operator=(ForeignKeysOff&&) = delete;
  ForeignKeysOff(const ForeignKeysOff&) = delete;
  ForeignKeysOff& operator=(const ForeignKeysOff&) = delete;
  ~ForeignKeysOff();

private:
  friend class Database;
  explicit ForeignKeysOff(Database* database) : m_database(database) {}
  Database* m_database = nullptr;
};

enum class OpenMode { read_write_create, read_write, read_only };

class Database {
public:
  /// Opens (and with read_write_create, creates) the file. ":memory:" gives
  /// a private in-memory database.
  static Expected<Database> open(const std::filesystem::path& file, OpenMode mode = OpenMode::read_write_create);

  Database(Database&& other) noexcept;
  Database& operator=(Database&& other) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  /// How long a statement waits for another connection's lock before
  /// failing with "database is locked".
  void set_busy_timeout(std::chrono::milliseconds timeout);

  /// Switches to write-ahead logging and returns the journal mode now in
  /// force ("wal", or the old mode where the file system cannot do WAL).
  /// Retries for up to `timeout` while other connections hold locks: the
  /// switch needs an exclusive lock and, to avoid deadlock, SQLite fails it
  /// with SQLITE_BUSY at once instead of waiting on the busy handler (seen
  /// when several processes create one database at the same moment).
  Expected<std::string> enable_wal(std::chrono::milliseconds timeout);

  /// Runs one or more statements, discarding any rows.
  Expected<void> exec(std::string_view sql);
  /// Runs a statement that returns one integer (e.g. PRAGMA user_version).
  Expected<std::int64_t> query_int64(std::string_view sql);
  /// Runs a statement that returns one text value (e.g. PRAGMA journal_mode).
  Expected<std::string> query_text(std::string_view sql);

  Expected<Statement> prepare(std::string_view sql);
  /// The statement for `sql`, prepared on first use and kept for the
  /// connection's lifetime. At most one lease per SQL text at a time.
  /// The first row's value, as `read(row)` takes it; an error when there
  /// is no row.
  template <typename Read>
  auto query_one(std::string_view sql, Read&& read) -> Expected<decltype(read(std::declval<StatementRef&>()))> {
    Expected<Statement> statement = prepare(sql);
    if (!statement) {
      return Error{statement.error()};
    }
    Expected<bool> row = statement->step();
    if (!row) {
      return Error{row.error()};
    }
    if (!*row) {
      return Error{m_file.string() + ": no result from " + std::string(sql)};
    }
    return read(*statement);
  }
  Expected<CachedStatement> cached(std::string_view sql);
  /// Runs `sql` (cached) with `args` bound to ?1, ?2, ... and calls
  /// `on_row(row)` for each row of the result.
  template <typename OnRow, typename... Args>
  Expected<void> each_row(std::string_view sql, OnRow&& on_row, const Args&... args) {
    Expected<CachedStatement> query = cached(sql);
    if (!query) {
      return Error{query.error()};
    }
    query->bind_all(args...);
    return query->for_each_row(std::forward<OnRow>(on_row));
  }

  Expected<Transaction> begin(TransactionKind kind);
  /// Foreign key checks off while the result lives (see ForeignKeysOff).
  Expected<ForeignKeysOff> foreign_keys_off();
  /// In WAL mode, this connection leaves what it writes in the log: it
  /// does not copy the log into the database file after a commit
  /// (auto-checkpoint) or as it closes, which costs a sync of each file.
  /// The next connection to close does it, or a BackgroundCheckpoint.
  /// Committed writes are as safe in the log as in the file.
  void defer_checkpoints();

  /// Rows changed by the last INSERT/UPDATE/DELETE.
  std::int64_t changes() const;
  std::int64_t last_insert_rowid() const;
  const std::filesystem::path& file() const { return m_file; }

private:
  friend class Transaction;
  friend class BackgroundCheckpoint;
  Database(sqlite3* handle, std::filesystem::path file);
  Error error_here(int code, std::string_view what) const;
  void close();

  sqlite3* m_handle = nullptr;
  std::filesystem::path m_file;
  // Node-based, so a statement's address is stable while the map grows.
  std::unordered_map<std::string, Statement> m_cache;
};

/// A checkpoint of a WAL database on its own thread and connection: what
/// the log holds is copied into the database file while the caller does
/// other work. PASSIVE: it waits for no lock and copies what no reader
/// still needs; a writer that begins once it is done starts the log over
/// rather than growing it.
class BackgroundCheckpoint {
public:
  explicit BackgroundCheckpoint(std::filesystem::path file);
  /// Waits for the thread.
  ~BackgroundCheckpoint();
  BackgroundCheckpoint(const BackgroundCheckpoint&) = delete;
  BackgroundCheckpoint& operator=(const BackgroundCheckpoint&) = delete;

  bool done() const { return m_done.load(std::memory_order_acquire); }
  /// Waits for it; its error, if it failed. A failed checkpoint loses
  /// nothing: the log keeps what it did not copy.
  Expected<void> wait();

private:
  std::filesystem::path m_file;
  std::string m_error;
  std::atomic<bool> m_done{false};
  std::thread m_thread;
};

} // namespace kiln::core::sqlite
