// Writes a file under a temporary name and renames it into place, so a reader
// never sees a half-written file and a crash leaves the old file intact.
#pragma once
#include <functional>
#include <ostream>
#include <string>

namespace bakallm {

// Calls write(stream) on PATH.tmp.<pid>, flushes, fsyncs, renames to PATH.
// On any failure the temporary is removed and an Error naming PATH is thrown.
void write_file_atomically(const std::string& path,
                           const std::function<void(std::ostream&)>& write);

// Same for a directory: fill(tmpdir) populates a temporary sibling directory,
// which is then renamed to DIR (an existing DIR is replaced).
void write_dir_atomically(const std::string& dir,
                          const std::function<void(const std::string&)>& fill);

}  // namespace bakallm
