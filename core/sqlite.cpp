#include "core/sqlite.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <climits>
#include <thread>

namespace kiln::core::sqlite {

namespace {

std::string describe(sqlite3* handle, int code) {
  std::string message = handle != nullptr ? sqlite3_errmsg(handle) : sqlite3_errstr(code);
  // sqlite3_errmsg may describe an older error than `code` once the
  // statement was reset; prefer the code's own text when they disagree.
  if (handle != nullptr && (sqlite3_extended_errcode(handle) & 0xff) != (code & 0xff)) {
    message = sqlite3_errstr(code);
  }
  return message;
}

int open_flags(OpenMode mode) {
  // NOMUTEX: a connection belongs to one thread (see the header).
  int flags = SQLITE_OPEN_NOMUTEX;
  switch (mode) {
  case OpenMode::read_write_create: return flags | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  case OpenMode::read_write: return flags | SQLITE_OPEN_READWRITE;
  case OpenMode::read_only: return flags | SQLITE_OPEN_READONLY;
  }
  return flags | SQLITE_OPEN_READWRITE;
}

} // namespace

// ---- StatementRef ----

void StatementRef::bind(int index, std::int64_t value) {
  int code = sqlite3_bind_int64(m_statement, index, value);
  if (code != SQLITE_OK && m_bind_error == 0) {
    m_bind_error = code;
  }
}

void StatementRef::bind(int index, double value) {
  int code = sqlite3_bind_double(m_statement, index, value);
  if (code != SQLITE_OK && m_bind_error == 0) {
    m_bind_error = code;
  }
}

void StatementRef::bind(int index, std::string_view value) {
  // SQLITE_TRANSIENT: SQLite copies, so the caller's buffer may go away
  // before step(). A null data pointer would bind NULL; an empty view is "".
  const char* data = value.data() != nullptr ? value.data() : "";
  int code = sqlite3_bind_text64(m_statement, index, data, value.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (code != SQLITE_OK && m_bind_error == 0) {
    m_bind_error = code;
  }
}

void StatementRef::bind(int index, std::nullptr_t) {
  int code = sqlite3_bind_null(m_statement, index);
  if (code != SQLITE_OK && m_bind_error == 0) {
    m_bind_error = code;
  }
}

void StatementRef::bind(int index, Blob value) {
  // A zero-length blob with a null pointer would bind NULL.
  const char* data = value.bytes.data() != nullptr ? value.bytes.data() : "";
  int code = sqlite3_bind_blob64(m_statement, index, data, value.bytes.size(), SQLITE_TRANSIENT);
  if (code != SQLITE_OK && m_bind_error == 0) {
    m_bind_error = code;
  }
}

Expected<bool> StatementRef::step() {
  if (m_bind_error != 0) {
    Error error = error_here(m_bind_error);
    reset();
    return error;
  }
  int code = sqlite3_step(m_statement);
  if (code == SQLITE_ROW) {
    return true;
  }
  if (code == SQLITE_DONE) {
    sqlite3_reset(m_statement);
    return false;
  }
  Error error = error_here(code);
  sqlite3_reset(m_statement);
  return error;
}

Expected<void> StatementRef::run() {
  while (true) {
    Expected<bool> row = step();
    if (!row) {
      return Error{row.error()};
    }
    if (!*row) {
      return {};
    }
  }
}

void StatementRef::reset() {
  if (m_statement != nullptr) {
    sqlite3_reset(m_statement);
    sqlite3_clear_bindings(m_statement);
  }
  m_bind_error = 0;
}

bool StatementRef::is_null(int column) const {
  return sqlite3_column_type(m_statement, column) == SQLITE_NULL;
}

std::int64_t StatementRef::column_int64(int column) const {
  return sqlite3_column_int64(m_statement, column);
}

double StatementRef::column_double(int column) const {
  return sqlite3_column_double(m_statement, column);
}

std::string StatementRef::column_text(int column) const {
  const unsigned char* text = sqlite3_column_text(m_statement, column);
  if (text == nullptr) {
    return {};
  }
  int size = sqlite3_column_bytes(m_statement, column);
  return std::string(reinterpret_cast<const char*>(text), static_cast<std::size_t>(size));
}

std::string StatementRef::column_blob(int column) const {
  const void* bytes = sqlite3_column_blob(m_statement, column);
  if (bytes == nullptr) {
    return {};
  }
  int size = sqlite3_column_bytes(m_statement, column);
  return std::string(static_cast<const char*>(bytes), static_cast<std::size_t>(size));
}

std::optional<std::int64_t> StatementRef::column_optional_int64(int column) const {
  if (is_null(column)) {
    return std::nullopt;
  }
  return column_int64(column);
}

std::string_view StatementRef::sql() const {
  const char* text = m_statement != nullptr ? sqlite3_sql(m_statement) : nullptr;
  return text != nullptr ? std::string_view(text) : std::string_view();
}

Error StatementRef::error_here(int code) const {
  sqlite3* handle = sqlite3_db_handle(m_statement);
  std::string message = describe(handle, code);
  const char* file = sqlite3_db_filename(handle, "main");
  if (file != nullptr && *file != '\0') {
    return Error{std::string(file) + ": " + message};
  }
  return Error{message};
}

// ---- Statement ----

Statement::Statement(Statement&& other) noexcept : StatementRef(other.m_statement) {
  m_bind_error = other.m_bind_error;
  other.m_statement = nullptr;
}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(m_statement);
    m_statement = other.m_statement;
    m_bind_error = other.m_bind_error;
    other.m_statement = nullptr;
  }
  return *this;
}

