#pragma once
// A step's declared inputs, expanded to files and content-hashed, for
// skip-unchanged caching. Hashing goes through a memo of what each file's
// stat(2) said when its content was last read (size, mtime, ctime, inode,
// device): while that stamp is unchanged, the content is taken as unchanged
// and not reread, so a no-op rerun costs one stat per input file. This is
// make's and git's index model, with git's guard against "racy clean"
// entries: a file whose mtime or ctime is within k_racy_window of the moment
// it was read may have been written again within the same timestamp tick
// without changing its stamp, so its memo entry is not trusted and the
// content is read again.
//
// The memo is an interface: the tracker store persists it between runs,
// InMemoryHashMemo holds it for one run and tells the store what changed.

#include "core/expected.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace kiln::core {

/// What stat(2) says about a file's identity and last change. Equal stamps
/// mean the content is taken as unchanged (outside the racy window).
struct FileStamp {
  std::int64_t size = 0;
  /// Nanoseconds since the Unix epoch (st_mtim).
  std::int64_t mtime_ns = 0;
  /// Nanoseconds since the Unix epoch (st_ctim); moves on every write,
  /// chmod, rename and utimensat, and cannot be set back by the user.
  std::int64_t ctime_ns = 0;
  std::int64_t inode = 0;
  std::int64_t device = 0;

  bool operator==(const FileStamp&) const = default;
};

/// Files and their stamps as bytes, and back (a replay basis keeps them in
/// the store): a format tag, then per file its path's length, the path and
/// the five stamp fields, integers in the machine's byte order (the bytes
/// never leave the store of the machine that wrote them).
struct StampedFiles {
  std::vector<std::string> paths;
  /// One per path.
  std::vector<FileStamp> stamps;
};
std::string encode_stamps(const StampedFiles& files);
/// An error for bytes encode_stamps did not write.
Expected<StampedFiles> decode_stamps(std::string_view bytes);

/// A file's content hash and the stamp it had when the content was read.
struct MemoEntry {
  FileStamp stamp;
  /// Lower-case hex SHA-256 of the content.
  std::string sha256;
  /// Wall clock, nanoseconds since the Unix epoch, taken just before the
  /// content was read.
  std::int64_t hashed_at_ns = 0;

  bool operator==(const MemoEntry&) const = default;
};

/// Where known hashes are kept between runs. Keys are absolute, lexically
/// normal paths (no ".", "..", "//" or trailing '/'), symlinks not resolved.
class HashMemo {
public:
  virtual ~HashMemo() = default;
  /// The entry for `path`, or null. Valid until the next remember().
  virtual const MemoEntry* find(const std::string& path) const = 0;
  virtual void remember(const std::string& path, const MemoEntry& entry) = 0;
};

/// Memo entries as the store keeps them: by path, sorted, unique.
using MemoEntries = std::vector<std::pair<std::string, MemoEntry>>;

/// The memo of one run: entries loaded from the store plus those remembered
/// since, with the changed ones listed so only they are written back. The
/// loaded entries stay in one sorted array, searched by bisection: a rerun
/// of 10,000 cached steps loads and looks up some 20,000 of them, and a
/// hash map of as many nodes cost more to build and to probe (cache misses
/// on every node) than the bisection does.
class InMemoryHashMemo final : public HashMemo {
public:
  InMemoryHashMemo() = default;
  /// Starts from entries loaded from the store (sorted here when they are
  /// not); they do not count as changed. Paths must be unique.
  explicit InMemoryHashMemo(MemoEntries loaded);

  const MemoEntry* find(const std::string& path) const override;
  /// Remembering an entry equal to the one held changes nothing.
  void remember(const std::string& path, const MemoEntry& entry) override;

