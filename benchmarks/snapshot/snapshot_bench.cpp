// Layered snapshot benchmarks, each beside a baseline measured in the same run:
// build throughput (vs. plain preads of the same input data), manifest load
// time (256 MiB snapshot, and a synthetic 16 GiB one), and lookup ns/op (vs. a
// flat per-block table). `--smoke` shrinks every input so `meson test` runs it
// in a second and the benchmarks never rot.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "ringpager/file_desc.hpp"
#include "ringpager/snapshot.hpp"
#include "snapshot/layered/format.hpp"

namespace {

namespace layered = ringpager::layered;
constexpr uint64_t page_bytes = 4096;
bool smoke = false;

void check(bool ok, const std::string& what) {
    if (!ok) {
        std::fprintf(stderr, "snapshot_bench: %s\n", what.c_str());
        std::exit(1);
    }
}

void write_at(int fd, const void* data, uint64_t bytes, uint64_t offset) {
    check(::pwrite(fd, data, bytes, static_cast<off_t>(offset)) == static_cast<ssize_t>(bytes), "pwrite failed");
}

// Generated inputs and the snapshot built from them, made once per process.
struct Fixture {
    std::string dir;
    std::string base, diff, manifest, big_manifest;
    uint64_t guest_bytes = 0;

    Fixture() {
        char pattern[] = "/tmp/rp-snapshot-bench-XXXXXX";
        check(::mkdtemp(pattern) != nullptr, "mkdtemp failed");
        dir = pattern;
        guest_bytes = smoke ? (8u << 20) : (256u << 20);
        make_inputs();
        manifest = dir + "/snap.rpm";
        ringpager::SnapshotBuildReport report;
        build_into(manifest, report);
        make_big_manifest(smoke ? (uint64_t{1} << 30) : (uint64_t{16} << 30));
    }
    ~Fixture() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    // Base: 60% zero pages, 10% duplicates, in runs; diff: 5% of pages changed.
    void make_inputs() {
        uint64_t pages = guest_bytes / page_bytes;
        std::mt19937_64 rng(1);
        std::vector<uint64_t> page(page_bytes / 8);
        std::vector<std::vector<uint64_t>> pool;
        base = dir + "/mem.base";
        diff = dir + "/mem.diff";
        auto b = ringpager::FileDesc::open(base.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        auto d = ringpager::FileDesc::open(diff.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        check(b.ok() && d.ok(), "cannot create inputs in " + dir);
        check(::ftruncate(d->get(), static_cast<off_t>(guest_bytes)) == 0, "ftruncate failed");
        auto make_page = [&](double pick) {
            if (pick < 0.6) {
                std::fill(page.begin(), page.end(), 0);
            } else if (pick < 0.7 && !pool.empty()) {
                page = pool[rng() % pool.size()];
            } else {
                for (auto& w : page) w = rng();
                if (pool.size() < 4096) pool.push_back(page);
            }
        };
        std::vector<uint64_t> run_page;
        for (uint64_t p = 0; p < pages;) {
            double pick = std::uniform_real_distribution<double>(0, 1)(rng);
            for (uint64_t n = 1 + rng() % 16; n > 0 && p < pages; --n, ++p) {
                make_page(pick);
                write_at(b->get(), page.data(), page_bytes, p * page_bytes);
            }
        }
        for (uint64_t i = 0; i < pages / 20; ++i) {
            make_page(std::uniform_real_distribution<double>(0.5, 1)(rng));
            write_at(d->get(), page.data(), page_bytes, (rng() % pages) * page_bytes);
        }
    }

    void build_into(const std::string& out, ringpager::SnapshotBuildReport& report) const {
        ringpager::SnapshotBuildOptions options;
        options.base_path = base;
        options.diff_paths = {diff};
        options.manifest_path = out;
        options.sync = false;
        std::string error;
        check(ringpager::build_layered_snapshot(options, report, error), error);
    }

    // A manifest for a guest of `guest` bytes with one sparse layer: runs of
    // 1..16 blocks alternate between zero and data, as in real guest memory.
    void make_big_manifest(uint64_t guest) {
        layered::Manifest m;
        m.block_size_bytes = page_bytes;
        m.guest_size_bytes = guest;
        m.block_count = guest / page_bytes;
        std::mt19937_64 rng(2);
        uint64_t slot = 0;
        bool zero = true;
        for (uint64_t b = 0; b < m.block_count; zero = !zero) {
            m.extents.push_back({b, zero ? layered::zero_location : layered::make_location(0, slot)});
            uint64_t run = std::min<uint64_t>(1 + rng() % 16, m.block_count - b);
            if (!zero) slot += run;
            b += run;
        }
        m.checksums.resize(slot);
        for (auto& c : m.checksums) c = rng();
        layered::LayerRecord rec;
        rec.block_count = slot;
        rec.data_offset_bytes = page_bytes;
        rec.file_size_bytes = page_bytes + slot * page_bytes;
        rec.checksums_xxh3 = XXH3_64bits(m.checksums.data(), slot * 8);
        rec.id[0] = 1;
        rec.path = "big.rpm.layer0.rpl";
        m.snapshot_id[0] = 2;
        m.layers.push_back(rec);
        layered::LayerHeader h{rec.id, m.snapshot_id, 0, page_bytes, slot, page_bytes, rec.checksums_xxh3};
        auto layer = ringpager::FileDesc::open((dir + "/" + rec.path).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        check(layer.ok(), "cannot create the big layer");
        auto header = layered::encode_layer_header(h);
        write_at(layer->get(), header.data(), header.size(), 0);
        check(::ftruncate(layer->get(), static_cast<off_t>(rec.file_size_bytes)) == 0, "ftruncate failed");
        big_manifest = dir + "/big.rpm";
        auto bytes = layered::encode_manifest(m);
        auto f = ringpager::FileDesc::open(big_manifest.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        check(f.ok(), "cannot create the big manifest");
        write_at(f->get(), bytes.data(), bytes.size(), 0);
    }
};

Fixture& fixture() {
    static Fixture f;
    return f;
}

void BM_Build(benchmark::State& state) {
    Fixture& f = fixture();
    ringpager::SnapshotBuildReport report;
    for (auto _ : state) f.build_into(f.dir + "/bench.rpm", report);
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * report.bytes_in));
    // Bytes the build wrote per byte of input data.
    state.counters["written_ratio"] = static_cast<double>(report.bytes_written) / static_cast<double>(report.bytes_in);
}
BENCHMARK(BM_Build)->Unit(benchmark::kMillisecond)->UseRealTime();

// Baseline: just read the inputs' data regions with plain 8 MiB preads, no
// hashing and no writing: the floor any build has to stand on.
void BM_BaselineReadInputs(benchmark::State& state) {
    Fixture& f = fixture();
    std::vector<char> buffer(8 << 20);
    uint64_t bytes = 0;
    for (auto _ : state) {
        bytes = 0;
        for (const std::string& path : {f.base, f.diff}) {
            auto in = ringpager::FileDesc::open(path.c_str(), O_RDONLY);
            check(in.ok(), "cannot open " + path);
            off_t data = 0;
            while ((data = ::lseek(in->get(), data, SEEK_DATA)) >= 0) {
                off_t hole = ::lseek(in->get(), data, SEEK_HOLE);
                check(hole > data, "lseek(SEEK_HOLE) failed");
                for (off_t at = data; at < hole;) {
                    auto want = static_cast<size_t>(std::min<off_t>(hole - at, static_cast<off_t>(buffer.size())));
                    ssize_t n = ::pread(in->get(), buffer.data(), want, at);
                    check(n > 0, "pread failed");
                    at += n;
                    bytes += static_cast<uint64_t>(n);
                }
                data = hole;
            }
        }
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_BaselineReadInputs)->Unit(benchmark::kMillisecond)->UseRealTime();

void load(benchmark::State& state, const std::string& manifest) {
    for (auto _ : state) {
        std::string error;
        auto source = ringpager::open_layered_source(manifest, false, error);
        check(source != nullptr, error);
        benchmark::DoNotOptimize(source.get());
    }
}
void BM_ManifestLoad(benchmark::State& state) { load(state, fixture().manifest); }
BENCHMARK(BM_ManifestLoad)->Unit(benchmark::kMicrosecond);

void BM_ManifestLoad16GiB(benchmark::State& state) {
    load(state, fixture().big_manifest);
    state.SetLabel(smoke ? "1 GiB guest (smoke)" : "16 GiB guest");
}
BENCHMARK(BM_ManifestLoad16GiB)->Unit(benchmark::kMillisecond);

std::vector<uint64_t> random_offsets(uint64_t guest) {
    std::mt19937_64 rng(3);
    std::vector<uint64_t> offsets(1 << 16);
    for (auto& o : offsets) o = rng() % guest;
    return offsets;
}

void lookups(benchmark::State& state, const std::string& manifest) {
    std::string error;
    auto source = ringpager::open_layered_source(manifest, false, error);
    check(source != nullptr, error);
    auto offsets = random_offsets(source->size_bytes());
    size_t i = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(source->lookup(offsets[i], page_bytes));
        i = (i + 1) & (offsets.size() - 1);
    }
}
void BM_Lookup(benchmark::State& state) { lookups(state, fixture().manifest); }
BENCHMARK(BM_Lookup);
void BM_Lookup16GiB(benchmark::State& state) { lookups(state, fixture().big_manifest); }
BENCHMARK(BM_Lookup16GiB);

// Baseline: a flat per-block table (8 bytes a block), the uncompressed layout.
void BM_BaselineFlatTableLookup(benchmark::State& state) {
    uint64_t guest = fixture().guest_bytes;
    std::vector<uint64_t> table(guest / page_bytes);
    for (uint64_t i = 0; i < table.size(); ++i) table[i] = i * page_bytes;
    auto offsets = random_offsets(guest);
    size_t i = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(table[offsets[i] / page_bytes] + offsets[i] % page_bytes);
        i = (i + 1) & (offsets.size() - 1);
    }
}
BENCHMARK(BM_BaselineFlatTableLookup);

}  // namespace

int main(int argc, char** argv) {
    std::vector<char*> args;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--smoke") == 0) {
            smoke = true;
        } else {
            args.push_back(argv[i]);
        }
    }
    int count = static_cast<int>(args.size());
    benchmark::Initialize(&count, args.data());
    if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
