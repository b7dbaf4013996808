#include "pager/install.hpp"

#include <cstdio>
#include <cstring>

namespace ringpager {
namespace {

// Stamped or random data fails on its first bytes; only zero pages are read
// to the end. Checks 64 bytes per step so the loop vectorizes.
bool all_zero(const uint8_t* data, size_t len) {
    const uint64_t* words = reinterpret_cast<const uint64_t*>(data);
    for (size_t i = 0; i < len / 8; i += 8) {
        uint64_t acc = 0;
        for (size_t j = 0; j < 8; j++) acc |= words[i + j];
        if (acc != 0) return false;
    }
    return true;
}

// Installs `pages` pages at `addr` by `action`.
InstallOutcome install_run(const Uffd& uffd, Action action, uint64_t addr, const uint8_t* src, uint64_t pages,
                           uint64_t page_size, const void* zero_buffer) {
    if (action == Action::copy) return uffd.copy(addr, src, pages * page_size, page_size);
    if (action == Action::poison) return uffd.poison(addr, pages * page_size, page_size);
    if (page_size == 4096) return uffd.zeropage(addr, pages * page_size, page_size);
    // hugetlb has no zero page: copy zeros, one huge page at a time.
    InstallOutcome total;
    for (uint64_t i = 0; i < pages; i++) {
        InstallOutcome one = uffd.copy(addr + i * page_size, zero_buffer, page_size, page_size);
        total.bytes_done += one.bytes_done;
        total.existing_pages += one.existing_pages;
        if (one.error != 0) {
            total.error = one.error;
            break;
        }
    }
    return total;
}

void count(InstallResult& r, Action action, uint64_t installed, uint64_t done) {
    if (action == Action::copy) {
        r.copy_ioctls++;
        r.pages_copied += installed;
    } else if (action == Action::poison) {
        r.pages_poisoned += installed;
    } else {
        r.pages_zeroed += done;
    }
}

}  // namespace

void decide_actions(const PageStates& states, uint64_t first, uint64_t pages, const uint8_t* data,
                    uint64_t page_size, const std::vector<uint8_t>& poison, std::vector<Action>& actions) {
    actions.assign(pages, Action::skip);
    for (uint64_t i = 0; i < pages; i++) {
        const PageState s = states.get(first + i);
        if (s == PageState::removed) actions[i] = Action::zero;
        else if (s == PageState::in_flight)
            actions[i] = i < poison.size() && poison[i] ? Action::poison : data == nullptr ? Action::zero : Action::copy;
    }
    if (data == nullptr || page_size != 4096) return;
    for (uint64_t i = 0; i < pages;) {
        uint64_t k = 0;
        while (i + k < pages && actions[i + k] == Action::copy && all_zero(data + (i + k) * page_size, page_size)) k++;
        if (k >= kMinZeroRunPages || k == pages)
            for (uint64_t j = i; j < i + k; j++) actions[j] = Action::zero;
        i += k == 0 ? 1 : k;
    }
}

void retire_range(AddressMap& map, PageStates& states, uint64_t start, uint64_t end) {
    for (const AddressExtent& e : map.unmap(start, end))
        for (uint64_t p = e.first_page; p < e.last_page(); p++) {
            const PageState state = states.get(p);
            if (state == PageState::missing || state == PageState::in_flight) states.set(p, PageState::present);
        }
}

InstallResult install_pages(const InstallTarget& t, uint64_t first, uint64_t pages, const uint8_t* data,
                            uint64_t data_bytes, const std::vector<uint8_t>& poison) {
    thread_local std::vector<Action> actions;
    InstallResult result;
    const auto first_place = t.map.place_of(first);
    const uint64_t page_size = first_place ? first_place->page_size : 4096;
    // Bounds, before any byte is looked at: the pages' bytes lie inside the
    // buffer given (one page size per VM, so this covers every run).
    if (data != nullptr && pages * page_size > data_bytes) {
        result.end = InstallResult::End::failed;
        result.failure = "refusing a copy past the end of its read buffer";
        return result;
    }
    decide_actions(t.states, first, pages, data, page_size, poison, actions);
    uint64_t p = first;
    const uint64_t end = first + pages;
    while (p < end) {
        const auto place = t.map.place_of(p);
        if (!place) {  // unmapped while in flight
            if (t.states.get(p) == PageState::in_flight) t.states.set(p, PageState::present);
            p++;
            continue;
        }
        const uint64_t ps = place->page_size;
        const Action action = actions[p - first];
        uint64_t n = 1;
        while (p + n < end && p + n < place->extent_end_page && actions[p + n - first] == action) n++;
        if (action == Action::skip) {
            p += n;
            continue;
        }
        // A copy never reads past the bytes of its own buffer slot (checked
        // for the whole job above; this holds per run whatever the map says).
        if (action == Action::copy && (data == nullptr || (p - first + n) * ps > data_bytes)) {
            result.end = InstallResult::End::failed;
            result.failure = "refusing a copy past the end of its read buffer";
            return result;
        }
        const uint8_t* src = data ? data + (p - first) * ps : nullptr;
        const InstallOutcome out = install_run(t.uffd, action, place->addr, src, n, ps, t.zero_buffer);
        const uint64_t done = out.bytes_done / ps;
        uint64_t installed = 0;
        for (uint64_t i = p; i < p + done; i++)
            if (t.states.get(i) == PageState::in_flight) t.states.set(i, PageState::present), installed++;
        count(result, action, installed, done);
        if (out.error == EAGAIN) {
            result.end = InstallResult::End::retry_later;
            return result;
        }
        if (out.error == ESRCH) {
            result.end = InstallResult::End::gone;
            return result;
        }
        if (out.error == ENOENT) {
            // No VMA registered with this uffd there any more: the VM unmapped
            // the range (Firecracker asks for no UNMAP events). Only that range
            // stops being served.
            const uint64_t from = place->addr + done * ps, to = place->addr + n * ps;
            if (result.ranges_unmapped++ == 0) result.first_unmapped_start = from, result.first_unmapped_end = to;
            retire_range(t.map, t.states, from, to);
            p += n;
            continue;
        }
        if (out.error != 0) {
            const char* op = action == Action::copy ? "UFFDIO_COPY" : action == Action::poison ? "UFFDIO_POISON" : "zero fill";
            const bool no_poison = action == Action::poison && (out.error == EINVAL || out.error == ENOTTY);
            char what[160];
            snprintf(what, sizeof what, "%s at 0x%llx failed: %s%s", op,
                     static_cast<unsigned long long>(place->addr + done * ps), std::strerror(out.error),
                     no_poison ? " (this kernel cannot poison pages: UFFDIO_POISON needs Linux 6.6)" : "");
            result.end = InstallResult::End::failed;
            result.failure = what;
            return result;
        }
        p += n;
    }
    return result;
}

}  // namespace ringpager
