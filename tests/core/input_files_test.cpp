#include "core/input_files.hpp"
#include "tests/support.hpp"

#include "core/hash.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

using kiln::test::ok;
using kiln::test::TempDir;
using kiln::test::write_file;

namespace fs = std::filesystem;
using namespace kiln::core;

namespace kiln::core {
// So that doctest shows the values of a failed comparison.
inline std::ostream& operator<<(std::ostream& out, const InputFile& file) {
  return out << "{" << file.pattern << ", " << file.path << ", " << file.sha256 << ", " << file.problem << "}";
}
} // namespace kiln::core

namespace {

constexpr std::int64_t k_second_ns = 1'000'000'000;

struct stat stat_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st;
}

std::int64_t ns_of(const timespec& time) {
  return static_cast<std::int64_t>(time.tv_sec) * k_second_ns + time.tv_nsec;
}

/// Sets a file's mtime (and atime); the kernel moves its ctime to now.
void set_mtime(const fs::path& path, std::int64_t mtime_ns) {
  const timespec time{static_cast<time_t>(mtime_ns / k_second_ns), static_cast<long>(mtime_ns % k_second_ns)};
  const timespec times[2] = {time, time};
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

/// A clock well past every file written by the test, so memo entries are
/// out of the racy window.
std::int64_t late_clock() {
  return FileHasher::wall_clock_ns() + 60 * k_second_ns;
}

struct Fixture {
  TempDir temp;
  InMemoryHashMemo memo;
  FileHasher hasher{memo, late_clock};
};

std::vector<std::string> paths_of(const std::vector<InputFile>& files) {
  std::vector<std::string> paths;
  for (const InputFile& file : files) {
    paths.push_back(file.path);
  }
  return paths;
}

/// A workdir with files at several depths, hidden ones, and a directory
/// that is not the workdir's.
struct Tree : Fixture {
  fs::path work = temp.path() / "work";

  Tree() {
    write_file(work / "top.txt", "top");
    write_file(work / "data" / "a.csv", "a");
    write_file(work / "data" / "b.csv", "b");
    write_file(work / "data" / "c.csv", "c");
    write_file(work / "data" / "ab.csv", "ab");
    write_file(work / "data" / "notes.txt", "notes");
    write_file(work / "data" / ".hidden.csv", "hidden");
    write_file(work / "data" / "sub" / "d.csv", "d");
    write_file(work / "data" / "sub" / "deep" / "e.csv", "e");
    write_file(work / "data" / ".git" / "g.csv", "g");
    write_file(temp.path() / "outside" / "o.csv", "o");
  }

  std::vector<InputFile> resolve(const std::vector<std::string>& patterns) {
    return resolve_inputs(work, patterns, hasher);
  }
  std::vector<std::string> paths(const std::string& pattern) { return paths_of(resolve({pattern})); }
};

} // namespace