Statement::~Statement() {
  sqlite3_finalize(m_statement);
}

// ---- CachedStatement ----

CachedStatement::CachedStatement(CachedStatement&& other) noexcept : StatementRef(other.m_statement) {
  m_bind_error = other.m_bind_error;
  other.m_statement = nullptr;
}

CachedStatement::~CachedStatement() {
  reset();
}

// ---- Transaction ----

Transaction::Transaction(Transaction&& other) noexcept : m_database(other.m_database) {
  other.m_database = nullptr;
}

Transaction::~Transaction() {
  if (m_database == nullptr || sqlite3_get_autocommit(m_database->m_handle) != 0) {
    return;
  }
  // A failed ROLLBACK leaves nothing better to do; SQLite rolls back an
  // open transaction when the connection closes.
  Expected<void> rolled_back = m_database->exec("ROLLBACK");
  (void)rolled_back;
}

Expected<void> Transaction::commit() {
  if (m_database == nullptr) {
    return Error{"commit of a transaction that is not open"};
  }
  Expected<CachedStatement> statement = m_database->cached("COMMIT");
  if (!statement) {
    return Error{statement.error()};
  }
  Expected<void> done = statement->run();
  if (!done) {
    return done; // the destructor rolls back
  }
  m_database = nullptr;
  return {};
}

// ---- Database ----

Database::Database(sqlite3* handle, std::filesystem::path file) : m_handle(handle), m_file(std::move(file)) {}

Database::Database(Database&& other) noexcept
    : m_handle(other.m_handle), m_file(std::move(other.m_file)), m_cache(std::move(other.m_cache)) {
  other.m_handle = nullptr;
}

Database& Database::operator=(Database&& other) noexcept {
  if (this != &other) {
    close();
    m_handle = other.m_handle;
    m_file = std::move(other.m_file);
    m_cache = std::move(other.m_cache);
    other.m_handle = nullptr;
  }
  return *this;
}

Database::~Database() {
  close();
}

void Database::close() {
  // Statements first: sqlite3_close refuses while any is unfinalized.
  m_cache.clear();
  if (m_handle != nullptr) {
    sqlite3_close(m_handle);
    m_handle = nullptr;
  }
}

Expected<Database> Database::open(const std::filesystem::path& file, OpenMode mode) {
  sqlite3* handle = nullptr;
  int code = sqlite3_open_v2(file.c_str(), &handle, open_flags(mode), nullptr);
  if (code != SQLITE_OK) {
    std::string message = describe(handle, code);
    sqlite3_close(handle);
    return Error{"cannot open " + file.string() + ": " + message};
  }
  sqlite3_extended_result_codes(handle, 1);
  return Database(handle, file);
}

void Database::set_busy_timeout(std::chrono::milliseconds timeout) {
  auto ms = timeout.count();
  sqlite3_busy_timeout(m_handle, ms > INT_MAX ? INT_MAX : static_cast<int>(ms));
}

