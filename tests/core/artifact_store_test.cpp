#include "core/artifact_store.hpp"
#include "tests/support.hpp"

#include "core/hash.hpp"

#include <doctest/doctest.h>

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>
using kiln::test::check;
using kiln::test::ok;
using kiln::test::read_file;
using kiln::test::TempDir;
using kiln::test::write_file;

namespace fs = std::filesystem;
using namespace kiln::core;

namespace {

std::vector<std::string> logical_paths(const std::vector<ArtifactFile>& files) {
  std::vector<std::string> paths;
  for (const ArtifactFile& file : files) {
    paths.push_back(file.logical_path);
  }
  return paths;
}

std::string collect_error(const fs::path& workdir, std::string_view path) {
  Expected<std::vector<ArtifactFile>> files = collect_artifact_files(workdir, path);
  REQUIRE_FALSE(files.ok());
  return files.error();
}

/// A workdir with files, a subdirectory, and a directory outside it.
struct Layout {
  TempDir temp;
  fs::path work = temp.path() / "work";
  fs::path outside = temp.path() / "outside";

  Layout() {
    write_file(work / "model.pkl", "model");
    write_file(work / "out" / "b.csv", "b");
    write_file(work / "out" / "a.csv", "a");
    write_file(work / "out" / "deep" / "c.txt", "c");
    write_file(outside / "secret", "secret");
  }
};

} // namespace