TEST_SUITE("core::FileHasher") {

  TEST_CASE("the hash is the SHA-256 of the content, streamed in chunks") {
    Fixture f;
    // Three 64 KiB chunks and a bit: the chunk boundaries must not matter.
    std::string content;
    for (int i = 0; content.size() < 3 * 65536 + 17; ++i) {
      content += std::to_string(i) + ",";
    }
    const fs::path file = f.temp.write("big.bin", content);

    CHECK(ok(f.hasher.hash_file(file.string())) == sha256_hex(content));
    CHECK(f.hasher.stats().files_read == 1);
    CHECK(f.hasher.stats().bytes_read == static_cast<std::int64_t>(content.size()));

    const fs::path empty = f.temp.write("empty", "");
    CHECK(ok(f.hasher.hash_file(empty.string())) == sha256_hex(""));
  }

  TEST_CASE("a memo entry with the same stamp, hashed well after the last change, spares the read") {
    Fixture f;
    const fs::path file = f.temp.write("a.txt", "alpha");
    const std::string expected = sha256_hex("alpha");
    CHECK(ok(f.hasher.hash_file(file.string())) == expected);
    REQUIRE(f.hasher.stats().files_read == 1);

    // A later run: a new hasher over the memo the store kept.
    FileHasher again(f.memo, late_clock);
    CHECK(ok(again.hash_file(file.string())) == expected);
    CHECK(again.stats().files_read == 0);
    CHECK(again.stats().bytes_read == 0);
    CHECK(again.stats().stat_calls == 1);
  }

  TEST_CASE("with reading put off, a memo miss fails without reading and a hit is answered") {
    Fixture f;
    const fs::path known = f.temp.write("known.txt", "alpha");
    const fs::path unknown = f.temp.write("unknown.txt", "beta");
    REQUIRE(f.hasher.hash_file(known.string()).ok());

    FileHasher later(f.memo, late_clock);
    later.set_reading(FileHasher::Reading::put_off);
    CHECK(ok(later.hash_file(known.string())) == sha256_hex("alpha"));
    const auto missed = later.hash_file(unknown.string());
    REQUIRE_FALSE(missed.ok());
    CHECK(missed.error() == "cannot read " + unknown.string() + ": not read yet");
    CHECK(later.stats().reads_put_off == 1);
    CHECK(later.stats().files_read == 0);
    CHECK(f.memo.find(unknown.string()) == nullptr);

    later.set_reading(FileHasher::Reading::now);
    CHECK(ok(later.hash_file(unknown.string())) == sha256_hex("beta"));
    CHECK(later.stats().files_read == 1);
  }

  TEST_CASE("a prefetch's statuses are stat(2)'s; probe answers from it within its window only") {
    Fixture f;
    const fs::path a = f.temp.write("a.txt", "alpha");
    const fs::path b = f.temp.write("b.txt", "beta");
    const std::string gone = f.temp.file("gone.txt");
    std::optional<StatPrefetch> prefetch(std::in_place, std::vector<std::string>{a.string(), gone, b.string()});
    REQUIRE(prefetch->size() == 3);
    while (prefetch->status(2) == nullptr) {
      std::this_thread::yield();
    }
    CHECK(prefetch->status(0)->stamp == stat_path(a.string()).stamp);
    CHECK(prefetch->status(0)->type == FileType::regular);
    CHECK(prefetch->status(1)->error == ENOENT);
    CHECK(prefetch->status(2)->stamp.size == 4);

    // b changes after it was stated: within the window the hasher takes
    // the status stated then; outside it, or without the prefetch, stat(2)
    // says what is there now.
    write_file(b, "beta, longer");
    f.hasher.set_prefetched(&*prefetch, 1, 3);
    CHECK(f.hasher.probe(b.string()).stamp.size == 4);
    CHECK(f.hasher.probe(gone).error == ENOENT);
    f.hasher.set_prefetched(&*prefetch, 0, 1);
    CHECK(f.hasher.probe(b.string()).stamp.size == 12);
    f.hasher.set_prefetched(nullptr);
    CHECK(f.hasher.probe(b.string()).stamp.size == 12);
    prefetch.reset(); // joins

    // One that is stopped before it is done leaves the rest untaken.
    std::vector<std::string> many(100000, a.string());
    StatPrefetch stopped(std::move(many));
  }

  TEST_CASE("the memo's answer is what a hit returns, whatever the content") {
    // Proves the hit path does not read: a planted hash comes back.
    Fixture f;
    const fs::path file = f.temp.write("a.txt", "alpha");
    const struct stat st = stat_of(file);
    MemoEntry planted;
    planted.stamp = FileStamp{st.st_size, ns_of(st.st_mtim), ns_of(st.st_ctim), static_cast<std::int64_t>(st.st_ino),
                              static_cast<std::int64_t>(st.st_dev)};
    planted.sha256 = "planted";
    planted.hashed_at_ns = late_clock();
    f.memo.remember(file.string(), planted);

    CHECK(ok(f.hasher.hash_file(file.string())) == "planted");
    CHECK(f.hasher.stats().files_read == 0);

    SUBCASE("any differing stamp field forces a read, and the memo is updated") {
      MemoEntry stale = planted;
      SUBCASE("size") {
        stale.stamp.size += 1;
      }
      SUBCASE("mtime") {
        stale.stamp.mtime_ns -= 1;
      }
      SUBCASE("ctime") {
        stale.stamp.ctime_ns -= 1;
      }
      SUBCASE("inode") {
        stale.stamp.inode += 1;
      }
      SUBCASE("device") {
        stale.stamp.device += 1;
      }
      f.memo.remember(file.string(), stale);

      CHECK(ok(f.hasher.hash_file(file.string())) == sha256_hex("alpha"));
      CHECK(f.hasher.stats().files_read == 1);
      const MemoEntry* updated = f.memo.find(file.string());
      REQUIRE(updated != nullptr);
      CHECK(updated->sha256 == sha256_hex("alpha"));
      CHECK(updated->stamp == planted.stamp);
    }
  }

  TEST_CASE("an entry hashed within the racy window of the last change is not trusted") {
    Fixture f;
    const fs::path file = f.temp.write("a.txt", "alpha");
    const struct stat st = stat_of(file);
    const std::int64_t changed_ns = std::max(ns_of(st.st_mtim), ns_of(st.st_ctim));

    std::int64_t now_ns = changed_ns + k_racy_window_ns / 2;
    FileHasher hasher(f.memo, [&now_ns] { return now_ns; });
    CHECK(ok(hasher.hash_file(file.string())) == sha256_hex("alpha"));
    CHECK(ok(hasher.hash_file(file.string())) == sha256_hex("alpha"));
    CHECK(hasher.stats().files_read == 2);

    // Exactly one window after the change is still racy; past it the entry
    // hashed then is trusted.
    now_ns = changed_ns + k_racy_window_ns;
    CHECK(ok(hasher.hash_file(file.string())) == sha256_hex("alpha"));
    CHECK(hasher.stats().files_read == 3);
    now_ns = changed_ns + k_racy_window_ns + 1;
    CHECK(ok(hasher.hash_file(file.string())) == sha256_hex("alpha"));
    CHECK(hasher.stats().files_read == 4);
    CHECK(ok(hasher.hash_file(file.string())) == sha256_hex("alpha"));
    CHECK(hasher.stats().files_read == 4);
    REQUIRE(f.memo.find(file.string()) != nullptr);
    CHECK(f.memo.find(file.string())->hashed_at_ns == changed_ns + k_racy_window_ns + 1);
  }

  TEST_CASE("a recent ctime is racy even when the mtime was set far back") {
    Fixture f;
    const fs::path file = f.temp.write("a.txt", "alpha");
    set_mtime(file, 1'000'000'000 * k_second_ns); // 2001
    const std::int64_t ctime_ns = ns_of(stat_of(file).st_ctim);

    FileHasher hasher(f.memo, [ctime_ns] { return ctime_ns + k_racy_window_ns / 2; });
    CHECK(ok(hasher.hash_file(file.string())) == sha256_hex("alpha"));
    CHECK(ok(hasher.hash_file(file.string())) == sha256_hex("alpha"));
    CHECK(hasher.stats().files_read == 2);
  }

  TEST_CASE("rewriting a file in place with a new size is read again") {
    Fixture f;
    const fs::path file = f.temp.write("a.txt", "alpha");
    CHECK(ok(f.hasher.hash_file(file.string())) == sha256_hex("alpha"));
    write_file(file, "alphabet");
    CHECK(ok(f.hasher.hash_file(file.string())) == sha256_hex("alphabet"));
    CHECK(f.hasher.stats().files_read == 2);
    REQUIRE(f.memo.find(file.string()) != nullptr);
    CHECK(f.memo.find(file.string())->sha256 == sha256_hex("alphabet"));
  }

  TEST_CASE("a file replaced by rename with the same size and mtime is read again") {
    Fixture f;
    const fs::path file = f.temp.write("a.txt", "AAAA");
    set_mtime(file, 1'600'000'000 * k_second_ns);
    CHECK(ok(f.hasher.hash_file(file.string())) == sha256_hex("AAAA"));

    const fs::path replacement = f.temp.write("a.txt.tmp", "BBBB");
    set_mtime(replacement, 1'600'000'000 * k_second_ns);
    REQUIRE(::rename(replacement.c_str(), file.c_str()) == 0);
    const struct stat st = stat_of(file);
    REQUIRE(st.st_size == 4);
    REQUIRE(ns_of(st.st_mtim) == 1'600'000'000 * k_second_ns);

    CHECK(ok(f.hasher.hash_file(file.string())) == sha256_hex("BBBB"));
    CHECK(f.hasher.stats().files_read == 2);
  }

  TEST_CASE("memo keys are lexically normal absolute paths") {
    Fixture f;
    const fs::path file = f.temp.write("dir/a.txt", "alpha");
    const std::string messy = f.temp.path().string() + "//dir/./x/../a.txt";
    CHECK(ok(f.hasher.hash_file(messy)) == sha256_hex("alpha"));
    CHECK(f.memo.find(file.string()) != nullptr);
    CHECK(f.memo.size() == 1);
    CHECK(ok(f.hasher.hash_file(file.string())) == sha256_hex("alpha"));
    CHECK(f.hasher.stats().files_read == 1);
  }

  TEST_CASE("a symlink is hashed through to its target, keyed by the link's path") {
    Fixture f;
    const fs::path target = f.temp.write("target.txt", "target");
    const fs::path link = f.temp.path() / "link.txt";
    fs::create_symlink(target, link);
    CHECK(ok(f.hasher.hash_file(link.string())) == sha256_hex("target"));
    CHECK(f.memo.find(link.string()) != nullptr);
    CHECK(f.memo.find(target.string()) == nullptr);
  }

  TEST_CASE("errors name the path and the reason") {
    Fixture f;
    const std::string missing = f.temp.file("missing.txt");
    Expected<std::string> hash = f.hasher.hash_file(missing);
    REQUIRE_FALSE(hash.ok());
    CHECK(hash.error() == "cannot read " + missing + ": no such file or directory");

    hash = f.hasher.hash_file(f.temp.path().string());
    REQUIRE_FALSE(hash.ok());
    CHECK(hash.error() == "cannot read " + f.temp.path().string() + ": is a directory");

    hash = f.hasher.hash_file("relative.txt");
    REQUIRE_FALSE(hash.ok());
    CHECK(hash.error() == "cannot hash relative.txt: not an absolute path");
    CHECK(f.memo.size() == 0);
  }

} // TEST_SUITE

TEST_SUITE("core::InMemoryHashMemo") {

  TEST_CASE("changed() lists what was remembered since construction, latest first per path, sorted") {
    MemoEntry loaded;
    loaded.sha256 = "loaded";
    InMemoryHashMemo memo({{"/a", loaded}, {"/b", loaded}});
    CHECK(memo.size() == 2);
    CHECK(memo.changed().empty());
    REQUIRE(memo.find("/a") != nullptr);
    CHECK(memo.find("/a")->sha256 == "loaded");
    CHECK(memo.find("/missing") == nullptr);

    memo.remember("/a", loaded); // the same again: nothing to write back
    CHECK(memo.changed().empty());

    MemoEntry first;
    first.sha256 = "first";
    MemoEntry second;
    second.sha256 = "second";
    memo.remember("/z", first);
    memo.remember("/b", first);
    memo.remember("/b", second);

    const std::vector<std::pair<std::string, MemoEntry>> changed = memo.changed();
    REQUIRE(changed.size() == 2);
    CHECK(changed[0].first == "/b");
    CHECK(changed[0].second.sha256 == "second");
    CHECK(changed[1].first == "/z");
    CHECK(changed[1].second.sha256 == "first");
    CHECK(memo.size() == 3);

    memo.clear_changed();
    CHECK(memo.changed().empty());
    REQUIRE(memo.find("/b") != nullptr);
    CHECK(memo.find("/b")->sha256 == "second");
  }

  TEST_CASE("entries loaded in any order are all found, and only they") {
    MemoEntries loaded;
    for (int i = 999; i >= 0; --i) {
      MemoEntry e;
      e.sha256 = std::to_string(i);
      loaded.emplace_back("/data/" + std::to_string(i) + ".csv", e);
    }
    const InMemoryHashMemo memo(std::move(loaded));
    CHECK(memo.size() == 1000);
    for (int i = 0; i < 1000; ++i) {
      const MemoEntry* e = memo.find("/data/" + std::to_string(i) + ".csv");
      REQUIRE(e != nullptr);
      CHECK(e->sha256 == std::to_string(i));
    }
    CHECK(memo.find("/data/1000.csv") == nullptr);
    CHECK(memo.find("/data/") == nullptr);
    CHECK(memo.find("") == nullptr);
    CHECK(memo.find("/data/999.csv0") == nullptr);
  }

} // TEST_SUITE

TEST_SUITE("core::resolve_inputs") {

  TEST_CASE("is_glob") {
    CHECK(is_glob("*.csv"));
    CHECK(is_glob("data/?.csv"));
    CHECK(is_glob("data/[ab].csv"));
    CHECK(is_glob("data/**"));
    CHECK_FALSE(is_glob("data/a.csv"));
    CHECK_FALSE(is_glob("data/"));
  }

  TEST_CASE("a file: its hash and its path as written, normalised") {
    Tree t;
    const std::vector<InputFile> files = t.resolve({"top.txt", "./data//a.csv", "data/sub/../b.csv"});
    REQUIRE(files.size() == 3);
    CHECK(files[0] == InputFile{"top.txt", "top.txt", sha256_hex("top"), ""});
    CHECK(files[1] == InputFile{"./data//a.csv", "data/a.csv", sha256_hex("a"), ""});
    CHECK(files[2] == InputFile{"data/sub/../b.csv", "data/b.csv", sha256_hex("b"), ""});
  }

  TEST_CASE("a file costs one stat and no read once the memo knows it") {
    Tree t;
    const std::vector<std::string> patterns{"top.txt", "data/a.csv", "data/sub/d.csv"};
    const std::vector<InputFile> cold = t.resolve(patterns);
    REQUIRE(t.hasher.stats().files_read == 3);

    FileHasher again(t.memo, late_clock);
    CHECK(resolve_inputs(t.work, patterns, again) == cold);
    CHECK(again.stats().stat_calls == 3);
    CHECK(again.stats().files_read == 0);
  }

  TEST_CASE("a directory: every file under it, hidden ones included, sorted, relative to the workdir") {
    Tree t;
    const std::vector<InputFile> files = t.resolve({"data"});
    REQUIRE(paths_of(files) == std::vector<std::string>{"data/.git/g.csv", "data/.hidden.csv", "data/a.csv",
                                                        "data/ab.csv", "data/b.csv", "data/c.csv", "data/notes.txt",
                                                        "data/sub/d.csv", "data/sub/deep/e.csv"});
    for (const InputFile& file : files) {
      CHECK(file.pattern == "data");
      CHECK(file.problem == "");
    }
    CHECK(files[2].sha256 == sha256_hex("a"));
    CHECK(files[8].sha256 == sha256_hex("e"));

    CHECK(t.paths("data/sub/") == std::vector<std::string>{"data/sub/d.csv", "data/sub/deep/e.csv"});
    CHECK(paths_of(resolve_inputs(t.work / "data" / "sub", {"."}, t.hasher)) ==
          std::vector<std::string>{"d.csv", "deep/e.csv"});
  }

  TEST_CASE("an empty directory is a problem") {
    Tree t;
    fs::create_directories(t.work / "empty" / "nested");
    CHECK(t.resolve({"empty"}) == std::vector<InputFile>{{"empty", "empty", "", "directory has no files"}});
  }

  TEST_CASE("* ? and [...] match within one segment and skip hidden names") {
    Tree t;
    CHECK(t.paths("data/*.csv") == std::vector<std::string>{"data/a.csv", "data/ab.csv", "data/b.csv", "data/c.csv"});
    CHECK(t.paths("data/?.csv") == std::vector<std::string>{"data/a.csv", "data/b.csv", "data/c.csv"});
    CHECK(t.paths("data/[ab].csv") == std::vector<std::string>{"data/a.csv", "data/b.csv"});
    CHECK(t.paths("data/[!ab].csv") == std::vector<std::string>{"data/c.csv"});
    CHECK(t.paths("data/.*") == std::vector<std::string>{"data/.hidden.csv"});
    CHECK(t.paths("*/sub/*.csv") == std::vector<std::string>{"data/sub/d.csv"});
    CHECK(t.paths("data/*/*") == std::vector<std::string>{"data/sub/d.csv"});
  }

  TEST_CASE("a glob selects files only: a directory it matches is not expanded") {
    Tree t;
    CHECK(t.paths("data/*") ==
          std::vector<std::string>{"data/a.csv", "data/ab.csv", "data/b.csv", "data/c.csv", "data/notes.txt"});
    CHECK(t.resolve({"*/sub"}) == std::vector<InputFile>{{"*/sub", "*/sub", "", "matches no file"}});
  }

  TEST_CASE("** matches zero or more directories, at the start, middle and end") {
    Tree t;
    CHECK(t.paths("**/*.csv") == std::vector<std::string>{"data/a.csv", "data/ab.csv", "data/b.csv", "data/c.csv",
                                                          "data/sub/d.csv", "data/sub/deep/e.csv"});
    CHECK(t.paths("**/top.txt") == std::vector<std::string>{"top.txt"});
    CHECK(t.paths("data/**/*.csv") == std::vector<std::string>{"data/a.csv", "data/ab.csv", "data/b.csv", "data/c.csv",
                                                               "data/sub/d.csv", "data/sub/deep/e.csv"});
    CHECK(t.paths("data/**/e.csv") == std::vector<std::string>{"data/sub/deep/e.csv"});
    CHECK(t.paths("data/**/sub/d.csv") == std::vector<std::string>{"data/sub/d.csv"});
    CHECK(t.paths("data/sub/**") == std::vector<std::string>{"data/sub/d.csv", "data/sub/deep/e.csv"});
    CHECK(t.paths("data/**/**") == t.paths("data/**"));
    CHECK(t.paths("data/**") == std::vector<std::string>{"data/a.csv", "data/ab.csv", "data/b.csv", "data/c.csv",
                                                         "data/notes.txt", "data/sub/d.csv", "data/sub/deep/e.csv"});
    // Hidden directories are entered only when named.
    CHECK(t.paths("data/.git/**") == std::vector<std::string>{"data/.git/g.csv"});
    CHECK(t.paths("**/.git/*.csv") == std::vector<std::string>{"data/.git/g.csv"});
  }

  TEST_CASE("a file reached along several ways is listed once") {
    Tree t;
    write_file(t.work / "x" / "x" / "f", "f");
    const std::vector<InputFile> files = t.resolve({"**/x/**/f", "x/x/f"});
    REQUIRE(paths_of(files) == std::vector<std::string>{"x/x/f", "x/x/f"});
    CHECK(files[0].pattern == "**/x/**/f");
    CHECK(files[1].pattern == "x/x/f");
  }

  TEST_CASE("patterns keep their order; each one's files are sorted") {
    Tree t;
    const std::vector<InputFile> files = t.resolve({"top.txt", "data/[cb].csv", "data/a.csv"});
    REQUIRE(files.size() == 4);
    CHECK(files[0] == InputFile{"top.txt", "top.txt", sha256_hex("top"), ""});
    CHECK(files[1] == InputFile{"data/[cb].csv", "data/b.csv", sha256_hex("b"), ""});
    CHECK(files[2] == InputFile{"data/[cb].csv", "data/c.csv", sha256_hex("c"), ""});
    CHECK(files[3] == InputFile{"data/a.csv", "data/a.csv", sha256_hex("a"), ""});
  }

  TEST_CASE("a missing file or a glob matching nothing is one entry with the problem") {
    Tree t;
    const std::vector<InputFile> files =
        t.resolve({"data/missing.csv", "data/*.parquet", "nope/**/*.csv", "data/a.csv"});
    REQUIRE(files.size() == 4);
    CHECK(files[0] == InputFile{"data/missing.csv", "data/missing.csv", "", "no such file or directory"});
    CHECK(files[1] == InputFile{"data/*.parquet", "data/*.parquet", "", "matches no file"});
    CHECK(files[2] == InputFile{"nope/**/*.csv", "nope/**/*.csv", "", "matches no file"});
    CHECK(files[3].sha256 == sha256_hex("a"));
  }

  TEST_CASE("absolute patterns: relative paths inside the workdir, absolute outside") {
    Tree t;
    const std::string outside = (t.temp.path() / "outside").string();
    const std::vector<InputFile> files = t.resolve({(t.work / "top.txt").string(), outside + "/o.csv",
                                                    "../outside/*.csv", (t.work / "data" / "[ab].csv").string()});
    REQUIRE(files.size() == 5);
    CHECK(files[0].path == "top.txt");
    CHECK(files[1] == InputFile{outside + "/o.csv", outside + "/o.csv", sha256_hex("o"), ""});
    CHECK(files[2] == InputFile{"../outside/*.csv", outside + "/o.csv", sha256_hex("o"), ""});
    CHECK(files[3].path == "data/a.csv");
    CHECK(files[4].path == "data/b.csv");

    const std::vector<InputFile> missing = t.resolve({outside + "/missing"});
    CHECK(missing ==
          std::vector<InputFile>{{outside + "/missing", outside + "/missing", "", "no such file or directory"}});
  }

  TEST_CASE("glob characters in the workdir's own path are literal") {
    Fixture f;
    const fs::path work = f.temp.path() / "run[1]*";
    write_file(work / "a.txt", "a");
    write_file(f.temp.path() / "run1" / "b.txt", "b");
    CHECK(paths_of(resolve_inputs(work, {"*.txt"}, f.hasher)) == std::vector<std::string>{"a.txt"});
    CHECK(paths_of(resolve_inputs(work, {"**"}, f.hasher)) == std::vector<std::string>{"a.txt"});
  }

  TEST_CASE("symlinks: files are hashed through, linked directories are not entered by walks") {
    Tree t;
    fs::create_symlink("data/a.csv", t.work / "link.csv");
    fs::create_symlink("sub", t.work / "data" / "linked-dir");
    fs::create_symlink("nowhere", t.work / "data" / "dangling.csv");
    fs::create_symlink("../../../outside/o.csv", t.work / "data" / "sub" / "o-link.csv");

    const std::vector<InputFile> link = t.resolve({"link.csv"});
    CHECK(link == std::vector<InputFile>{{"link.csv", "link.csv", sha256_hex("a"), ""}});

    // The walk hashes the file links, skips the dangling one and does not
    // enter the linked directory.
    const std::vector<InputFile> sub = t.resolve({"data/sub"});
    REQUIRE(paths_of(sub) == std::vector<std::string>{"data/sub/d.csv", "data/sub/deep/e.csv", "data/sub/o-link.csv"});
    CHECK(sub[2].sha256 == sha256_hex("o"));
    CHECK(t.paths("data") == std::vector<std::string>{"data/.git/g.csv", "data/.hidden.csv", "data/a.csv",
                                                      "data/ab.csv", "data/b.csv", "data/c.csv", "data/notes.txt",
                                                      "data/sub/d.csv", "data/sub/deep/e.csv", "data/sub/o-link.csv"});

    // ** does not enter it either; a one-segment wildcard does, as in the shell.
    CHECK(t.paths("data/**/d.csv") == std::vector<std::string>{"data/sub/d.csv"});
    CHECK(t.paths("data/*/d.csv") == std::vector<std::string>{"data/linked-dir/d.csv", "data/sub/d.csv"});
    // Naming the linked directory follows it.
    CHECK(t.paths("data/linked-dir") == std::vector<std::string>{"data/linked-dir/d.csv", "data/linked-dir/deep/e.csv",
                                                                 "data/linked-dir/o-link.csv"});

    const std::vector<InputFile> dangling = t.resolve({"data/dangling.csv"});
    CHECK(dangling ==
          std::vector<InputFile>{{"data/dangling.csv", "data/dangling.csv", "", "no such file or directory"}});
  }

  TEST_CASE("a symlink loop inside a directory is reported, not skipped") {
    Tree t;
    fs::create_symlink("loop", t.work / "data" / "sub" / "loop");
    const std::vector<InputFile> files = t.resolve({"data/sub"});
    REQUIRE(files.size() == 3);
    CHECK(files[2] == InputFile{"data/sub", "data/sub/loop", "", "too many levels of symbolic links"});
  }

  TEST_CASE("an unreadable file or directory is reported as a problem") {
    // The check runs as an unprivileged user: root reads anything.
    Tree t;
    fs::permissions(t.temp.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                       fs::perms::others_read | fs::perms::others_exec);
    fs::permissions(t.work / "data" / "a.csv", fs::perms::none);
    fs::permissions(t.work / "data" / "sub" / "deep", fs::perms::none);

    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) {
        ::_exit(2);
      }
      InMemoryHashMemo memo;
      FileHasher hasher(memo);
      // "**" fails to list deep/ once while looking for directories and once
      // more while looking for files in it: one problem all the same.
      const std::vector<InputFile> files = resolve_inputs(t.work, {"data/a.csv", "data/sub", "data/sub/**"}, hasher);
      const std::vector<InputFile> expected{{"data/a.csv", "data/a.csv", "", "permission denied"},
                                            {"data/sub", "data/sub/d.csv", sha256_hex("d"), ""},
                                            {"data/sub", "data/sub/deep", "", "permission denied"},
                                            {"data/sub/**", "data/sub/d.csv", sha256_hex("d"), ""},
                                            {"data/sub/**", "data/sub/deep", "", "permission denied"}};
      ::_exit(files == expected ? 0 : 1);
    }
    int status = 0;
    const pid_t waited = ::waitpid(child, &status, 0);
    // So that TempDir can remove it without root.
    fs::permissions(t.work / "data" / "sub" / "deep", fs::perms::owner_all);
    REQUIRE(waited == child);
    REQUIRE(WIFEXITED(status));
    CHECK_MESSAGE(WEXITSTATUS(status) != 2, "root could not switch to uid 65534 to lose its read-anything right");
    CHECK_MESSAGE(WEXITSTATUS(status) != 1, "the problems reported differ from the expected ones");
    CHECK(WEXITSTATUS(status) == 0);
  }

  TEST_CASE("an empty pattern is a problem, not the whole workdir") {
    Tree t;
    CHECK(t.resolve({""}) == std::vector<InputFile>{{"", ".", "", "empty pattern"}});
  }

  TEST_CASE("file stamps survive encoding, and bytes that are not an encoding are an error") {
    StampedFiles files;
    files.paths = {"/data/a.csv", "", "/very/long/" + std::string(300, 'x')};
    files.stamps = {{1, 2, 3, 4, 5}, {0, 0, 0, 0, 0}, {-1, 1'700'000'000'123'456'789, 7, 1LL << 40, 9}};
    const std::string bytes = encode_stamps(files);
    Expected<StampedFiles> back = decode_stamps(bytes);
    REQUIRE(back.ok());
    CHECK(back->paths == files.paths);
    CHECK(back->stamps == files.stamps);
    CHECK(decode_stamps(encode_stamps({})).ok());
    CHECK_FALSE(decode_stamps("").ok());
    CHECK_FALSE(decode_stamps("something else").ok());
    for (std::size_t cut : {bytes.size() - 1, bytes.size() - 41, bytes.size() - 300}) {
      CHECK_FALSE(decode_stamps(std::string_view(bytes).substr(0, cut)).ok());
    }
  }

} // TEST_SUITE
