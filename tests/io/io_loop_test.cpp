// Pins IoLoop, the one io_uring layer: results are classified against literal
// errno values, tags are unique and freed, a full submission queue parks
// operations until the next submit, and injected results (the fake backend)
// complete without reaching the kernel.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "io/io_loop.hpp"
#include "ringpager/file_desc.hpp"

using namespace ringpager;
using namespace ringpager::io;

namespace {

TEST(IoOutcome, ClassifiesEachExpectedErrnoOnce) {
    EXPECT_EQ(classify(OpType::read_fixed, 4096), Outcome::ok);
    EXPECT_EQ(classify(OpType::read_fixed, 0), Outcome::ok);
    EXPECT_EQ(classify(OpType::read, -4), Outcome::retry);            // EINTR
    EXPECT_EQ(classify(OpType::read, -11), Outcome::would_block);     // EAGAIN
    EXPECT_EQ(classify(OpType::poll, -125), Outcome::cancelled);      // ECANCELED
    EXPECT_EQ(classify(OpType::timeout, -62), Outcome::timed_out);    // ETIME
    EXPECT_EQ(classify(OpType::read, -62), Outcome::failed);          // ETIME from a read is unexpected
    EXPECT_EQ(classify(OpType::accept, -24), Outcome::no_fds);        // EMFILE
    EXPECT_EQ(classify(OpType::accept, -23), Outcome::no_fds);        // ENFILE
    EXPECT_EQ(classify(OpType::read, -24), Outcome::failed);
    EXPECT_EQ(classify(OpType::read, -9), Outcome::gone);             // EBADF
    EXPECT_EQ(classify(OpType::read, -3), Outcome::gone);             // ESRCH
    EXPECT_EQ(classify(OpType::read_fixed, -5), Outcome::failed);     // EIO
    EXPECT_EQ(error_of(-5), 5);
    EXPECT_EQ(error_of(12), 0);
}

struct Loop {
    std::unique_ptr<IoLoop> io;
    FileDesc efd{eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
    unsigned slot = 0;
    uint64_t value = 0;
    Loop(unsigned sq = 8) {
        auto created = IoLoop::create({sq, 64, 4});
        EXPECT_TRUE(created.ok());
        io = std::move(*created);
        auto s = io->add_file(efd.get());
        EXPECT_TRUE(s.ok());
        slot = *s;
    }
    void post() {
        const uint64_t one = 1;
        ASSERT_EQ(write(efd.get(), &one, sizeof one), 8);
    }
    std::vector<Completion> wait_for(size_t n) {
        std::vector<Completion> out;
        while (out.size() < n) {
            EXPECT_TRUE(io->submit_and_wait(1).ok());
            io->reap(out);
        }
        return out;
    }
};

TEST(IoLoopTest, AReadCompletesWithItsDataAndFreesItsTag) {
    Loop l;
    const size_t free_before = l.io->ops_free();
    const Tag tag = l.io->read(OpData{7, 1, 2, 99}, l.slot, &l.value, sizeof l.value);
    EXPECT_NE(tag, 0u);
    EXPECT_EQ(l.io->ops_free(), free_before - 1);
    l.post();
    const auto out = l.wait_for(1);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].data.kind, 7);
    EXPECT_EQ(out[0].data.arg, 99u);
    EXPECT_EQ(out[0].type, OpType::read);
    EXPECT_EQ(out[0].res, 8);
    EXPECT_EQ(out[0].outcome, Outcome::ok);
    EXPECT_EQ(l.io->ops_free(), free_before);
}

TEST(IoLoopTest, AFullSubmissionQueueParksOperationsUntilTheNextSubmit) {
    Loop l;
    l.io->faults().fill_sq(3);
    std::vector<uint64_t> values(3);
    for (uint64_t& v : values) l.io->read(OpData{1, 0, 0, 0}, l.slot, &v, sizeof v);
    EXPECT_EQ(l.io->parked(), 3u);  // none reached the SQ
    l.post();
    const auto out = l.wait_for(1);
    EXPECT_EQ(l.io->parked(), 0u);
    EXPECT_EQ(out[0].outcome, Outcome::ok);
}

TEST(IoLoopTest, CancellingAParkedOperationCompletesItAsCancelled) {
    Loop l;
    l.io->faults().fill_sq(1);
    const Tag tag = l.io->read(OpData{3, 0, 0, 5}, l.slot, &l.value, sizeof l.value);
    ASSERT_EQ(l.io->parked(), 1u);
    l.io->cancel(tag);
    EXPECT_EQ(l.io->parked(), 0u);
    const auto out = l.wait_for(1);
    EXPECT_EQ(out[0].data.arg, 5u);
    EXPECT_EQ(out[0].res, -ECANCELED);
    EXPECT_EQ(out[0].outcome, Outcome::cancelled);
}

TEST(IoLoopTest, InjectedResultsCompleteWithoutTheKernel) {
    Loop l;
    l.io->faults().inject(OpType::read, -EIO);
    l.io->faults().inject(OpType::read, 3);  // a short read
    l.io->read(OpData{1, 0, 0, 1}, l.slot, &l.value, sizeof l.value);
    l.io->read(OpData{1, 0, 0, 2}, l.slot, &l.value, sizeof l.value);
    EXPECT_FALSE(l.io->faults().pending());
    const auto out = l.wait_for(2);  // nothing was posted: only the injections complete
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].res, -EIO);
    EXPECT_EQ(out[0].outcome, Outcome::failed);
    EXPECT_EQ(out[1].res, 3);
    EXPECT_EQ(l.value, 0u);
}

TEST(IoLoopTest, InjectedSubmitAndRegistrationFailuresAreReported) {
    Loop l;
    l.io->faults().fail_submit(EIO);
    auto submitted = l.io->submit_and_wait(0);
    ASSERT_FALSE(submitted.ok());
    EXPECT_EQ(submitted.error().code, EIO);
    l.io->faults().fail_file_registration(EMFILE);
    auto added = l.io->add_file(l.efd.get());
    ASSERT_FALSE(added.ok());
    EXPECT_EQ(added.error().message(), "io_uring_register_files_update: Too many open files");
    EXPECT_TRUE(l.io->add_file(l.efd.get()).ok());
}

TEST(IoLoopTest, TheFileTableRunsOutCleanly) {
    Loop l;  // 4 slots, one taken
    for (int i = 0; i < 3; i++) EXPECT_TRUE(l.io->add_file(l.efd.get()).ok());
    auto full = l.io->add_file(l.efd.get());
    ASSERT_FALSE(full.ok());
    EXPECT_EQ(full.error().code, ENFILE);
    l.io->remove_file(l.slot);
    EXPECT_TRUE(l.io->add_file(l.efd.get()).ok());
}

}  // namespace
