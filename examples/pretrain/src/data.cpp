#include "data.hpp"

#include <fcntl.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "fmt/core.h"

namespace pretrain {

std::string read_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw user_error(fmt::format("'{}' does not exist", path.string()));
  if (!fs::is_regular_file(path, ec)) throw user_error(fmt::format("'{}' is not a regular file", path.string()));
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files unchanged
  if (f == nullptr) throw user_error(fmt::format("cannot open '{}': {}", path.string(), std::strerror(errno)));
  std::string out;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(f, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<std::size_t>(n));
  int err = 0;
  const char* message = gzerror(f, &err);
  const std::string why = message != nullptr ? message : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) {
    throw user_error(fmt::format("cannot read '{}': {}", path.string(), why));
  }
  return out;
}

void write_atomically(const fs::path& path, const std::string& bytes) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw user_error(fmt::format("directory '{}' does not exist", dir.string()));
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw user_error(fmt::format("cannot write '{}': {}", tmp.string(), std::strerror(errno)));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw user_error(fmt::format("cannot write '{}': {}", tmp.string(), why));
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw user_error(fmt::format("cannot flush '{}'", tmp.string()));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw user_error(fmt::format("cannot rename '{}' to '{}': {}", tmp.string(), path.string(), why));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// gcide

namespace {

// Removes `[...]` (nested; `depth` carries an etymology over wrapped lines), `\...\` and braces; drops non-ASCII
// and control bytes; collapses spaces.
std::string clean_line(const std::string& line, int& depth) {
  std::string out;
  bool in_pron = false;
  for (char ch : line) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '[') {
      ++depth;
      continue;
    }
    if (c == ']') {
      if (depth > 0) --depth;
      continue;
    }
    if (depth > 0) continue;
    if (c == '\\') {
      in_pron = !in_pron;
      continue;
    }
    if (in_pron || c == '{' || c == '}' || c >= 0x80 || c < 0x20) continue;
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out.push_back(static_cast<char>(c));
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

std::string clean_gcide(const std::string& text) {
  std::istringstream in(text);
  std::string line, out, paragraph;
  bool started = false;
  int depth = 0;
  auto flush = [&] {
    // Drops fragments left empty or reduced to punctuation by the cleaning.
    if (std::count_if(paragraph.begin(), paragraph.end(), [](char c) { return std::isalpha(c) != 0; }) >= 3) {
      out += paragraph;
      out += '\n';
    }
    paragraph.clear();
  };
  while (std::getline(in, line)) {
    const bool headword = !line.empty() && line[0] != ' ' && line.find('\\') != std::string::npos;
    if (!started) {
      // The database header (00-database-* entries and the licence) precedes the first real headword.
      if (!headword || line.rfind("00-", 0) == 0) continue;
      started = true;
    }
    if (headword || line.find_first_not_of(' ') == std::string::npos) depth = 0;  // no bracket spans entries
    if (headword) flush();
    const std::string cleaned = clean_line(line, depth);
    if (cleaned.empty()) {
      if (depth == 0) flush();
      continue;
    }
    if (!paragraph.empty()) paragraph += ' ';
    paragraph += cleaned;
  }
  flush();
  return out;
}

std::vector<std::string> read_documents(const fs::path& corpus) {
  std::error_code ec;
  if (!fs::exists(corpus, ec)) throw user_error(fmt::format("corpus '{}' does not exist", corpus.string()));
  std::vector<fs::path> files;
  if (fs::is_directory(corpus, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(corpus, ec)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    if (ec) throw user_error(fmt::format("cannot list '{}': {}", corpus.string(), ec.message()));
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(corpus);
  }
  std::vector<std::string> docs;
  for (const fs::path& f : files) {
    std::istringstream in(read_file(f));
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") != std::string::npos) docs.push_back(line);
    }
  }
  if (docs.empty()) throw user_error(fmt::format("corpus '{}' is empty (no non-blank line)", corpus.string()));
  return docs;
}

// ---------------------------------------------------------------------------------------------------------------
// tokenizer

tokenizer::tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
tokenizer::~tokenizer() = default;
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;

namespace {

class documents_iterator : public sentencepiece::SentenceIterator {
 public:
  explicit documents_iterator(const std::vector<std::string>& docs, std::size_t stride)
      : docs_(docs), stride_(stride) {}
  bool done() const override { return i_ >= docs_.size(); }
  void Next() override { i_ += stride_; }
  const std::string& value() const override { return docs_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& docs_;
  std::size_t stride_, i_ = 0;
};

}  // namespace

tokenizer tokenizer::train(const std::vector<std::string>& documents, const fs::path& model_path, int vocab_size,
                           int threads) {
  if (vocab_size < 16 || vocab_size > 65536) {
    throw user_error(fmt::format("vocab size {} is outside [16, 65536]", vocab_size));
  }
  sentencepiece::SetRandomGeneratorSeed(1234);
  // Every document up to 400k; beyond that an evenly strided sample, so training stays a minute on 2 cores.
  documents_iterator it(documents, std::max<std::size_t>(1, documents.size() / 400000));
  const std::string args = fmt::format(
      "--model_type=unigram --vocab_size={} --hard_vocab_limit=false --character_coverage=1.0 "
      "--pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=-1 --pad_piece=[PAD] --unk_piece=[UNK] "
      "--control_symbols=[CLS],[SEP],[MASK] --num_threads={} --max_sentence_length=16384 --minloglevel=2 "
      "--input_sentence_size=0 --shuffle_input_sentence=false",
      vocab_size, std::max(1, threads));
  std::string proto;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  if (!status.ok()) throw user_error(fmt::format("tokenizer training failed: {}", status.ToString()));
  write_atomically(model_path, proto);
  return load(model_path);
}

tokenizer tokenizer::load(const fs::path& model_path) {
  tokenizer t;
  const auto status = t.sp_->Load(model_path.string());
  if (!status.ok()) {
    throw user_error(fmt::format("cannot load tokenizer '{}': {}", model_path.string(), status.ToString()));
  }
  auto id = [&](const char* piece) { return t.sp_->PieceToId(piece); };
  t.specials_ = {id("[PAD]"), id("[UNK]"), id("[CLS]"), id("[SEP]"), id("[MASK]")};
  if (t.specials_.cls == t.specials_.unk || t.specials_.sep == t.specials_.unk || t.specials_.mask == t.specials_.unk ||
      t.specials_.pad == t.specials_.unk) {
    throw user_error(fmt::format("tokenizer '{}' lacks the BERT special tokens", model_path.string()));
  }
  return t;
}

std::vector<std::int32_t> tokenizer::encode(const std::string& text) const {
  const std::vector<int> ids = sp_->EncodeAsIds(text);
  return {ids.begin(), ids.end()};
}
std::string tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  return sp_->DecodeIds(std::vector<int>(ids.begin(), ids.end()));
}
int tokenizer::vocab_size() const {
  return sp_->GetPieceSize();
}

// ---------------------------------------------------------------------------------------------------------------
// shards

namespace {
constexpr std::int32_t shard_magic = 20240520;
}

void write_shard(const fs::path& path, const std::vector<std::uint16_t>& tokens) {
  std::int32_t header[256] = {};
  header[0] = shard_magic;
  header[1] = 1;
  header[2] = static_cast<std::int32_t>(tokens.size());
  std::string bytes(sizeof header + tokens.size() * 2, '\0');
  std::memcpy(bytes.data(), header, sizeof header);
  std::memcpy(bytes.data() + sizeof header, tokens.data(), tokens.size() * 2);
  write_atomically(path, bytes);
}

std::vector<std::uint16_t> read_shard(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw user_error(fmt::format("cannot open shard '{}'", path.string()));
  std::int32_t header[256];
  if (!in.read(reinterpret_cast<char*>(header), sizeof header)) {
    throw user_error(fmt::format("shard '{}' is shorter than its 1024-byte header", path.string()));
  }
  if (header[0] != shard_magic || header[1] != 1 || header[2] < 0) {
    throw user_error(
        fmt::format("'{}' is not an llm.c token shard (magic {}, version {})", path.string(), header[0], header[1]));
  }
  std::vector<std::uint16_t> tokens(static_cast<std::size_t>(header[2]));
  if (!in.read(reinterpret_cast<char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 2)) ||
      in.peek() != std::char_traits<char>::eof()) {
    throw user_error(
        fmt::format("shard '{}' does not hold the {} tokens its header announces", path.string(), header[2]));
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------------------------
// corpora

namespace {

std::uintmax_t corpus_bytes(const fs::path& corpus) {
  std::error_code ec;
  if (!fs::is_directory(corpus, ec)) return fs::file_size(corpus, ec);
  std::uintmax_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(corpus, ec)) {
    if (e.is_regular_file()) total += e.file_size();
  }
  return total;
}

}  // namespace

token_data prepare_text(const fs::path& corpus, int vocab_size, double val_fraction, const fs::path& cache_dir,
                        int threads, bool verbose) {
  std::error_code ec;
  if (!fs::exists(corpus, ec)) throw user_error(fmt::format("corpus '{}' does not exist", corpus.string()));
  if (!(val_fraction > 0 && val_fraction < 0.5)) throw user_error("validation fraction must be in (0, 0.5)");
  const fs::path canonical = fs::weakly_canonical(corpus);
  const fs::path dir = cache_dir.empty() ? canonical.parent_path() : cache_dir;
  const std::string stem = canonical.filename().string() + ".spm" + std::to_string(vocab_size);
  const fs::path model_path = dir / (stem + ".model"), train_path = dir / (stem + ".train.bin");
  const fs::path val_path = dir / (stem + ".val.bin"), meta_path = dir / (stem + ".json");
  const std::int64_t every = std::max<std::int64_t>(2, std::llround(1.0 / val_fraction));
  const nlohmann::json meta = {{"corpus_bytes", corpus_bytes(corpus)}, {"validation_every", every}};

  token_data data;
  if (fs::exists(model_path, ec) && fs::exists(train_path, ec) && fs::exists(val_path, ec) &&
      fs::exists(meta_path, ec)) {
    nlohmann::json cached = nlohmann::json::parse(read_file(meta_path), nullptr, false);
    if (cached == meta) {
      const tokenizer tok = tokenizer::load(model_path);
      data.train = read_shard(train_path);
      data.validation = read_shard(val_path);
      data.vocab = tok.vocab_size();
      data.specials = tok.specials();
      if (verbose) fmt::print(stderr, "using cached tokenizer and tokens {}.*\n", (dir / stem).string());
      return data;
    }
  }

  const std::vector<std::string> docs = read_documents(corpus);
  if (static_cast<std::int64_t>(docs.size()) < every) {
    throw user_error(fmt::format("corpus '{}' has {} documents, too few for a validation split of 1 in {}",
                                 corpus.string(), docs.size(), every));
  }
  std::vector<std::string> train_docs;
  train_docs.reserve(docs.size());
  for (std::size_t i = 0; i < docs.size(); ++i) {
    if (static_cast<std::int64_t>(i % static_cast<std::size_t>(every)) != every - 1) train_docs.push_back(docs[i]);
  }
  if (verbose) fmt::print(stderr, "training a {}-piece tokenizer on {} documents...\n", vocab_size, train_docs.size());
  const tokenizer tok = tokenizer::train(train_docs, model_path, vocab_size, threads);
  if (verbose) fmt::print(stderr, "tokenizing {} documents...\n", docs.size());
  std::vector<std::vector<std::int32_t>> encoded(docs.size());
#pragma omp parallel for schedule(dynamic, 256)
  for (std::size_t i = 0; i < docs.size(); ++i) encoded[i] = tok.encode(docs[i]);
  for (std::size_t i = 0; i < docs.size(); ++i) {
    auto& stream =
        static_cast<std::int64_t>(i % static_cast<std::size_t>(every)) == every - 1 ? data.validation : data.train;
    for (std::int32_t id : encoded[i]) stream.push_back(static_cast<std::uint16_t>(id));
    stream.push_back(static_cast<std::uint16_t>(tok.specials().sep));  // document boundary
  }
  write_shard(train_path, data.train);
  write_shard(val_path, data.validation);
  write_atomically(meta_path, meta.dump());
  data.vocab = tok.vocab_size();
  data.specials = tok.specials();
  return data;
}

token_data prepare_shards(const fs::path& train, const fs::path& validation, int vocab_size) {
  auto read_all = [](const fs::path& p) {
    std::error_code ec;
    std::vector<fs::path> files;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::directory_iterator(p, ec)) {
        if (e.is_regular_file() && e.path().extension() == ".bin") files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());
      if (files.empty()) throw user_error(fmt::format("no .bin shard in '{}'", p.string()));
    } else {
      files.push_back(p);
    }
    std::vector<std::uint16_t> all;
    for (const auto& f : files) {
      const auto s = read_shard(f);
      all.insert(all.end(), s.begin(), s.end());
    }
    return all;
  };
  token_data data;
  data.train = read_all(train);
  data.validation = read_all(validation);
  data.has_specials = false;
  int max_id = 0;
  for (auto* s : {&data.train, &data.validation})
    for (std::uint16_t t : *s) max_id = std::max<int>(max_id, t);
  data.vocab = std::max(vocab_size, max_id + 1);
  return data;
}

