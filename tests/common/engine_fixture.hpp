// Shared test scaffolding: a temporary directory with a generated snapshot and
// an in-process engine serving it, plus fd counting for leak checks.
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "guestsim/expected_image.hpp"
#include "guestsim/guest.hpp"
#include "guestsim/hugepages.hpp"
#include "guestsim/image.hpp"
#include "ringpager/engine.hpp"
#include "ringpager/snapshot.hpp"
#include "snapshot/working_set.hpp"

namespace ringpager::testing {

inline constexpr std::chrono::seconds kWait{30};

inline size_t open_fd_count() {
    size_t n = 0;
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return 0;
    while (readdir(dir) != nullptr) n++;
    closedir(dir);
    return n;
}

class TempDir {
public:
    TempDir() {
        char pattern[] = "/tmp/ringpager-test-XXXXXX";
        path_ = mkdtemp(pattern);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

// Generates an image once per (size, zero fraction, seed) in the temp dir.
inline std::string make_image(const TempDir& dir, const std::string& name, uint64_t size_bytes,
                              double zero_fraction = 0.3, uint64_t seed = 7, bool sparse = false) {
    const std::string path = dir.file(name);
    sim::GenerateOptions options;
    options.zero_fraction = zero_fraction;
    options.duplicate_fraction = 0.1;
    options.seed = seed;
    options.sparse_zeros = sparse;
    auto stats = sim::generate_image(path, size_bytes, options);
    EXPECT_TRUE(stats.ok()) << (stats.ok() ? "" : stats.error().message());
    return path;
}

struct RunningEngine {
    std::unique_ptr<Engine> engine;
    std::string socket;
};

inline RunningEngine start_engine(const TempDir& dir, const std::string& mem_file, ServeMode mode = ServeMode::lazy,
                                  unsigned reactors = 2, std::chrono::milliseconds handshake_timeout = std::chrono::seconds(30),
                                  std::shared_ptr<const Source> source = nullptr,
                                  const std::function<void(EngineConfig&)>& tweak = {}) {
    std::string error;
    if (!source) source = open_raw_source(mem_file, error);
    EXPECT_TRUE(source) << error;
    EngineConfig config;
    RunningEngine running;
    running.socket = dir.file("uffd.sock");
    config.listeners.push_back({running.socket, source, mode});
    config.reactors = reactors;
    config.handshake_timeout = handshake_timeout;
    // Tests pin prefetch's pace while faults flow: the default (automatic)
    // follows the host's CPU pressure, which is not the test's to decide.
    // The tests of the pace set it themselves.
    config.prefetch_during_faults = PrefetchDuringFaults::steps;
    if (tweak) tweak(config);
    running.engine = Engine::start(std::move(config), error);
    EXPECT_TRUE(running.engine) << error;
    return running;
}

// A tweak for start_engine: its listener replays `set` first (prefetch mode).
inline std::function<void(EngineConfig&)> replaying(const WorkingSet& set) {
    auto runs = std::make_shared<const std::vector<PageRun>>(set.runs);
    const uint64_t page_size = set.page_size_bytes;
    return [runs, page_size](EngineConfig& c) {
        c.listeners[0].prefetch_first = runs;
        c.listeners[0].prefetch_first_page_size = page_size;
    };
}

// The layered snapshot `manifest` as a source; compressed frames are kept
// decompressed in `dir`.
inline std::shared_ptr<const Source> open_layered(const TempDir& dir, const std::string& manifest) {
    LayeredSourceOptions options;
    options.decompress_dir = dir.file("");
    std::string error;
    std::shared_ptr<const Source> source = open_layered_source(manifest, options, error);
    EXPECT_TRUE(source) << error;
    return source;
}

inline sim::Guest make_guest(const std::string& socket, std::vector<uint64_t> regions, uint64_t page_size = 4096,
                             sim::HandshakeShape shape = sim::HandshakeShape::v1_12) {
    sim::GuestConfig config;
    config.socket_path = socket;
    config.region_sizes_bytes = std::move(regions);
    config.page_size_bytes = page_size;
    config.shape = shape;
    auto guest = sim::Guest::create(config);
    if (!guest.ok()) {
        ADD_FAILURE() << "guest: " << guest.error().message();
        std::abort();
    }
    return std::move(guest.value());
}

}  // namespace ringpager::testing