Expected<std::string> Database::enable_wal(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::chrono::milliseconds pause{1};
  while (true) {
    Expected<Statement> statement = prepare("PRAGMA journal_mode = WAL");
    if (!statement) {
      return Error{statement.error()};
    }
    int code = sqlite3_step(statement->m_statement);
    if (code == SQLITE_ROW) {
      return statement->column_text(0);
    }
    if ((code & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= deadline) {
      return error_here(code, "cannot switch to WAL mode");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds{16});
  }
}

Error Database::error_here(int code, std::string_view what) const {
  std::string message = m_file.string() + ": ";
  if (!what.empty()) {
    message += what;
    message += ": ";
  }
  return Error{message + describe(m_handle, code)};
}

Expected<void> Database::exec(std::string_view sql) {
  std::string text(sql);
  char* message = nullptr;
  int code = sqlite3_exec(m_handle, text.c_str(), nullptr, nullptr, &message);
  if (code != SQLITE_OK) {
    std::string detail = message != nullptr ? message : sqlite3_errstr(code);
    sqlite3_free(message);
    return Error{m_file.string() + ": " + detail};
  }
  return {};
}

Expected<std::int64_t> Database::query_int64(std::string_view sql) {
  return query_one(sql, [](StatementRef& row) { return row.column_int64(0); });
}

Expected<std::string> Database::query_text(std::string_view sql) {
  return query_one(sql, [](StatementRef& row) { return row.column_text(0); });
}

Expected<Statement> Database::prepare(std::string_view sql) {
  sqlite3_stmt* statement = nullptr;
  int code = sqlite3_prepare_v3(m_handle, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                &statement, nullptr);
  if (code != SQLITE_OK) {
    return error_here(code, "cannot prepare '" + std::string(sql) + "'");
  }
  return Statement(statement);
}

Expected<CachedStatement> Database::cached(std::string_view sql) {
  auto found = m_cache.find(std::string(sql));
  if (found == m_cache.end()) {
    Expected<Statement> statement = prepare(sql);
    if (!statement) {
      return Error{statement.error()};
    }
    found = m_cache.emplace(std::string(sql), std::move(statement).value()).first;
  }
  return CachedStatement(found->second.m_statement);
}

Expected<Transaction> Database::begin(TransactionKind kind) {
  Expected<CachedStatement> statement = cached(kind == TransactionKind::immediate ? "BEGIN IMMEDIATE" : "BEGIN");
  if (!statement) {
    return Error{statement.error()};
  }
  Expected<void> begun = statement->run();
  if (!begun) {
    return Error{begun.error()};
  }
  return Transaction(this);
}

Expected<ForeignKeysOff> Database::foreign_keys_off() {
  if (Expected<void> done = exec("PRAGMA foreign_keys = OFF"); !done) {
    return Error{done.error()};
  }
  return ForeignKeysOff(this);
}

ForeignKeysOff::ForeignKeysOff(ForeignKeysOff&& other) noexcept : m_database(other.m_database) {
  other.m_database = nullptr;
}

ForeignKeysOff::~ForeignKeysOff() {
  if (m_database != nullptr) {
    // Fails only inside a transaction, which the guard outlives by design.
    (void)m_database->exec("PRAGMA foreign_keys = ON");
  }
}

void Database::defer_checkpoints() {
  sqlite3_db_config(m_handle, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_wal_autocheckpoint(m_handle, 0);
}

BackgroundCheckpoint::BackgroundCheckpoint(std::filesystem::path file) : m_file(std::move(file)) {
  m_thread = std::thread([this] {
    Expected<Database> database = Database::open(m_file, OpenMode::read_write);
    if (database) {
      database->defer_checkpoints(); // this one, not another on close
      database->set_busy_timeout(std::chrono::seconds(30));
      // A read opens the log (and rebuilds its index if no other
      // connection has it open); before that the connection does not know
      // the database is in WAL mode and the checkpoint does nothing.
      Expected<std::int64_t> read = database->query_int64("SELECT count(*) FROM sqlite_schema");
      if (!read) {
        m_error = read.error();
      } else if (const int code =
                     sqlite3_wal_checkpoint_v2(database->m_handle, "main", SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
                 code != SQLITE_OK) {
        m_error = database->error_here(code, "cannot checkpoint the log").message;
      }
    } else {
      m_error = database.error();
    }
    m_done.store(true, std::memory_order_release);
  });
}

BackgroundCheckpoint::~BackgroundCheckpoint() {
  if (m_thread.joinable()) {
    m_thread.join();
  }
}

Expected<void> BackgroundCheckpoint::wait() {
  if (m_thread.joinable()) {
    m_thread.join();
  }
  if (!m_error.empty()) {
    return Error{m_error};
  }
  return {};
}

std::int64_t Database::changes() const {
  return sqlite3_changes64(m_handle);
}

std::int64_t Database::last_insert_rowid() const {
  return sqlite3_last_insert_rowid(m_handle);
}

} // namespace kiln::core::sqlite
