#include "core/input_files.hpp"

#include "core/hash.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace kiln::core {

namespace {

constexpr std::string_view k_stamps_format = "kiln-stamps-1\n";

} // namespace

std::string encode_stamps(const StampedFiles& files) {
  std::string out(k_stamps_format);
  for (std::size_t i = 0; i < files.paths.size(); ++i) {
    const std::string& path = files.paths[i];
    const FileStamp& stamp = files.stamps[i];
    const auto size = static_cast<std::uint32_t>(path.size());
    const std::int64_t fields[] = {stamp.size, stamp.mtime_ns, stamp.ctime_ns, stamp.inode, stamp.device};
    out.append(reinterpret_cast<const char*>(&size), sizeof size);
    out += path;
    out.append(reinterpret_cast<const char*>(fields), sizeof fields);
  }
  return out;
}

Expected<StampedFiles> decode_stamps(std::string_view bytes) {
  if (!bytes.starts_with(k_stamps_format)) {
    return Error{"not a list of file stamps"};
  }
  bytes.remove_prefix(k_stamps_format.size());
  StampedFiles files;
  // Sized for paths of 24 bytes or more: a 10,000-step basis is decoded on
  // the replay's critical path.
  const std::size_t room = bytes.size() / (sizeof(std::uint32_t) + 5 * sizeof(std::int64_t) + 24) + 1;
  files.paths.reserve(room);
  files.stamps.reserve(room);
  while (!bytes.empty()) {
    std::uint32_t size = 0;
    std::int64_t fields[5];
    if (bytes.size() < sizeof size) {
      return Error{"a list of file stamps cut short"};
    }
    std::memcpy(&size, bytes.data(), sizeof size);
    bytes.remove_prefix(sizeof size);
    if (bytes.size() < size + sizeof fields) {
      return Error{"a list of file stamps cut short"};
    }
    files.paths.emplace_back(bytes.substr(0, size));
    std::memcpy(fields, bytes.data() + size, sizeof fields);
    bytes.remove_prefix(size + sizeof fields);
    files.stamps.push_back(FileStamp{fields[0], fields[1], fields[2], fields[3], fields[4]});
  }
  return files;
}

namespace {

// Small enough that memory stays flat and the chunk stays in cache, large
// enough that the read calls cost little next to hashing.
constexpr std::size_t k_chunk_size = std::size_t{64} * 1024;

/// The OS's text for an errno, lower-case first ("permission denied").
std::string os_reason(int error) {
  std::string text = std::error_code(error, std::generic_category()).message();
  if (!text.empty()) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

std::int64_t nanoseconds(const timespec& time) {
  return static_cast<std::int64_t>(time.tv_sec) * 1'000'000'000 + time.tv_nsec;
}

FileStamp stamp_of(const struct stat& st) {
  FileStamp stamp;
  stamp.size = static_cast<std::int64_t>(st.st_size);
  stamp.mtime_ns = nanoseconds(st.st_mtim);
  stamp.ctime_ns = nanoseconds(st.st_ctim);
  stamp.inode = static_cast<std::int64_t>(st.st_ino);
  stamp.device = static_cast<std::int64_t>(st.st_dev);
  return stamp;
}

FileType type_of(mode_t mode) {
  if (S_ISREG(mode)) {
    return FileType::regular;
  }
  if (S_ISDIR(mode)) {
    return FileType::directory;
  }
  if (S_ISLNK(mode)) {
    return FileType::symlink;
  }
  return FileType::other;
}

/// A file descriptor closed on scope exit.
class Fd {
public:
  explicit Fd(int fd) : m_fd(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
  }
  int get() const { return m_fd; }

private:
  int m_fd = -1;
};

/// Whether the memo entry may stand for the content of a file with `stamp`:
/// the stamp is unchanged and the last change was well before the content
/// was read, so a write within the same timestamp tick cannot hide behind
/// an equal stamp.
bool trusted(const MemoEntry& entry, const FileStamp& stamp) {
  return entry.stamp == stamp && entry.hashed_at_ns - stamp.mtime_ns > k_racy_window_ns &&
         entry.hashed_at_ns - stamp.ctime_ns > k_racy_window_ns;
}

/// The lexically normal form of an absolute path: no empty, "." or ".."
/// segments and no trailing '/' ("/a/./b//../c/" is "/a/c"; "/.." is "/").
std::string normalize_absolute(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  std::size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') {
      ++i;
    }
    std::size_t end = path.find('/', i);
    if (end == std::string_view::npos) {
      end = path.size();
    }
    const std::string_view segment = path.substr(i, end - i);
    i = end;
    if (segment.empty() || segment == ".") {
      continue;
    }
    if (segment == "..") {
      out.erase(std::min(out.size(), out.rfind('/')));
      continue;
    }
    out += '/';
    out += segment;
  }
  if (out.empty()) {
    out = "/";
  }
  return out;
}

