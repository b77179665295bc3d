// PNG plots drawn by gnuplot (Debian's gnuplot-nox), written under a
// temporary name and renamed, so a failed plot never replaces a good one.
#pragma once
#include <string>

namespace bakallm {

// Runs gnuplot on BODY (everything after `set terminal` / `set output`) to
// draw PNG_PATH at WIDTH x HEIGHT. Returns "" or why it could not.
std::string render_png(const std::string& body, const std::string& png_path, int width = 900, int height = 540);

}  // namespace bakallm
