// Pins UringReader: tasks are consumed strictly in order with the right bytes
// however many reads are in flight, and every failure (end of file, a
// consumer's error, a bad task) is returned after all reads have drained, so
// the reader stays usable.
#include "io/uring_reader.hpp"

#include "snapshot_test_util.hpp"

namespace {

using namespace snaptest;
using ringpager::layered::ReadTask;
using ringpager::layered::UringReader;

class UringReaderTest : public ::testing::Test {
protected:
    void SetUp() override {
        content_.resize(64 * page_bytes);
        PageGen gen(51, 0, 0);
        for (uint64_t p = 0; p < 64; ++p) gen.random_page(content_.data() + p * page_bytes);
        write_file(dir_.file("data"), content_);
        auto f = ringpager::FileDesc::open(dir_.file("data").c_str(), O_RDONLY);
        ASSERT_TRUE(f.ok());
        file_ = std::move(*f);
        auto r = UringReader::create(3, 4 * page_bytes);
        ASSERT_TRUE(r.ok()) << r.error().message();
        reader_ = std::move(*r);
    }

    // Reads `tasks` and checks each against the file's bytes, in order.
    std::string read_checked(const std::vector<ReadTask>& tasks, size_t& consumed) {
        consumed = 0;
        return reader_->read_all(file_.get(), "data", tasks, [&](size_t i, std::span<std::byte> bytes) {
            EXPECT_EQ(i, consumed);
            EXPECT_EQ(bytes.size(), tasks[i].length_bytes);
            EXPECT_EQ(std::memcmp(bytes.data(), content_.data() + tasks[i].offset, bytes.size()), 0) << "task " << i;
            ++consumed;
            return std::string{};
        });
    }

    TempDir dir_;
    Bytes content_;
    ringpager::FileDesc file_;
    std::unique_ptr<UringReader> reader_;
};

TEST_F(UringReaderTest, ConsumesTasksInOrderWithTheirBytes) {
    std::vector<ReadTask> tasks;
    for (uint64_t at = 0, n = 1; at + n * 1000 <= content_.size(); at += n * 1000, n = n % 16 + 1) {
        tasks.push_back({at, std::min<uint64_t>(n * 1000, 4 * page_bytes)});
    }
    tasks.push_back({0, 4 * page_bytes});   // backwards too
    size_t consumed = 0;
    EXPECT_EQ(read_checked(tasks, consumed), "");
    EXPECT_EQ(consumed, tasks.size());
}

TEST_F(UringReaderTest, EndOfFileIsAnErrorAndTheReaderStaysUsable) {
    std::vector<ReadTask> tasks = {{0, page_bytes}, {content_.size() - 100, page_bytes}, {page_bytes, page_bytes}};
    size_t consumed = 0;
    std::string error = read_checked(tasks, consumed);
    EXPECT_NE(error.find("data: unexpected end of file at offset " + std::to_string(content_.size())),
              std::string::npos) << error;
    EXPECT_EQ(consumed, 1u);
    EXPECT_EQ(read_checked({{page_bytes, 3 * page_bytes}}, consumed), "");
    EXPECT_EQ(consumed, 1u);
}

TEST_F(UringReaderTest, AConsumerErrorStopsTheRead) {
    std::vector<ReadTask> tasks(10, ReadTask{0, 4 * page_bytes});
    size_t calls = 0;
    std::string error = reader_->read_all(file_.get(), "data", tasks, [&](size_t, std::span<std::byte>) {
        return ++calls == 2 ? std::string("stop here") : std::string{};
    });
    EXPECT_EQ(error, "stop here");
    EXPECT_EQ(calls, 2u);
    size_t consumed = 0;
    EXPECT_EQ(read_checked(tasks, consumed), "");
    EXPECT_EQ(consumed, tasks.size());
}

TEST_F(UringReaderTest, RefusesTasksLargerThanItsBuffersAndBadSetups) {
    size_t consumed = 0;
    EXPECT_NE(read_checked({{0, 5 * page_bytes}}, consumed).find("invalid read task"), std::string::npos);
    EXPECT_EQ(consumed, 0u);
    EXPECT_FALSE(UringReader::create(0, page_bytes).ok());
    EXPECT_FALSE(UringReader::create(2, 100).ok());
    EXPECT_EQ(UringReader::create(2, 100).error().code, EINVAL);
}

}  // namespace
