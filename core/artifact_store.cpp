#include "core/artifact_store.hpp"

#include "core/hash.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

namespace kiln::core {

namespace fs = std::filesystem;

namespace {

// Large enough that a read and a write cost little next to hashing the
// chunk, small enough that memory stays flat and the chunk stays in cache.
constexpr std::size_t k_chunk_size = std::size_t{1} << 20;

std::string errno_text(int error) {
  return std::error_code(error, std::generic_category()).message();
}

/// A file descriptor closed on scope exit.
class Fd {
public:
  explicit Fd(int fd) : m_fd(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { close(); }

  int get() const { return m_fd; }
  bool ok() const { return m_fd >= 0; }
  /// Closes now, reporting close's errno (0 on success).
  int close() {
    int error = 0;
    if (m_fd >= 0 && ::close(m_fd) != 0) {
      error = errno;
    }
    m_fd = -1;
    return error;
  }

private:
  int m_fd = -1;
};

/// Copies everything from `in` to `out`, hashing it; returns the size.
/// `what` names the file read, `where` the file written, for errors.
Expected<std::int64_t> copy_hashing(int in, int out, Sha256& hasher, const fs::path& what, const fs::path& where) {
  std::unique_ptr<char[]> buffer(new char[k_chunk_size]);
  std::int64_t total = 0;
  for (;;) {
    ssize_t got = ::read(in, buffer.get(), k_chunk_size);
    if (got < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Error{"cannot read " + what.string() + ": " + errno_text(errno)};
    }
    if (got == 0) {
      return total;
    }
    hasher.update(buffer.get(), static_cast<std::size_t>(got));
    for (ssize_t written = 0; written < got;) {
      ssize_t n = ::write(out, buffer.get() + written, static_cast<std::size_t>(got - written));
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return Error{"cannot write " + where.string() + ": " + errno_text(errno)};
      }
      written += n;
    }
    total += got;
  }
}

bool is_lower_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

/// Lexically normal, without a trailing separator ("/a/b/" -> "/a/b").
fs::path clean(const fs::path& path) {
  fs::path normal = path.lexically_normal();
  if (!normal.has_filename() && normal.has_relative_path()) {
    normal = normal.parent_path();
  }
  return normal;
}

/// `path` is `base` or below it; both clean.
bool is_within(const fs::path& path, const fs::path& base) {
  auto p = path.begin();
  for (auto b = base.begin(); b != base.end(); ++b, ++p) {
    if (p == path.end() || *p != *b) {
      return false;
    }
  }
  return true;
}

/// `path` relative to `base` ('/'-separated, "" for base itself); `path` is within `base`.
std::string relative_text(const fs::path& path, const fs::path& base) {
  fs::path relative = path.lexically_relative(base);
  std::string text = relative.generic_string();
  return text == "." ? std::string() : text;
}

std::string join_logical(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

/// What collect_artifact_files needs to know for every check.
struct Collector {
  /// As given, for messages.
  fs::path workdir;
  /// Symlinks resolved.
  fs::path real_workdir;
  std::vector<ArtifactFile> files;
  /// Real directories on the way down, to refuse a symlink cycle.
  std::vector<fs::path> descent;

  Error outside_by_symlink(const std::string& shown, const fs::path& target) const {
    return Error{"'" + shown + "' is a symlink to " + target.string() + ", outside the step's workdir " +
                 workdir.string()};
  }

  /// Adds `real` (a path with symlinks resolved, inside the workdir), shown
  /// to users as `shown` and recorded under `logical`.
  Expected<void> add(const fs::path& real, const std::string& shown, const std::string& logical) {
    std::error_code error;
    fs::file_status status = fs::status(real, error);
    if (error && error != std::errc::no_such_file_or_directory) {
      return Error{"cannot read '" + shown + "': " + error.message()};
    }
    switch (status.type()) {
    case fs::file_type::not_found: return Error{"'" + shown + "' does not exist"};
    case fs::file_type::regular: files.push_back(ArtifactFile{real, logical}); return {};
    case fs::file_type::directory: return add_directory(real, shown, logical);
    default: return Error{"'" + shown + "' is not a regular file or directory"};
    }
  }

  Expected<void> add_directory(const fs::path& real, const std::string& shown, const std::string& logical) {
    if (std::find(descent.begin(), descent.end(), real) != descent.end()) {
      return Error{"'" + shown + "' leads back to a directory that contains it (a symlink cycle)"};
    }
    descent.push_back(real);
    std::error_code error;
    std::vector<std::string> names;
    for (fs::directory_iterator it(real, error), end; !error && it != end; it.increment(error)) {
      names.push_back(it->path().filename().string());
    }
    if (error) {
      return Error{"cannot list '" + shown + "': " + error.message()};
    }
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      fs::path entry = real / name;
      std::string entry_shown = shown.empty() || shown == "." ? name : shown + "/" + name;
      std::string entry_logical = join_logical(logical, name);
      fs::file_status link = fs::symlink_status(entry, error);
      if (error) {
        return Error{"cannot read '" + entry_shown + "': " + error.message()};
      }
      fs::path target = entry;
      if (link.type() == fs::file_type::symlink) {
        target = fs::weakly_canonical(entry, error);
        if (error) {
          return Error{"cannot resolve '" + entry_shown + "': " + error.message()};
        }
        if (!is_within(target, real_workdir)) {
          return outside_by_symlink(entry_shown, target);
        }
      }
      if (Expected<void> added = add(target, entry_shown, entry_logical); !added) {
        return added;
      }
    }
    descent.pop_back();
    return {};
  }
};

} // namespace

Expected<std::vector<ArtifactFile>> collect_artifact_files(const fs::path& workdir, std::string_view path) {
  if (!workdir.is_absolute()) {
    return Error{"the step's workdir " + workdir.string() + " is not an absolute path"};
  }
  std::string shown(path);
  std::error_code error;
  Collector collector;
  collector.workdir = workdir;
  // The workdir itself may be reached through symlinks: containment is
  // decided on real paths.
  collector.real_workdir = fs::canonical(workdir, error);
  if (error) {
    return Error{"the step's workdir " + workdir.string() + " cannot be read: " + error.message()};
  }

  fs::path given(shown);
  fs::path normal_workdir = clean(workdir);
  fs::path lexical = clean(given.is_absolute() ? given : workdir / given);
  // An absolute path may name the workdir by either spelling.
  fs::path base;
  if (is_within(lexical, normal_workdir)) {
    base = normal_workdir;
  } else if (is_within(lexical, collector.real_workdir)) {
    base = collector.real_workdir;
  } else {
    return Error{"'" + shown + "' is outside the step's workdir " + workdir.string()};
  }
  std::string logical = relative_text(lexical, base);

  // Symlinks on the way (the path itself or a directory above it, inside the
  // workdir) must not lead out of it.
  fs::path real = fs::weakly_canonical(lexical, error);
  if (error) {
    return Error{"cannot resolve '" + shown + "': " + error.message()};
  }
  if (!is_within(real, collector.real_workdir)) {
    return collector.outside_by_symlink(shown, real);
  }
  if (Expected<void> added = collector.add(real, shown, logical); !added) {
    return Error{added.error()};
  }
  std::sort(collector.files.begin(), collector.files.end(),
            [](const ArtifactFile& a, const ArtifactFile& b) { return a.logical_path < b.logical_path; });
  return std::move(collector.files);
}

// ---- BlobStore ----

fs::path BlobStore::path_of(std::string_view sha256) const {
  std::string hash(sha256);
  if (hash.size() < 3) {
    return m_root / "sha256" / hash;
  }
  return m_root / "sha256" / hash.substr(0, 2) / hash.substr(2);
}

bool BlobStore::contains(std::string_view sha256) const {
  std::error_code ignored;
  return fs::is_regular_file(path_of(sha256), ignored);
}

Expected<StagedBlob> BlobStore::stage(const fs::path& file) {
  Fd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.ok()) {
    return Error{"cannot open " + file.string() + ": " + errno_text(errno)};
  }
  // Read once, front to back: lets the kernel read ahead further.
  (void)::posix_fadvise(in.get(), 0, 0, POSIX_FADV_SEQUENTIAL);