  /// Entries remembered since construction or the last clear_changed(), the
  /// latest one per path, sorted by path.
  std::vector<std::pair<std::string, MemoEntry>> changed() const;
  /// Called once the changed entries are stored.
  void clear_changed() { m_changed.clear(); }
  std::size_t size() const { return m_loaded.size() + m_added; }

private:
  MemoEntries m_loaded;
  /// Remembered since construction, over the loaded ones.
  std::unordered_map<std::string, MemoEntry> m_remembered;
  /// Remembered paths not among the loaded ones.
  std::size_t m_added = 0;
  std::unordered_set<std::string> m_changed;
};

/// How far (in nanoseconds) a file's mtime and ctime must lie before the
/// moment its content was read for the memo entry to be trusted: one second
/// covers filesystems with whole-second timestamps.
inline constexpr std::int64_t k_racy_window_ns = 1'000'000'000;

enum class FileType { regular, directory, symlink, other };
enum class FollowSymlinks { no, yes };

/// One stat(2) or lstat(2) of a path.
struct FileStatus {
  /// errno of the failed call; 0 when it succeeded and the fields are set.
  int error = 0;
  FileType type = FileType::other;
  FileStamp stamp;
};

/// stat(2) of an absolute path, as FileHasher::probe takes it (uncounted).
FileStatus stat_path(const std::string& path, FollowSymlinks follow = FollowSymlinks::yes);

/// stat(2)s of paths known beforehand, taken in order on a second thread
/// while the caller does other work. For a span in which nothing the run
/// does changes files: kiln run's decisions made before any step starts,
/// where 20,000 stats of a 10,000-step rerun otherwise wait on the critical
/// path. The thread allocates nothing (the table is sized up front) and
/// shares nothing else: each status is published by one atomic count.
class StatPrefetch {
public:
  /// `paths`: absolute and lexically normal, best in the order they will
  /// be asked for.
  explicit StatPrefetch(std::vector<std::string> paths);
  /// Stops the thread (what it has not reached is not taken) and joins it.
  ~StatPrefetch();
  StatPrefetch(const StatPrefetch&) = delete;
  StatPrefetch& operator=(const StatPrefetch&) = delete;

  std::size_t size() const { return m_paths.size(); }
  const std::string& path(std::size_t i) const { return m_paths[i]; }
  /// The status of path(i), or null while it is not taken yet.
  const FileStatus* status(std::size_t i) const {
    return i < m_taken.load(std::memory_order_acquire) ? &m_status[i] : nullptr;
  }

private:
  std::vector<std::string> m_paths;
  std::vector<FileStatus> m_status;
  std::atomic<std::size_t> m_taken{0};
  std::atomic<bool> m_stop{false};
  std::thread m_thread;
};

/// `workdir` made absolute (from the current directory) and lexically normal.
std::string normal_workdir(const std::filesystem::path& workdir);

/// The absolute, lexically normal path that `path` (absolute, or relative
/// to the absolute, lexically normal `workdir`) names: how a plain input
/// pattern or a declared output is probed.
std::string path_in(const std::string& workdir, std::string_view path);

/// Content hashes of files, through a memo (see the top of this file).
/// Content is streamed in 64 KiB chunks, never loaded whole.
class FileHasher {
public:
  /// Counters for tests and benchmarks.
  struct Stats {
    /// stat, lstat and fstat calls.
    std::int64_t stat_calls = 0;
    /// Files whose content was read (memo misses).
    std::int64_t files_read = 0;
    std::int64_t bytes_read = 0;
    /// Memo misses not read because reading was put off.
    std::int64_t reads_put_off = 0;
  };

  /// Whether a memo miss reads the file (the default) or is put off: the
  /// hash fails ("not read yet") and counts in Stats::reads_put_off. A
  /// decision made while the store's write lock is held must not read a
  /// large file.
  enum class Reading { now, put_off };

  /// `now_ns` is the wall clock in nanoseconds since the Unix epoch (the
  /// clock file timestamps use); tests inject a fixed one.
  explicit FileHasher(HashMemo& memo, std::function<std::int64_t()> now_ns = wall_clock_ns);