/// A segment of a glob, after lexical normalisation.
struct GlobSegment {
  std::string text;
  /// Holds glob characters from the pattern; the workdir's segments are
  /// always literal, whatever characters they hold.
  bool wildcard = false;
};

/// The normalised segments of `pattern` (absolute, or relative to the
/// normal absolute `workdir`).
std::vector<GlobSegment> glob_segments(const std::string& workdir, std::string_view pattern) {
  std::vector<GlobSegment> segments;
  const auto add = [&segments](std::string_view path, bool from_pattern) {
    std::size_t i = 0;
    while (i <= path.size()) {
      std::size_t end = path.find('/', i);
      if (end == std::string_view::npos) {
        end = path.size();
      }
      const std::string_view segment = path.substr(i, end - i);
      i = end + 1;
      if (segment.empty() || segment == ".") {
        continue;
      }
      if (segment == "..") {
        if (!segments.empty()) {
          segments.pop_back();
        }
        continue;
      }
      segments.push_back(GlobSegment{std::string(segment), from_pattern && is_glob(segment)});
    }
  };
  if (pattern.empty() || pattern[0] != '/') {
    add(workdir, false);
  }
  add(pattern, true);
  return segments;
}

std::string join(const std::string& directory, std::string_view name) {
  std::string path;
  path.reserve(directory.size() + 1 + name.size());
  path += directory;
  if (directory != "/") {
    path += '/';
  }
  path += name;
  return path;
}

bool is_hidden(std::string_view name) {
  return !name.empty() && name[0] == '.';
}

struct DirEntry {
  std::string name;
  /// readdir's d_type: DT_REG, DT_DIR, DT_LNK, DT_UNKNOWN (filesystems
  /// that do not say), ...
  unsigned char type = DT_UNKNOWN;
};

/// The entries of a directory, without "." and ".."; errno on failure, else 0.
int list_directory(const std::string& directory, std::vector<DirEntry>& entries) {
  entries.clear();
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) {
    return errno;
  }
  int error = 0;
  while (true) {
    errno = 0;
    const dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      error = errno;
      break;
    }
    const std::string_view name = entry->d_name;
    if (name == "." || name == "..") {
      continue;
    }
    entries.push_back(DirEntry{std::string(name), entry->d_type});
  }
  ::closedir(dir);
  return error;
}

/// Errors that mean a path is simply not there (any more): skipped inside
/// directories and globs rather than reported.
bool is_absent(int error) {
  return error == ENOENT || error == ENOTDIR;
}

/// Expands one pattern into `m_out`.
class PatternResolver {
public:
  PatternResolver(FileHasher& hasher, const std::string& workdir, const std::string& pattern,
                  std::vector<InputFile>& out)
      : m_hasher(hasher), m_workdir(workdir), m_pattern(pattern), m_out(out) {}

  void resolve() {
    const std::size_t first = m_out.size();
    if (m_pattern.empty()) {
      add_problem(".", "empty pattern");
      return;
    }
    const std::string absolute = path_in(m_workdir, m_pattern);
    if (is_glob(m_pattern)) {
      resolve_glob();
    } else {
      resolve_path(absolute);
    }
    if (m_out.size() == first) {
      add_problem(shown(absolute), is_glob(m_pattern) ? "matches no file" : "directory has no files");
      return;
    }
    std::sort(m_out.begin() + static_cast<std::ptrdiff_t>(first), m_out.end(),
              [](const InputFile& a, const InputFile& b) { return a.path < b.path; });
    m_out.erase(std::unique(m_out.begin() + static_cast<std::ptrdiff_t>(first), m_out.end(),
                            [](const InputFile& a, const InputFile& b) { return a.path == b.path; }),
                m_out.end());
  }

private:
  /// `absolute` as the user would write it: relative to the workdir when
  /// inside it.
  std::string shown(const std::string& absolute) const {
    if (absolute == m_workdir) {
      return ".";
    }
    if (m_workdir == "/") {
      return absolute.substr(1);
    }
    if (absolute.size() > m_workdir.size() && absolute[m_workdir.size()] == '/' &&
        absolute.compare(0, m_workdir.size(), m_workdir) == 0) {
      return absolute.substr(m_workdir.size() + 1);
    }
    return absolute;
  }