// ---------------------------------------------------------------------------------------------------------------
// sampling and masking

std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t counter) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (counter + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

sampler::sampler(const std::vector<std::uint16_t>& stream, architecture arch, std::int64_t T, special_tokens specials,
                 int vocab, std::uint64_t seed, bool shuffle)
    : stream_(&stream), arch_(arch), T_(T), specials_(specials), vocab_(vocab), seed_(seed), shuffle_(shuffle) {
  const auto n = static_cast<std::int64_t>(stream.size());
  // OPT: windows of T + 1 tokens (inputs and shifted targets) with stride T; BERT: [CLS] + T - 2 tokens + [SEP].
  samples_ = arch == architecture::opt ? (n - 1) / T : n / (T - 2);
  if (samples_ <= 0) {
    throw user_error(fmt::format("the token stream ({} tokens) is shorter than one sequence of length {}", n, T));
  }
}

std::int64_t sampler::index_of(std::int64_t k) {
  if (!shuffle_) return k % samples_;
  const std::int64_t epoch = k / samples_;
  if (epoch != epoch_) {
    order_.resize(static_cast<std::size_t>(samples_));
    std::iota(order_.begin(), order_.end(), 0);
    std::mt19937_64 rng(mix_seed(seed_, 0x5eed0000ULL + static_cast<std::uint64_t>(epoch)));
    for (std::int64_t i = samples_ - 1; i > 0; --i) {  // Fisher-Yates with our own draw: portable
      const auto j = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(i + 1));
      std::swap(order_[static_cast<std::size_t>(i)], order_[static_cast<std::size_t>(j)]);
    }
    epoch_ = epoch;
  }
  return order_[static_cast<std::size_t>(k % samples_)];
}