  /// SHA-256 hex of a regular file's content (symlinks followed), or an
  /// error naming the path and the OS reason. `absolute_path` is normalised
  /// lexically for the memo key. A memo hit costs exactly one stat.
  Expected<std::string> hash_file(const std::string& absolute_path);

  /// stat(2) (or lstat(2) with FollowSymlinks::no) of an absolute, lexically
  /// normal path; counted in stats().
  FileStatus probe(const std::string& path, FollowSymlinks follow = FollowSymlinks::yes);
  /// hash_file for a path whose probe() was just taken and found a regular
  /// file, saving the second stat. The error is only the reason ("permission
  /// denied"): the caller knows the path.
  Expected<std::string> hash_probed(const std::string& path, const FileStatus& status);

  const Stats& stats() const { return m_stats; }
  void set_reading(Reading reading) { m_reading = reading; }
  /// probe() answers a path among `prefetch`'s [begin, end) with the status
  /// taken there, when it is taken already; null: none.
  void set_prefetched(const StatPrefetch* prefetch, std::size_t begin = 0, std::size_t end = 0) {
    m_prefetch = prefetch;
    m_prefetch_begin = begin;
    m_prefetch_end = end;
  }

  /// CLOCK_REALTIME in nanoseconds since the Unix epoch.
  static std::int64_t wall_clock_ns();

private:
  HashMemo& m_memo;
  std::function<std::int64_t()> m_now_ns;
  Stats m_stats;
  Reading m_reading = Reading::now;
  const StatPrefetch* m_prefetch = nullptr;
  std::size_t m_prefetch_begin = 0;
  std::size_t m_prefetch_end = 0;
  /// The read buffer, allocated on the first memo miss and reused.
  std::vector<char> m_buffer;
};

/// One file an input pattern resolved to, or the reason a pattern has none.
struct InputFile {
  /// The pattern as declared.
  std::string pattern;
  /// Relative to the workdir when inside it, else absolute; '/'-separated,
  /// lexically normal ("data/a.csv", not "./data//a.csv"). For a pattern
  /// with no file, the pattern's own normal form.
  std::string path;
  /// Lower-case hex SHA-256 of the content; "" when there is a problem.
  std::string sha256;
  /// "" or why there is no hash: "no such file or directory", "matches no
  /// file", "permission denied", "directory has no files", ...
  std::string problem;

  bool operator==(const InputFile&) const = default;
};

/// Expands and hashes a step's declared inputs. Each pattern, relative to
/// `workdir` or absolute, and normalised lexically ("a/../b" is "b"), is:
///  - a file (a symlink to one is hashed through it);
///  - a directory (or a symlink to one): every regular file under it,
///    recursively, hidden ones included; symlinked files below it are
///    hashed through the link, symlinked directories below it are not
///    entered;
///  - a glob (see is_glob): `*`, `?` and `[...]` match within one path
///    segment (fnmatch(3)) and never match a leading '.' unless the segment
///    starts with one, like the shell; a `**` segment matches zero or more
///    whole directories, entering neither hidden nor symlinked ones, and as
///    the last segment stands for `**/*`. A glob selects regular files (and
///    symlinks to them) only: a directory it matches is not expanded.
/// The result lists the patterns in order, each one's files sorted by path
/// with no duplicates. A pattern with no file yields one InputFile with a
/// problem ("no such file or directory" for a plain path, "matches no file"
/// for a glob), so a cache key can say which input is missing; a file or
/// directory that cannot be read or listed yields one under its own path.
/// Inside directories and globs, entries that vanish, dangling symlinks and
/// special files (fifos, sockets, devices) are skipped: they have no
/// content. An empty pattern is a problem, not the whole workdir. A relative
/// `workdir` is taken from the current directory.
std::vector<InputFile> resolve_inputs(const std::filesystem::path& workdir, const std::vector<std::string>& patterns,
                                      FileHasher& hasher);

/// True when the pattern contains glob characters (`*`, `?` or `[`).
bool is_glob(std::string_view pattern);

} // namespace kiln::core
