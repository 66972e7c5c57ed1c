#pragma once
// Data: the gcide cleaner, text corpora (files or directories), the SentencePiece tokenizer trained on the corpus
// and cached next to it, the train/validation split, llm.c `.bin` uint16 shards, packing to length T
// (concatenate and group), BERT masking (15%; 80% [MASK], 10% random, 10% kept) and the deterministic sampler.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "config.hpp"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace pretrain {

namespace fs = std::filesystem;

/// Reads a whole file, gunzipping it when it is gzip (dictzip included). Throws user_error naming the path.
std::string read_file(const fs::path& path);

/// Writes `bytes` to `path` atomically: a temporary beside it, fsync, rename, fsync of the directory.
void write_atomically(const fs::path& path, const std::string& bytes);

/// Cleans the GNU Collaborative International Dictionary of English (.dict text) to plain English paragraphs, one
/// per line: drops the database header, pronunciations `\...\`, bracketed etymologies and source tags `[...]`,
/// cross-reference braces, non-ASCII bytes; joins each entry's wrapped lines into paragraphs.
std::string clean_gcide(const std::string& dict_text);

/// The documents of a corpus: every non-empty line of a text file, or of every regular file under a directory
/// (sorted by path). Throws user_error for a missing path, an unreadable file or an empty corpus.
std::vector<std::string> read_documents(const fs::path& corpus);

/// The BERT special tokens, always present in our tokenizer (ids 0..4).
struct special_tokens {
  std::int32_t pad = 0, unk = 1, cls = 2, sep = 3, mask = 4;
};

class tokenizer {
 public:
  tokenizer();
  ~tokenizer();
  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;

  /// Trains a unigram SentencePiece model on (a sample of) `documents` and saves it atomically to `model_path`.
  static tokenizer train(const std::vector<std::string>& documents, const fs::path& model_path, int vocab_size,
                         int threads);
  static tokenizer load(const fs::path& model_path);

  std::vector<std::int32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<std::int32_t>& ids) const;
  int vocab_size() const;
  const special_tokens& specials() const { return specials_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  special_tokens specials_;
};

/// llm.c's `.bin` shard: 256 int32 header (magic 20240520, version 1, token count), then uint16 tokens.
void write_shard(const fs::path& path, const std::vector<std::uint16_t>& tokens);
std::vector<std::uint16_t> read_shard(const fs::path& path);

/// A tokenized corpus: the train and validation token streams (documents joined by [SEP]).
struct token_data {
  std::vector<std::uint16_t> train, validation;
  int vocab = 0;
  special_tokens specials;
  bool has_specials = true;  // false for foreign .bin shards (OPT only)
};

/// Tokenizes a text corpus, training or loading the tokenizer cached beside it (`<corpus>.spm<V>.model`) or in
/// `cache_dir`, and caching the token streams as `.bin` shards. Every `round(1/val_fraction)`-th document goes to
/// validation.
token_data prepare_text(const fs::path& corpus, int vocab_size, double val_fraction, const fs::path& cache_dir,
                        int threads, bool verbose);

/// Reads `.bin` shards (files, or all `*.bin` in a directory) for train and validation.
token_data prepare_shards(const fs::path& train, const fs::path& validation, int vocab_size);

/// One batch in the model's layout (see model.hpp's batch_view).
struct batch {
  std::int64_t B = 0, T = 0;
  std::vector<std::int32_t> tokens, targets, lengths;
};

/// Packs a token stream into samples of length T and draws batches deterministically: the batch of step s is
/// samples s·B .. s·B+B-1 of the epoch-wise shuffled order (epoch e shuffled with seed ⊕ e), and BERT's masking
/// at step s draws from a generator seeded by (seed, s). The data position and the masking RNG are therefore
/// functions of (seed, step): resuming at a step reproduces the stream exactly.
class sampler {
 public:
  sampler(const std::vector<std::uint16_t>& stream, architecture arch, std::int64_t T, special_tokens specials,
          int vocab, std::uint64_t seed, bool shuffle);
  std::int64_t samples() const { return samples_; }
  /// The batch of training step `step`.
  batch get(std::int64_t step, std::int64_t B);
  /// Samples [first, first + B) in stream order, masked with a generator seeded by (seed, first): validation.
  batch get_range(std::int64_t first, std::int64_t B);

 private:
  void fill(batch& out, std::int64_t row, std::int64_t sample, std::mt19937_64& rng) const;
  std::int64_t index_of(std::int64_t k);

  const std::vector<std::uint16_t>* stream_;
  architecture arch_;
  std::int64_t T_, samples_;
  special_tokens specials_;
  int vocab_;
  std::uint64_t seed_;
  bool shuffle_;
  std::int64_t epoch_ = -1;
  std::vector<std::int64_t> order_;
};

/// Mixes a seed and a counter into a new seed (splitmix64).
std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t counter);

/// Cross-entropy (nats per token) of the smoothed train unigram distribution on the validation stream: the
/// baseline a model must beat.
double unigram_baseline(const std::vector<std::uint16_t>& train, const std::vector<std::uint16_t>& validation,
                        int vocab);

}  // namespace pretrain
