// Writes a file under a temporary name and renames it into place, so a reader
// never sees a half-written file and a crash leaves the old file intact.
#pragma once
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace bakallm {

// Calls write(stream) on PATH.tmp.<pid>, flushes, fsyncs, renames to PATH.
// On any failure the temporary is removed and an Error naming PATH is thrown.
void write_file_atomically(const std::string& path,
                           const std::function<void(std::ostream&)>& write);

// Same for a directory: fill(tmpdir) populates a temporary sibling directory,
// which is then renamed to DIR (an existing DIR is replaced).
void write_dir_atomically(const std::string& dir,
                          const std::function<void(const std::string&)>& fill);

// DIR without trailing slashes ("out/" -> "out"; "/" stays "/").
std::string clean_dir(const std::string& dir);

// The entries of DIR, by name and sorted, that MINE(name, is_directory)
// does not claim: what a command must not delete or overwrite. Empty when DIR
// is missing or holds only what MINE claims.
std::vector<std::string> foreign_entries(const std::string& dir,
                                         const std::function<bool(const std::string&, bool)>& mine);

// Throws "DIR: holds files NOUN did not write (a, b): HINT" when foreign_entries
// is not empty, and "DIR: exists and is not a directory" for a file.
void require_only_own_files(const std::string& dir, const std::function<bool(const std::string&, bool)>& mine,
                            const std::string& noun, const std::string& hint);

// Leftovers of a process that is gone, in DIR: entries named
// "<name>.tmp.<pid>", "<name>.old.<pid>" or "<name>.pruned.<pid>" (what the
// writers above and checkpoint pruning leave when killed) whose <pid> no
// longer runs; with a non-empty PREFIX only those whose <name> is PREFIX.
// Returns how many were removed.
int remove_orphans(const std::string& dir, const std::string& prefix = "");

// Whether NAME is such a leftover name (of any process).
bool is_temporary_name(const std::string& name);

}  // namespace bakallm
