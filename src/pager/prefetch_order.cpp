#include "pager/prefetch_order.hpp"

#include <algorithm>
#include <deque>
#include <iterator>

namespace ringpager {
namespace {

class AscendingOrder final : public PrefetchOrder {
public:
    bool next(const PageStates& states, uint64_t& first_page) override {
        cursor_ = states.next_missing(cursor_);
        first_page = cursor_;
        return cursor_ < states.size();
    }
    void consumed(uint64_t first_page, uint64_t pages) override { cursor_ = first_page + pages; }
    void revisit(uint64_t first_page) override { cursor_ = std::min(cursor_, first_page); }

private:
    uint64_t cursor_ = 0;
};

// A recorded order, read in windows: the next `window_pages` pages of the
// set (in recorded order) are sorted by where their bytes are (file_key:
// file, then offset; without one by page, which is file-offset order within
// a region of a raw file), and merged into spans wherever the next run in
// that order follows the previous one in guest pages with a gap of at most
// `gap_pages`, up to `span_pages` a span. The
// prefetcher then reads one span at a time (run_limit): one read for many
// set pages, the gap's bytes read and not installed (VmPager marks only set
// pages in flight). The windows follow the recorded order, so pages touched
// early are still read early.
class RecordedOrder final : public PrefetchOrder {
public:
    RecordedOrder(std::vector<PageRange> ranges, ReplayShape shape, ReplayFileKey file_key,
                  std::vector<PageRange> zeros)
        : ranges_(std::move(ranges)), shape_(shape), file_key_(std::move(file_key)), zeros_(std::move(zeros)) {
        shape_.window_pages = std::max<uint64_t>(1, shape_.window_pages);
        shape_.span_pages = std::max<uint64_t>(1, shape_.span_pages);
    }

    bool next(const PageStates& states, uint64_t& first_page) override {
        if (next_again(states, first_page)) return true;
        for (;;) {
            while (span_ < spans_.size()) {
                const PageRange& s = spans_[span_];
                const uint64_t end = std::min(s.first_page + s.pages, states.size());
                const uint64_t page = states.next_missing(std::max(s.first_page, within_));
                if (page < end) {
                    first_page = page;
                    return true;
                }
                span_++;
                within_ = 0;
            }
            if (index_ >= ranges_.size()) return next_zero(states, first_page) || rest_.next(states, first_page);
            passed_.insert(passed_.end(), spans_.begin(), spans_.end());
            if (passed_.size() > 2 * kRevisitSpans)
                passed_.erase(passed_.begin(), passed_.end() - static_cast<long>(kRevisitSpans));
            fill_window();
        }
    }
    void consumed(uint64_t first_page, uint64_t pages) override {
        if (in_again_) {
            PageRange& r = again_.front();
            const uint64_t end = r.first_page + r.pages, from = std::min(end, first_page + pages);
            r = PageRange{from, end - from};
        } else if (span_ < spans_.size()) {
            within_ = first_page + pages;
        } else if (zero_ < zeros_.size()) {
            replay_over_ = true;
            zero_within_ = first_page + pages;
        } else {
            replay_over_ = true;
            rest_.consumed(first_page, pages);
        }
    }
    // A fetch of a span's pages came back (a compressed or s3:// snapshot):
    // the rest of that span is walked again before the replay goes on, so
    // the set's pages are installed as their bytes arrive, not when the
    // ascending rest reaches them.
    void revisit(uint64_t first_page) override {
        rest_.revisit(first_page);
        if (replay_over_) return;  // a fetch of the rest's
        const auto holds = [&](const PageRange& r) {
            return r.first_page <= first_page && first_page < r.first_page + r.pages;
        };
        auto it = std::find_if(spans_.begin(), spans_.end(), holds);
        if (it == spans_.end()) {
            // The few spans passed last: a fetch older than that is left to
            // the ascending rest, and a revisit costs a bounded search.
            const auto stop = passed_.rbegin() + static_cast<long>(std::min<size_t>(passed_.size(), kRevisitSpans));
            const auto back = std::find_if(passed_.rbegin(), stop, holds);
            if (back == stop) return;
            it = std::prev(back.base());
        }
        again_.push_back(PageRange{first_page, it->first_page + it->pages - first_page});
    }
    bool replaying() const override {
        return !again_.empty() || span_ < spans_.size() || index_ < ranges_.size();
    }
    uint64_t run_limit(uint64_t first_page) const override {
        if (in_again_) {
            const PageRange& r = again_.front();
            return r.first_page + r.pages > first_page ? r.first_page + r.pages - first_page : 1;
        }
        if (span_ >= spans_.size() && zero_ < zeros_.size()) {
            const PageRange& z = zeros_[zero_];
            return z.first_page + z.pages > first_page ? z.first_page + z.pages - first_page : 1;
        }
        if (span_ >= spans_.size()) return UINT64_MAX;
        const PageRange& s = spans_[span_];
        return s.first_page + s.pages > first_page ? s.first_page + s.pages - first_page : 1;
    }

private:
    // The first page still missing of the spans to walk again, if any.
    bool next_again(const PageStates& states, uint64_t& first_page) {
        in_again_ = false;
        while (!again_.empty()) {
            const PageRange& r = again_.front();
            const uint64_t end = std::min(r.first_page + r.pages, states.size());
            const uint64_t page = r.first_page < end ? states.next_missing(r.first_page) : end;
            if (page < end) {
                first_page = page;
                in_again_ = true;
                return true;
            }
            again_.pop_front();
        }
        return false;
    }

