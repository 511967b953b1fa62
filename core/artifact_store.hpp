#pragma once
// Artifact content: blob files named by their SHA-256 under
// <store>/artifacts/sha256/<first 2 hex>/<remaining 62 hex>, one copy of
// identical content however many runs produce it. Content is streamed in
// fixed-size chunks (memory stays flat for any file size), written to a temp
// file under <store>/artifacts/tmp/ and renamed into place, so a blob name
// only ever holds complete content.
//
// Which blobs are referenced lives in the tracker store: it stages content
// here, then commits or discards it inside its own write transaction, so a
// concurrent gc never removes a blob that a run is in the middle of
// referencing.
//
// Also here: the rules that keep a step's artifacts inside its workdir.

#include "core/expected.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::core {

/// A file of a step's artifact, found inside its workdir.
struct ArtifactFile {
  /// Where to read it: absolute, symlinks resolved.
  std::filesystem::path source;
  /// Relative to the workdir, '/'-separated, normalised ("out/model.pkl").
  std::string logical_path;
};

/// The regular files `path` (relative to `workdir`, or absolute) names: the
/// file itself, or every regular file below a directory, sorted by logical
/// path. Refused, with an error naming the path and why: a path that is
/// absolute outside `workdir` or climbs out of it with "..", a symlink
/// (the path itself or anything under a directory) whose target is outside
/// `workdir`, a missing path, and anything that is not a regular file or
/// directory (devices, fifos, sockets). `workdir` must be absolute.
Expected<std::vector<ArtifactFile>> collect_artifact_files(const std::filesystem::path& workdir, std::string_view path);

/// Content copied into the store under a temp name, not yet visible.
struct StagedBlob {
  std::filesystem::path temp;
  std::string sha256;
  std::int64_t size = 0;
};

class BlobStore {
public:
  /// `root` is <store>/artifacts; created on first write.
  explicit BlobStore(std::filesystem::path root) : m_root(std::move(root)) {}

  const std::filesystem::path& root() const { return m_root; }
  /// Where the blob with this hash lives (whether or not it exists).
  std::filesystem::path path_of(std::string_view sha256) const;
  bool contains(std::string_view sha256) const;

  /// Copies `file` to a temp file under root()/tmp while hashing it.
  Expected<StagedBlob> stage(const std::filesystem::path& file);
  /// Renames the staged content to its blob name; when the blob exists
  /// already (identical content), removes the temp instead.
  Expected<void> commit(const StagedBlob& staged);
  /// Removes the temp file of content that will not be kept.
  void discard(const StagedBlob& staged);

  /// Copies the blob to `dest` (through a temp file beside it, renamed into
  /// place), hashing on the way: content whose hash differs from the name
  /// (a damaged store) is an error and `dest` is left untouched.
  Expected<void> copy_out(std::string_view sha256, const std::filesystem::path& dest) const;
  /// Removes a blob file; a missing one is not an error.
  Expected<void> remove(std::string_view sha256);

  /// Every blob file present, by hash (for gc to find files no row names).
  Expected<std::vector<std::string>> list() const;
  /// Temp files last modified more than `min_age_ms` before `now_ms`: left by
  /// a process killed while staging.
  std::vector<std::filesystem::path> stale_temps(std::int64_t now_ms, std::int64_t min_age_ms) const;

private:
  std::filesystem::path m_root;
};

} // namespace kiln::core