  void add_problem(std::string path, std::string problem) {
    m_out.push_back(InputFile{m_pattern, std::move(path), "", std::move(problem)});
  }

  void add_hashed(const std::string& absolute, const FileStatus& status) {
    Expected<std::string> hash = m_hasher.hash_probed(absolute, status);
    if (hash) {
      m_out.push_back(InputFile{m_pattern, shown(absolute), std::move(hash).value(), ""});
    } else {
      add_problem(shown(absolute), hash.error());
    }
  }

  /// A plain pattern: one file, or a whole directory (followed even when
  /// the pattern names a symlink to it).
  void resolve_path(const std::string& absolute) {
    const FileStatus status = m_hasher.probe(absolute);
    if (status.error != 0) {
      add_problem(shown(absolute), os_reason(status.error));
      return;
    }
    switch (status.type) {
    case FileType::regular: add_hashed(absolute, status); return;
    case FileType::directory: walk_directory(absolute); return;
    default: add_problem(shown(absolute), "not a regular file or directory"); return;
    }
  }

  /// Adds the file at `absolute` (through a symlink), met in a listing:
  /// nothing when it is gone, a dangling link, a directory or a special
  /// file; a problem when it cannot be stat'ed for another reason.
  void add_listed_file(const std::string& absolute) {
    const FileStatus status = m_hasher.probe(absolute);
    if (status.error != 0) {
      if (!is_absent(status.error)) {
        add_problem(shown(absolute), os_reason(status.error));
      }
      return;
    }
    if (status.type == FileType::regular) {
      add_hashed(absolute, status);
    }
  }

  /// Lists `directory`; false (after reporting a problem unless it is
  /// simply not there) when it cannot be listed.
  bool list(const std::string& directory, std::vector<DirEntry>& entries) {
    const int error = list_directory(directory, entries);
    if (error != 0) {
      if (!is_absent(error)) {
        add_problem(shown(directory), os_reason(error));
      }
      return false;
    }
    return true;
  }

  /// The type of a listed entry, by d_type or, where the filesystem does
  /// not say, by lstat.
  FileType listed_type(const std::string& absolute, unsigned char d_type) {
    switch (d_type) {
    case DT_REG: return FileType::regular;
    case DT_DIR: return FileType::directory;
    case DT_LNK: return FileType::symlink;
    case DT_UNKNOWN: {
      const FileStatus status = m_hasher.probe(absolute, FollowSymlinks::no);
      return status.error == 0 ? status.type : FileType::other;
    }
    default: return FileType::other;
    }
  }

  /// Every regular file under `directory`, hidden ones included; symlinks
  /// to files followed, symlinked directories not entered.
  void walk_directory(const std::string& directory) {
    std::vector<DirEntry> entries;
    if (!list(directory, entries)) {
      return;
    }
    for (const DirEntry& entry : entries) {
      const std::string path = join(directory, entry.name);
      switch (listed_type(path, entry.type)) {
      case FileType::regular:
      case FileType::symlink: add_listed_file(path); break;
      case FileType::directory: walk_directory(path); break;
      case FileType::other: break;
      }
    }
  }

  /// `directory` and every directory below it that `**` matches: neither
  /// hidden nor reached through a symlink.
  void add_subdirectories(const std::string& directory, std::vector<std::string>& out) {
    out.push_back(directory);
    std::vector<DirEntry> entries;
    if (!list(directory, entries)) {
      return;
    }
    for (const DirEntry& entry : entries) {
      if (is_hidden(entry.name)) {
        continue;
      }
      const std::string path = join(directory, entry.name);
      if (listed_type(path, entry.type) == FileType::directory) {
        add_subdirectories(path, out);
      }
    }
  }

  /// Whether a listed entry is a directory, following a symlink as the
  /// shell does for a wildcard segment.
  bool is_directory(const std::string& absolute, unsigned char d_type) {
    if (d_type == DT_DIR) {
      return true;
    }
    if (d_type != DT_LNK && d_type != DT_UNKNOWN) {
      return false;
    }
    const FileStatus status = m_hasher.probe(absolute);
    return status.error == 0 && status.type == FileType::directory;
  }

