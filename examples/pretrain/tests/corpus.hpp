#pragma once
// A small real English corpus for the tests: ~300 KB cut from gcide when Debian's dict-gcide is installed, else
// the committed public-domain excerpt (tests/data/excerpt.txt).

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "data.hpp"

namespace pretrain::test {

inline const char* gcide_path = "/usr/share/dictd/gcide.dict.dz";

inline bool have_gcide() {
  return std::filesystem::exists(gcide_path);
}

/// A fresh directory under the build tree's temporary area, removed first if present.
inline std::filesystem::path scratch(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("qsafe-pretrain-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// Writes the test corpus into `dir` and returns its path.
inline std::filesystem::path small_corpus(const std::filesystem::path& dir, std::size_t bytes = 300000) {
  const auto path = dir / "corpus.txt";
  std::string text;
  if (have_gcide()) {
    const std::string all = clean_gcide(read_file(gcide_path));
    // from the middle of the dictionary (letter C onwards), whole paragraphs
    const std::size_t start = all.find('\n', all.size() / 8) + 1;
    const std::size_t end = all.find('\n', start + bytes) + 1;
    text = all.substr(start, end - start);
  } else {
    text = read_file(std::filesystem::path(QSAFE_PRETRAIN_TEST_DATA) / "excerpt.txt");
  }
  std::ofstream(path) << text;
  return path;
}

}  // namespace pretrain::test
