// Pins the working-set file format: a set survives encode/decode exactly,
// runs are built from first-touch order, and a truncated, corrupt, foreign or
// unreadable file is refused with a one-line error naming the file and cause.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "snapshot/working_set.hpp"

using namespace ringpager;

namespace {

class TempFile {
public:
    TempFile() {
        char pattern[] = "/tmp/ringpager-ws-XXXXXX";
        dir_ = mkdtemp(pattern);
    }
    ~TempFile() { std::filesystem::remove_all(dir_); }
    std::string path(const std::string& name = "set.ws") const { return dir_ + "/" + name; }

private:
    std::string dir_;
};

WorkingSet sample_set() {
    WorkingSet set;
    set.page_size_bytes = 4096;
    set.identity = {64ull << 20, 0x1234abcdull};
    set.runs = {{900, 3}, {5, 1}, {16000, 2}, {6, 10}};
    return set;
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST(WorkingSetFormat, RunsFollowFirstTouchOrder) {
    const std::vector<uint64_t> pages = {10, 11, 12, 3, 4, 99, 13};
    const std::vector<PageRun> runs = runs_from_pages(pages);
    ASSERT_EQ(runs.size(), 4u);
    EXPECT_EQ(runs[0].first_page, 10u);
    EXPECT_EQ(runs[0].pages, 3u);
    EXPECT_EQ(runs[1].first_page, 3u);
    EXPECT_EQ(runs[3].first_page, 13u);
    EXPECT_EQ(pages_from_runs(runs), pages);
}

TEST(WorkingSetFormat, EncodeDecodeRoundTrip) {
    const WorkingSet set = sample_set();
    WorkingSet back;
    std::string error;
    ASSERT_TRUE(decode_working_set(encode_working_set(set), back, error)) << error;
    EXPECT_EQ(back.page_size_bytes, 4096u);
    EXPECT_EQ(back.identity, set.identity);
    EXPECT_EQ(pages_from_runs(back.runs), pages_from_runs(set.runs));
    EXPECT_EQ(back.pages(), 16u);
}

TEST(WorkingSetFormat, AtomicWriteThenLoad) {
    TempFile dir;
    std::string error;
    ASSERT_TRUE(write_working_set_file(dir.path(), sample_set(), error)) << error;
    EXPECT_FALSE(std::filesystem::exists(dir.path() + ".tmp"));
    WorkingSet back;
    ASSERT_TRUE(load_working_set_for(dir.path(), sample_set().identity, back, error)) << error;
    EXPECT_EQ(back.pages(), 16u);
}

TEST(WorkingSetFormat, RefusalsAreOneLineNamingFileAndCause) {
    TempFile dir;
    const std::string path = dir.path();
    const std::string good = encode_working_set(sample_set());
    WorkingSet out;
    std::string error;
    const SnapshotIdentity id = sample_set().identity;

    write_bytes(path, good.substr(0, good.size() - 2));
    EXPECT_FALSE(load_working_set_for(path, id, out, error));
    EXPECT_EQ(error, "working set " + path + ": truncated: " + std::to_string(good.size() - 74) + " of " +
                         std::to_string(good.size() - 72) + " body bytes");

    write_bytes(path, good.substr(0, 20));
    EXPECT_FALSE(load_working_set_for(path, id, out, error));
    EXPECT_EQ(error, "working set " + path + ": truncated: 20 bytes, shorter than its header");

    std::string corrupt = good;
    corrupt[good.size() - 1] ^= 0x01;
    write_bytes(path, corrupt);
    EXPECT_FALSE(load_working_set_for(path, id, out, error));
    EXPECT_EQ(error, "working set " + path + ": corrupt: checksum mismatch");

    std::string magic = good;
    magic[0] = 'X';
    write_bytes(path, magic);
    EXPECT_FALSE(load_working_set_for(path, id, out, error));
    EXPECT_EQ(error, "working set " + path + ": not a working-set file (bad magic)");

    write_bytes(path, good);
    EXPECT_FALSE(load_working_set_for(path, {id.size_bytes, id.fingerprint + 1}, out, error));
    EXPECT_EQ(error, "working set " + path + ": recorded from another snapshot (content fingerprint differs)");
    EXPECT_FALSE(load_working_set_for(path, {id.size_bytes * 2, id.fingerprint}, out, error));
    EXPECT_EQ(error, "working set " + path + ": recorded from another snapshot (67108864 bytes, this one has 134217728)");

    EXPECT_FALSE(load_working_set_for(dir.path("absent"), id, out, error));
    EXPECT_EQ(error, "working set " + dir.path("absent") + ": open: No such file or directory");
    EXPECT_EQ(error.find('\n'), std::string::npos);
}

TEST(WorkingSetFormat, RunsPastTheSnapshotAreRefused) {
    WorkingSet set = sample_set();
    set.runs.push_back({(64ull << 20) / 4096 - 1, 2});
    WorkingSet out;
    std::string error;
    EXPECT_FALSE(decode_working_set(encode_working_set(set), out, error));
    EXPECT_EQ(error, "corrupt: run 4 passes the snapshot's end");
}

}  // namespace