void sampler::fill(batch& out, std::int64_t row, std::int64_t sample, std::mt19937_64& rng) const {
  const auto& s = *stream_;
  std::int32_t* tok = out.tokens.data() + row * T_;
  std::int32_t* tgt = out.targets.data() + row * T_;
  if (arch_ == architecture::opt) {
    const std::size_t base = static_cast<std::size_t>(sample * T_);
    for (std::int64_t t = 0; t < T_; ++t) {
      tok[t] = s[base + static_cast<std::size_t>(t)];
      tgt[t] = s[base + static_cast<std::size_t>(t) + 1];
    }
    return;
  }
  const std::size_t base = static_cast<std::size_t>(sample * (T_ - 2));
  tok[0] = specials_.cls;
  tgt[0] = -1;
  tok[T_ - 1] = specials_.sep;
  tgt[T_ - 1] = -1;
  // 15% of the (non-special) positions are predicted; of those 80% [MASK], 10% a random token, 10% kept.
  const auto uniform = [&rng] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  for (std::int64_t t = 1; t < T_ - 1; ++t) {
    const std::int32_t original = s[base + static_cast<std::size_t>(t - 1)];
    tok[t] = original;
    tgt[t] = -1;
    const double u = uniform();
    const double r = uniform();
    if (original == specials_.sep || original == specials_.pad || u >= 0.15) continue;
    tgt[t] = original;
    if (r < 0.8) {
      tok[t] = specials_.mask;
    } else if (r < 0.9) {
      // a random ordinary token (ids above the five specials)
      tok[t] = 5 + static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(vocab_ - 5));
    }
  }
}

