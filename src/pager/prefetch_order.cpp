#include "pager/prefetch_order.hpp"

#include <algorithm>

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

class RecordedOrder final : public PrefetchOrder {
public:
    explicit RecordedOrder(std::vector<PageRange> ranges) : ranges_(std::move(ranges)) {}

    bool next(const PageStates& states, uint64_t& first_page) override {
        while (index_ < ranges_.size()) {
            const PageRange& r = ranges_[index_];
            const uint64_t end = std::min(r.first_page + r.pages, states.size());
            const uint64_t page = states.next_missing(std::max(r.first_page, within_));
            if (page < end) {
                first_page = page;
                return true;
            }
            index_++;
            within_ = 0;
        }
        return rest_.next(states, first_page);
    }
    void consumed(uint64_t first_page, uint64_t pages) override {
        if (index_ < ranges_.size()) within_ = first_page + pages;
        else rest_.consumed(first_page, pages);
    }
    // The recorded ranges already passed are not walked again: the rest
    // (ascending) picks the pages up.
    void revisit(uint64_t first_page) override { rest_.revisit(first_page); }
    bool replaying() const override { return index_ < ranges_.size(); }
    uint64_t run_limit(uint64_t first_page) const override {
        if (index_ >= ranges_.size()) return UINT64_MAX;
        const PageRange& r = ranges_[index_];
        return r.first_page + r.pages > first_page ? r.first_page + r.pages - first_page : 1;
    }

private:
    std::vector<PageRange> ranges_;
    size_t index_ = 0;
    uint64_t within_ = 0;
    AscendingOrder rest_;
};

}  // namespace

std::unique_ptr<PrefetchOrder> make_ascending_order() { return std::make_unique<AscendingOrder>(); }
std::unique_ptr<PrefetchOrder> make_recorded_order(std::vector<PageRange> ranges) {
    return std::make_unique<RecordedOrder>(std::move(ranges));
}

}  // namespace ringpager