  fs::path temp_dir = m_root / "tmp";
  std::error_code error;
  fs::create_directories(temp_dir, error);
  if (error) {
    return Error{"cannot create " + temp_dir.string() + ": " + error.message()};
  }
  StagedBlob staged;
  try {
    staged.temp = temp_dir / (random_hex_id() + ".tmp");
    Fd out(::open(staged.temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!out.ok()) {
      return Error{"cannot create " + staged.temp.string() + ": " + errno_text(errno)};
    }
    Sha256 hasher;
    Expected<std::int64_t> size = copy_hashing(in.get(), out.get(), hasher, file, staged.temp);
    // No fsync: it would cost more than the copy (a 1 GB artifact waits for
    // the disk), and a crash loses little. The blob's row is written only
    // after the rename, in a later commit; what a power cut can leave is a
    // row naming a blob whose content never reached the disk. copy_out
    // detects that by hash, and staging the same content again repairs it.
    // A killed process (not a power cut) loses nothing: the page cache
    // survives it.
    int close_error = out.close();
    if (!size) {
      discard(staged);
      return Error{size.error()};
    }
    if (close_error != 0) {
      discard(staged);
      return Error{"cannot write " + staged.temp.string() + ": " + errno_text(close_error)};
    }
    staged.size = *size;
    staged.sha256 = hasher.finish();
  } catch (const std::exception& failure) {
    discard(staged);
    return Error{"staging " + file.string() + ": " + failure.what()};
  }
  return staged;
}

Expected<void> BlobStore::commit(const StagedBlob& staged) {
  fs::path target = path_of(staged.sha256);
  std::error_code error;
  if (fs::exists(target, error)) {
    discard(staged);
    return {};
  }
  fs::create_directories(target.parent_path(), error);
  if (error) {
    discard(staged);
    return Error{"cannot create " + target.parent_path().string() + ": " + error.message()};
  }
  if (::rename(staged.temp.c_str(), target.c_str()) != 0) {
    int rename_error = errno;
    discard(staged);
    return Error{"cannot move " + staged.temp.string() + " to " + target.string() + ": " + errno_text(rename_error)};
  }
  return {};
}

void BlobStore::discard(const StagedBlob& staged) {
  if (!staged.temp.empty()) {
    ::unlink(staged.temp.c_str());
  }
}

Expected<void> BlobStore::copy_out(std::string_view sha256, const fs::path& dest) const {
  fs::path source = path_of(sha256);
  Fd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.ok()) {
    if (errno == ENOENT) {
      return Error{"artifact " + std::string(sha256) + " is missing from the store (" + source.string() + ")"};
    }
    return Error{"cannot open " + source.string() + ": " + errno_text(errno)};
  }
  (void)::posix_fadvise(in.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  fs::path temp;
  try {
    temp = dest.parent_path() / ("." + dest.filename().string() + "." + random_hex_id() + ".tmp");
    Fd out(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!out.ok()) {
      return Error{"cannot create " + temp.string() + ": " + errno_text(errno)};
    }
    Sha256 hasher;
    Expected<std::int64_t> size = copy_hashing(in.get(), out.get(), hasher, source, temp);
    int close_error = out.close();
    if (!size) {
      ::unlink(temp.c_str());
      return Error{size.error()};
    }
    if (close_error != 0) {
      ::unlink(temp.c_str());
      return Error{"cannot write " + temp.string() + ": " + errno_text(close_error)};
    }
    std::string actual = hasher.finish();
    if (actual != sha256) {
      ::unlink(temp.c_str());
      return Error{"artifact " + std::string(sha256) + " in the store is damaged: its content hashes to " + actual};
    }
  } catch (const std::exception& failure) {
    if (!temp.empty()) {
      ::unlink(temp.c_str());
    }
    return Error{"copying artifact " + std::string(sha256) + ": " + failure.what()};
  }
  if (::rename(temp.c_str(), dest.c_str()) != 0) {
    int rename_error = errno;
    ::unlink(temp.c_str());
    return Error{"cannot move " + temp.string() + " to " + dest.string() + ": " + errno_text(rename_error)};
  }
  return {};
}

Expected<void> BlobStore::remove(std::string_view sha256) {
  fs::path path = path_of(sha256);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error{"cannot remove " + path.string() + ": " + errno_text(errno)};
  }
  return {};
}

