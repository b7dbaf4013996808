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

namespace {

WorkingSet recording(std::vector<uint64_t> pages) {
    WorkingSet set = sample_set();
    set.runs = runs_from_pages(pages);
    return set;
}

TEST(WorkingSetMerge, UnionOrderedByMedianFirstTouchRank) {
    // Page 7: ranks 0, 2, 1 (median 1); page 3: 1, 0, 0 (median 0);
    // page 9: 2, 1 (lower median 1, two recordings); page 5: rank 2, once.
    const std::vector<WorkingSet> sets = {recording({7, 3, 9}), recording({3, 9, 7}), recording({3, 7, 5})};
    WorkingSet merged;
    std::string error;
    ASSERT_TRUE(merge_working_sets(sets, 1, merged, error)) << error;
    // Ties at median 1: page 7 (3 recordings) before page 9 (2).
    EXPECT_EQ(pages_from_runs(merged.runs), (std::vector<uint64_t>{3, 7, 9, 5}));
    EXPECT_EQ(merged.identity, sample_set().identity);
}

TEST(WorkingSetMerge, MinCountKeepsPagesSeenInAtLeastK) {
    const std::vector<WorkingSet> sets = {recording({7, 3, 9}), recording({3, 9, 7}), recording({3, 7, 5})};
    WorkingSet merged;
    std::string error;
    ASSERT_TRUE(merge_working_sets(sets, 3, merged, error)) << error;
    EXPECT_EQ(pages_from_runs(merged.runs), (std::vector<uint64_t>{3, 7}));
    ASSERT_TRUE(merge_working_sets(sets, 2, merged, error)) << error;
    EXPECT_EQ(pages_from_runs(merged.runs), (std::vector<uint64_t>{3, 7, 9}));
}

TEST(WorkingSetMerge, ContiguousPagesInMergedOrderBecomeOneRun) {
    const std::vector<WorkingSet> sets = {recording({10, 11, 12, 40}), recording({10, 11, 12})};
    WorkingSet merged;
    std::string error;
    ASSERT_TRUE(merge_working_sets(sets, 1, merged, error)) << error;
    ASSERT_EQ(merged.runs.size(), 2u);
    EXPECT_EQ(merged.runs[0].first_page, 10u);
    EXPECT_EQ(merged.runs[0].pages, 3u);
}

TEST(WorkingSetMerge, RecordingsOfAnotherSnapshotOrPageSizeAreRefused) {
    WorkingSet foreign = recording({1});
    foreign.identity.fingerprint++;
    WorkingSet huge = recording({1});
    huge.page_size_bytes = 2 << 20;
    WorkingSet merged;
    std::string error;
    EXPECT_FALSE(merge_working_sets({recording({1}), foreign}, 1, merged, error));
    EXPECT_EQ(error, "recording 2 is of another snapshot than recording 1");
    EXPECT_FALSE(merge_working_sets({recording({1}), huge}, 1, merged, error));
    EXPECT_EQ(error, "recording 2 has another page size than recording 1");
}

}  // namespace