    // The zero runs after the set: the next one with a missing page.
    bool next_zero(const PageStates& states, uint64_t& first_page) {
        while (zero_ < zeros_.size()) {
            const PageRange& z = zeros_[zero_];
            const uint64_t end = std::min(z.first_page + z.pages, states.size());
            const uint64_t page = states.next_missing(std::max(z.first_page, zero_within_));
            if (page < end) {
                first_page = page;
                return true;
            }
            zero_++;
            zero_within_ = 0;
        }
        return false;
    }

    // The next window of recorded runs, sorted and merged into spans.
    void fill_window() {
        spans_.clear();
        span_ = 0;
        within_ = 0;
        uint64_t taken = 0;
        while (index_ < ranges_.size() && taken < shape_.window_pages) {
            spans_.push_back(ranges_[index_]);
            taken += ranges_[index_].pages;
            index_++;
        }
        sort_window();
        size_t out = 0;
        for (size_t i = 1; i < spans_.size(); i++) {
            PageRange& cur = spans_[out];
            const PageRange& r = spans_[i];
            const uint64_t cur_end = cur.first_page + cur.pages, r_end = r.first_page + r.pages;
            const uint64_t merged_end = std::max(cur_end, r_end);
            if (r.first_page < cur.first_page)  // file order went back in guest pages: a span of its own
                spans_[++out] = r;
            else if (r.first_page <= cur_end + shape_.gap_pages && merged_end - cur.first_page <= shape_.span_pages)
                cur.pages = merged_end - cur.first_page;
            else if (r_end > cur_end)  // a range inside a span already taken adds nothing
                spans_[++out] = PageRange{std::max(r.first_page, cur_end), r_end - std::max(r.first_page, cur_end)};
        }
        if (!spans_.empty()) spans_.resize(out + 1);
    }

    void sort_window() {
        if (!file_key_) {
            std::sort(spans_.begin(), spans_.end(),
                      [](const PageRange& a, const PageRange& b) { return a.first_page < b.first_page; });
            return;
        }
        keyed_.clear();
        for (const PageRange& r : spans_) keyed_.push_back({file_key_(r.first_page), r});
        std::sort(keyed_.begin(), keyed_.end(), [](const auto& a, const auto& b) {
            return a.first != b.first ? a.first < b.first : a.second.first_page < b.second.first_page;
        });
        for (size_t i = 0; i < keyed_.size(); i++) spans_[i] = keyed_[i].second;
    }

    std::vector<PageRange> ranges_;
    ReplayShape shape_;
    ReplayFileKey file_key_;
    std::vector<std::pair<std::pair<uint64_t, uint64_t>, PageRange>> keyed_;  // sort_window's scratch
    std::vector<PageRange> zeros_;  // after the set, before the rest
    size_t zero_ = 0;
    uint64_t zero_within_ = 0;
    size_t index_ = 0;              // the next recorded range not yet in a window
    std::vector<PageRange> spans_;  // this window's spans, ascending
    size_t span_ = 0;
    uint64_t within_ = 0;
    static constexpr size_t kRevisitSpans = 1024;
    std::vector<PageRange> passed_;  // the spans of windows passed, for revisit()
    std::deque<PageRange> again_;    // parts of spans to walk again, first first
    bool in_again_ = false;          // next() answered from again_
    bool replay_over_ = false;       // the rest has begun (VmPager waits for the set's fetches first)
    AscendingOrder rest_;
};

}  // namespace

ReplayShape replay_shape_for(uint64_t page_size_bytes) {
    const uint64_t ps = std::max<uint64_t>(1, page_size_bytes);
    return ReplayShape{std::max<uint64_t>(1, kReplayWindowBytes / ps), kReplayGapBytes / ps,
                       std::max<uint64_t>(1, kReplaySpanBytes / ps)};
}

std::unique_ptr<PrefetchOrder> make_ascending_order() { return std::make_unique<AscendingOrder>(); }
std::unique_ptr<PrefetchOrder> make_recorded_order(std::vector<PageRange> ranges, ReplayShape shape,
                                                   ReplayFileKey file_key, std::vector<PageRange> zeros_after) {
    return std::make_unique<RecordedOrder>(std::move(ranges), shape, std::move(file_key), std::move(zeros_after));
}

}  // namespace ringpager