Expected<std::vector<std::string>> BlobStore::list() const {
  std::vector<std::string> hashes;
  fs::path top = m_root / "sha256";
  std::error_code error;
  if (!fs::exists(top, error)) {
    return hashes;
  }
  for (fs::directory_iterator dir(top, error), end; !error && dir != end; dir.increment(error)) {
    std::string prefix = dir->path().filename().string();
    if (prefix.size() != 2 || !is_lower_hex(prefix) || !dir->is_directory()) {
      continue;
    }
    std::error_code inner;
    for (fs::directory_iterator file(dir->path(), inner); !inner && file != end; file.increment(inner)) {
      std::string rest = file->path().filename().string();
      if (rest.size() == 62 && is_lower_hex(rest)) {
        hashes.push_back(prefix + rest);
      }
    }
    if (inner) {
      return Error{"cannot list " + dir->path().string() + ": " + inner.message()};
    }
  }
  if (error) {
    return Error{"cannot list " + top.string() + ": " + error.message()};
  }
  std::sort(hashes.begin(), hashes.end());
  return hashes;
}

std::vector<fs::path> BlobStore::stale_temps(std::int64_t now_ms, std::int64_t min_age_ms) const {
  std::vector<fs::path> stale;
  std::error_code error;
  for (fs::directory_iterator it(m_root / "tmp", error), end; !error && it != end; it.increment(error)) {
    struct stat info {};
    if (::lstat(it->path().c_str(), &info) != 0 || !S_ISREG(info.st_mode)) {
      continue;
    }
    std::int64_t modified_ms = static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1000 +
                               static_cast<std::int64_t>(info.st_mtim.tv_nsec) / 1000000;
    if (now_ms - modified_ms > min_age_ms) {
      stale.push_back(it->path());
    }
  }
  std::sort(stale.begin(), stale.end());
  return stale;
}

} // namespace kiln::core