  void resolve_glob() {
    std::vector<GlobSegment> segments = glob_segments(m_workdir, m_pattern);
    const auto is_globstar = [](const GlobSegment& segment) { return segment.wildcard && segment.text == "**"; };
    // A trailing "**" stands for "**/*"; repeated "**" are one.
    if (!segments.empty() && is_globstar(segments.back())) {
      segments.push_back(GlobSegment{"*", true});
    }
    segments.erase(
        std::unique(segments.begin(), segments.end(),
                    [&](const GlobSegment& a, const GlobSegment& b) { return is_globstar(a) && is_globstar(b); }),
        segments.end());
    if (segments.empty()) {
      return;
    }

    // The directories reached so far; the literal leading segments are
    // joined without listing anything.
    std::vector<std::string> directories{"/"};
    std::vector<DirEntry> entries;
    for (std::size_t i = 0; i + 1 < segments.size(); ++i) {
      const GlobSegment& segment = segments[i];
      std::vector<std::string> next;
      if (is_globstar(segment)) {
        for (const std::string& directory : directories) {
          add_subdirectories(directory, next);
        }
      } else if (segment.wildcard) {
        for (const std::string& directory : directories) {
          if (!list(directory, entries)) {
            continue;
          }
          for (const DirEntry& entry : entries) {
            const std::string path = join(directory, entry.name);
            if (::fnmatch(segment.text.c_str(), entry.name.c_str(), FNM_PERIOD) == 0 &&
                is_directory(path, entry.type)) {
              next.push_back(path);
            }
          }
        }
      } else {
        for (const std::string& directory : directories) {
          next.push_back(join(directory, segment.text));
        }
      }
      // "a/**/b/**" reaches some directories along more than one way.
      std::sort(next.begin(), next.end());
      next.erase(std::unique(next.begin(), next.end()), next.end());
      directories = std::move(next);
    }

    const GlobSegment& last = segments.back();
    for (const std::string& directory : directories) {
      if (!last.wildcard) {
        add_listed_file(join(directory, last.text));
        continue;
      }
      if (!list(directory, entries)) {
        continue;
      }
      for (const DirEntry& entry : entries) {
        if (entry.type != DT_DIR && ::fnmatch(last.text.c_str(), entry.name.c_str(), FNM_PERIOD) == 0) {
          add_listed_file(join(directory, entry.name));
        }
      }
    }
  }

  FileHasher& m_hasher;
  const std::string& m_workdir;
  const std::string& m_pattern;
  std::vector<InputFile>& m_out;
};

} // namespace

InMemoryHashMemo::InMemoryHashMemo(MemoEntries loaded) : m_loaded(std::move(loaded)) {
  auto by_path = [](const auto& a, const auto& b) { return a.first < b.first; };
  if (!std::is_sorted(m_loaded.begin(), m_loaded.end(), by_path)) {
    std::sort(m_loaded.begin(), m_loaded.end(), by_path);
  }
}

const MemoEntry* InMemoryHashMemo::find(const std::string& path) const {
  if (!m_remembered.empty()) {
    if (const auto found = m_remembered.find(path); found != m_remembered.end()) {
      return &found->second;
    }
  }
  const auto found = std::lower_bound(m_loaded.begin(), m_loaded.end(), path,
                                      [](const auto& entry, const std::string& p) { return entry.first < p; });
  return found == m_loaded.end() || found->first != path ? nullptr : &found->second;
}

void InMemoryHashMemo::remember(const std::string& path, const MemoEntry& entry) {
  const MemoEntry* held = find(path);
  if (held != nullptr && *held == entry) {
    return;
  }
  if (held == nullptr) {
    ++m_added;
  }
  m_remembered.insert_or_assign(path, entry);
  m_changed.insert(path);
}

std::vector<std::pair<std::string, MemoEntry>> InMemoryHashMemo::changed() const {
  std::vector<std::pair<std::string, MemoEntry>> out;
  out.reserve(m_changed.size());
  for (const std::string& path : m_changed) {
    out.emplace_back(path, m_remembered.at(path));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

FileHasher::FileHasher(HashMemo& memo, std::function<std::int64_t()> now_ns)
    : m_memo(memo), m_now_ns(std::move(now_ns)) {}

std::int64_t FileHasher::wall_clock_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return nanoseconds(now);
}

FileStatus stat_path(const std::string& path, FollowSymlinks follow) {
  struct stat st {};
  const int rc = follow == FollowSymlinks::yes ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st);
  if (rc != 0) {
    return FileStatus{errno, FileType::other, FileStamp{}};
  }
  return FileStatus{0, type_of(st.st_mode), stamp_of(st)};
}