batch sampler::get(std::int64_t step, std::int64_t B) {
  batch out{B,
            T_,
            std::vector<std::int32_t>(static_cast<std::size_t>(B * T_)),
            std::vector<std::int32_t>(static_cast<std::size_t>(B * T_)),
            {}};
  std::mt19937_64 rng(mix_seed(seed_, static_cast<std::uint64_t>(step)));
  for (std::int64_t i = 0; i < B; ++i) fill(out, i, index_of(step * B + i), rng);
  return out;
}

batch sampler::get_range(std::int64_t first, std::int64_t B) {
  batch out{B,
            T_,
            std::vector<std::int32_t>(static_cast<std::size_t>(B * T_)),
            std::vector<std::int32_t>(static_cast<std::size_t>(B * T_)),
            {}};
  std::mt19937_64 rng(mix_seed(seed_ ^ 0xa11da7e5ULL, static_cast<std::uint64_t>(first)));
  for (std::int64_t i = 0; i < B; ++i) fill(out, i, (first + i) % samples_, rng);
  return out;
}

double unigram_baseline(const std::vector<std::uint16_t>& train, const std::vector<std::uint16_t>& validation,
                        int vocab) {
  std::vector<double> counts(static_cast<std::size_t>(vocab), 1.0);  // add-one smoothing
  for (std::uint16_t t : train) counts[t] += 1;
  const double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  double nll = 0;
  for (std::uint16_t t : validation) nll -= std::log(counts[t] / total);
  return validation.empty() ? 0.0 : nll / static_cast<double>(validation.size());
}

}  // namespace pretrain