TEST_SUITE("core::BlobStore") {

  TEST_CASE("collect_artifact_files: a file, a directory (sorted, recursive), relative or absolute") {
    Layout layout;
    std::vector<ArtifactFile> one = ok(collect_artifact_files(layout.work, "model.pkl"));
    REQUIRE(one.size() == 1);
    CHECK(one[0].logical_path == "model.pkl");
    CHECK(one[0].source == fs::canonical(layout.work / "model.pkl"));

    CHECK(logical_paths(ok(collect_artifact_files(layout.work, "out"))) ==
          std::vector<std::string>{"out/a.csv", "out/b.csv", "out/deep/c.txt"});
    CHECK(logical_paths(ok(collect_artifact_files(layout.work, "./out/deep/../"))) ==
          std::vector<std::string>{"out/a.csv", "out/b.csv", "out/deep/c.txt"});
    CHECK(logical_paths(ok(collect_artifact_files(layout.work, (layout.work / "out" / "a.csv").string()))) ==
          std::vector<std::string>{"out/a.csv"});
    CHECK(logical_paths(ok(collect_artifact_files(layout.work, "."))) ==
          std::vector<std::string>{"model.pkl", "out/a.csv", "out/b.csv", "out/deep/c.txt"});
    CHECK(collect_error(layout.work, "missing.txt") == "'missing.txt' does not exist");
  }

  TEST_CASE("collect_artifact_files refuses paths that leave the workdir") {
    Layout layout;
    std::string workdir = layout.work.string();
    CHECK(collect_error(layout.work, "../outside/secret") ==
          "'../outside/secret' is outside the step's workdir " + workdir);
    CHECK(collect_error(layout.work, "out/../../outside") ==
          "'out/../../outside' is outside the step's workdir " + workdir);
    std::string absolute = (layout.outside / "secret").string();
    CHECK(collect_error(layout.work, absolute) == "'" + absolute + "' is outside the step's workdir " + workdir);
    // A sibling sharing the workdir's name as a prefix is outside too.
    write_file(layout.temp.path() / "work2" / "x", "x");
    CHECK(collect_error(layout.work, "../work2/x").find("is outside the step's workdir") != std::string::npos);

    fs::create_symlink(layout.outside / "secret", layout.work / "link");
    CHECK(collect_error(layout.work, "link") == "'link' is a symlink to " +
                                                    fs::canonical(layout.outside / "secret").string() +
                                                    ", outside the step's workdir " + workdir);
    fs::create_directory_symlink(layout.outside, layout.work / "out" / "dirlink");
    CHECK(collect_error(layout.work, "out") == "'out/dirlink' is a symlink to " +
                                                   fs::canonical(layout.outside).string() +
                                                   ", outside the step's workdir " + workdir);
    CHECK(collect_error(layout.work, "out/dirlink/secret").find("outside the step's workdir") != std::string::npos);
  }

  TEST_CASE("collect_artifact_files follows symlinks that stay inside, and a workdir reached through one") {
    Layout layout;
    fs::create_symlink(layout.work / "model.pkl", layout.work / "latest");
    fs::create_directory_symlink("deep", layout.work / "out" / "alias");
    std::vector<ArtifactFile> latest = ok(collect_artifact_files(layout.work, "latest"));
    REQUIRE(latest.size() == 1);
    CHECK(latest[0].logical_path == "latest");
    CHECK(latest[0].source == fs::canonical(layout.work / "model.pkl"));
    CHECK(logical_paths(ok(collect_artifact_files(layout.work, "out"))) ==
          std::vector<std::string>{"out/a.csv", "out/alias/c.txt", "out/b.csv", "out/deep/c.txt"});

    fs::path via = layout.temp.path() / "via";
    fs::create_directory_symlink(layout.work, via);
    CHECK(logical_paths(ok(collect_artifact_files(via, "out/deep"))) == std::vector<std::string>{"out/deep/c.txt"});
    CHECK(logical_paths(ok(collect_artifact_files(via, (layout.work / "model.pkl").string()))) ==
          std::vector<std::string>{"model.pkl"});
    CHECK(collect_error(via, "../outside/secret").find("is outside the step's workdir " + via.string()) !=
          std::string::npos);

    // A cycle inside is refused, not followed forever.
    fs::create_directory_symlink("..", layout.work / "out" / "deep" / "up");
    CHECK(collect_error(layout.work, "out").find("symlink cycle") != std::string::npos);
  }

  TEST_CASE("collect_artifact_files refuses special files") {
    Layout layout;
    REQUIRE(mkfifo((layout.work / "out" / "pipe").c_str(), 0600) == 0);
    CHECK(collect_error(layout.work, "out/pipe") == "'out/pipe' is not a regular file or directory");
    CHECK(collect_error(layout.work, "out") == "'out/pipe' is not a regular file or directory");
    CHECK(collect_error(fs::path("relative/dir"), "x").find("not an absolute path") != std::string::npos);
  }

  TEST_CASE("stage, commit, copy_out and list") {
    TempDir temp;
    BlobStore blobs(temp.path() / "artifacts");
    CHECK(ok(blobs.list()).empty());
    // More than one 1 MiB chunk, with a tail.
    std::string content(3 * (1 << 20) + 123, '\0');
    for (std::size_t i = 0; i < content.size(); ++i) {
      content[i] = static_cast<char>((i * 7919) >> 3);
    }
    write_file(temp.path() / "big", content);
    StagedBlob staged = ok(blobs.stage(temp.path() / "big"));
    CHECK(staged.sha256 == sha256_hex(content));
    CHECK(staged.size == static_cast<std::int64_t>(content.size()));
    CHECK(staged.temp.parent_path() == blobs.root() / "tmp");
    CHECK_FALSE(blobs.contains(staged.sha256));
    check(blobs.commit(staged));
    CHECK_FALSE(fs::exists(staged.temp));
    CHECK(blobs.contains(staged.sha256));
    CHECK(blobs.path_of(staged.sha256) ==
          blobs.root() / "sha256" / staged.sha256.substr(0, 2) / staged.sha256.substr(2));
    CHECK(ok(blobs.list()) == std::vector<std::string>{staged.sha256});

    // Identical content again: the temp goes, the blob stays.
    StagedBlob again = ok(blobs.stage(temp.path() / "big"));
    check(blobs.commit(again));
    CHECK_FALSE(fs::exists(again.temp));
    CHECK(ok(blobs.list()).size() == 1);

    fs::path dest = temp.path() / "restored" / "big";
    fs::create_directories(dest.parent_path());
    check(blobs.copy_out(staged.sha256, dest));
    CHECK(read_file(dest) == content);

    StagedBlob dropped = ok(blobs.stage(temp.path() / "big"));
    blobs.discard(dropped);
    CHECK_FALSE(fs::exists(dropped.temp));

    check(blobs.remove(staged.sha256));
    check(blobs.remove(staged.sha256));
    CHECK(ok(blobs.list()).empty());
    CHECK_FALSE(blobs.stage(temp.path() / "missing").ok());
  }

  TEST_CASE("copy_out detects a damaged blob and leaves the destination untouched") {
    TempDir temp;
    BlobStore blobs(temp.path() / "artifacts");
    write_file(temp.path() / "file", "good content");
    StagedBlob staged = ok(blobs.stage(temp.path() / "file"));
    check(blobs.commit(staged));
    write_file(blobs.path_of(staged.sha256), "bad content");
    fs::path dest = temp.path() / "dest";
    write_file(dest, "previous");

    Expected<void> copied = blobs.copy_out(staged.sha256, dest);
    REQUIRE_FALSE(copied.ok());
    CHECK(copied.error() ==
          "artifact " + staged.sha256 + " in the store is damaged: its content hashes to " + sha256_hex("bad content"));
    CHECK(read_file(dest) == "previous");
    std::vector<std::string> left;
    for (const fs::directory_entry& entry : fs::directory_iterator(temp.path())) {
      left.push_back(entry.path().filename().string());
    }
    std::sort(left.begin(), left.end());
    CHECK(left == std::vector<std::string>{"artifacts", "dest", "file"});

    check(blobs.remove(staged.sha256));
    CHECK(blobs.copy_out(staged.sha256, dest).error().find("missing from the store") != std::string::npos);
  }

  TEST_CASE("stale_temps lists temps older than the age given") {
    TempDir temp;
    BlobStore blobs(temp.path() / "artifacts");
    CHECK(blobs.stale_temps(0, 0).empty());
    write_file(temp.path() / "file", "x");
    StagedBlob old = ok(blobs.stage(temp.path() / "file"));
    StagedBlob recent = ok(blobs.stage(temp.path() / "file"));
    fs::last_write_time(old.temp, fs::last_write_time(old.temp) - std::chrono::hours(3));
    std::int64_t now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    CHECK(blobs.stale_temps(now_ms, 3'600'000) == std::vector<fs::path>{old.temp});
    CHECK(blobs.stale_temps(now_ms + 4 * 3'600'000, 3'600'000).size() == 2);
  }

} // TEST_SUITE