StatPrefetch::StatPrefetch(std::vector<std::string> paths) : m_paths(std::move(paths)), m_status(m_paths.size()) {
  m_thread = std::thread([this] {
    for (std::size_t i = 0; i < m_paths.size() && !m_stop.load(std::memory_order_relaxed); ++i) {
      m_status[i] = stat_path(m_paths[i]);
      m_taken.store(i + 1, std::memory_order_release);
    }
  });
}

StatPrefetch::~StatPrefetch() {
  m_stop.store(true, std::memory_order_relaxed);
  m_thread.join();
}

std::string normal_workdir(const std::filesystem::path& workdir) {
  return normalize_absolute(workdir.is_absolute() ? workdir.string() : std::filesystem::absolute(workdir).string());
}

std::string path_in(const std::string& workdir, std::string_view path) {
  return normalize_absolute(!path.empty() && path[0] == '/' ? std::string(path) : workdir + "/" + std::string(path));
}

FileStatus FileHasher::probe(const std::string& path, FollowSymlinks follow) {
  ++m_stats.stat_calls;
  if (m_prefetch != nullptr && follow == FollowSymlinks::yes) {
    for (std::size_t i = m_prefetch_begin; i < m_prefetch_end; ++i) {
      if (m_prefetch->path(i) == path) {
        if (const FileStatus* taken = m_prefetch->status(i)) {
          return *taken;
        }
        break;
      }
    }
  }
  return stat_path(path, follow);
}

Expected<std::string> FileHasher::hash_file(const std::string& absolute_path) {
  if (absolute_path.empty() || absolute_path[0] != '/') {
    return Error{"cannot hash " + absolute_path + ": not an absolute path"};
  }
  const std::string path = normalize_absolute(absolute_path);
  const FileStatus status = probe(path);
  if (status.error != 0) {
    return Error{"cannot read " + path + ": " + os_reason(status.error)};
  }
  Expected<std::string> hash = hash_probed(path, status);
  if (!hash) {
    return Error{"cannot read " + path + ": " + hash.error()};
  }
  return hash;
}

Expected<std::string> FileHasher::hash_probed(const std::string& path, const FileStatus& status) {
  if (status.type != FileType::regular) {
    return Error{status.type == FileType::directory ? "is a directory" : "not a regular file"};
  }
  if (const MemoEntry* known = m_memo.find(path); known != nullptr && trusted(*known, status.stamp)) {
    return known->sha256;
  }
  if (m_reading == Reading::put_off) {
    ++m_stats.reads_put_off;
    return Error{"not read yet"};
  }

  // Taken before reading: a write that lands while the content is read has
  // an mtime after this, inside the racy window of the entry remembered.
  const std::int64_t started = m_now_ns();
  // O_NONBLOCK: should the file have been replaced by a fifo since the
  // stat, open must not wait for a writer.
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) {
    return Error{os_reason(errno)};
  }
  struct stat before {};
  ++m_stats.stat_calls;
  if (::fstat(fd.get(), &before) != 0) {
    return Error{os_reason(errno)};
  }
  if (!S_ISREG(before.st_mode)) {
    return Error{"not a regular file"};
  }

  ++m_stats.files_read;
  if (m_buffer.empty()) {
    m_buffer.resize(k_chunk_size);
  }
  Sha256 sha;
  while (true) {
    const ssize_t n = ::read(fd.get(), m_buffer.data(), m_buffer.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Error{os_reason(errno)};
    }
    if (n == 0) {
      break;
    }
    sha.update(m_buffer.data(), static_cast<std::size_t>(n));
    m_stats.bytes_read += n;
  }
  std::string digest = sha.finish();

  // The stamp remembered is the one of the content read; when the file
  // changed while it was read, nothing is remembered and the next run reads
  // it again.
  struct stat after {};
  ++m_stats.stat_calls;
  const FileStamp stamp = stamp_of(before);
  if (::fstat(fd.get(), &after) == 0 && stamp_of(after) == stamp) {
    m_memo.remember(path, MemoEntry{stamp, digest, started});
  }
  return digest;
}

std::vector<InputFile> resolve_inputs(const std::filesystem::path& workdir, const std::vector<std::string>& patterns,
                                      FileHasher& hasher) {
  const std::string root = normal_workdir(workdir);
  std::vector<InputFile> out;
  out.reserve(patterns.size());
  for (const std::string& pattern : patterns) {
    PatternResolver(hasher, root, pattern, out).resolve();
  }
  return out;
}

bool is_glob(std::string_view pattern) {
  return pattern.find_first_of("*?[") != std::string_view::npos;
}

} // namespace kiln::core
