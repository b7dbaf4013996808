#include "reactor/prefetch_pace.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <string_view>

#include "common/decimal.hpp"

namespace ringpager {

CpuPressure::CpuPressure(const std::string& path, std::string& error) {
    auto fd = FileDesc::open(path.c_str(), O_RDONLY);
    if (!fd) {
        error = path + ": " + fd.error().message();
        return;
    }
    fd_ = std::move(*fd);
    if (!read()) {
        error = path + ": no \"some ... total=\" line";
        fd_.reset();
    }
}

std::optional<uint64_t> CpuPressure::read() const {
    if (!fd_.valid()) return std::nullopt;
    char buf[256];
    const ssize_t n = pread(fd_.get(), buf, sizeof buf, 0);
    if (n <= 0) return std::nullopt;
    const std::string_view text(buf, static_cast<size_t>(n));
    // A first line longer than the buffer is not PSI's (and its number may be cut).
    if (text.find('\n') == std::string_view::npos && text.size() == sizeof buf) return std::nullopt;
    return parse_some_total(text);
}

std::optional<uint64_t> CpuPressure::parse_some_total(std::string_view text) {
    const std::string_view line = text.substr(0, text.find('\n'));
    if (line.substr(0, 5) != "some ") return std::nullopt;
    const size_t at = line.find(" total=");
    if (at == std::string_view::npos) return std::nullopt;
    return parse_u64(line.substr(at + 7));
}

PrefetchPace::PrefetchPace(Config config, std::function<std::optional<Stall>()> stall)
    : config_(config), stall_(std::move(stall)) {}

std::optional<PrefetchPace::Stall> PrefetchPace::read() {
    std::optional<Stall> total = stall_();
    signal_ = total ? std::optional<Signal>(total->signal) : std::nullopt;
    return total;
}

void PrefetchPace::start_window(Clock::time_point now) {
    const std::optional<Stall> total = read();
    if (!total) {
        paused_ = false;  // no signal: steps
        in_window_ = false;
        return;
    }
    in_window_ = true;
    window_start_ = now;
    window_ = short_window();
    window_stall_start_ = *total;
}

bool PrefetchPace::pause(Clock::time_point now, bool faults_recent) {
    if (!faults_recent) {  // quiet: full batches; the next burst starts a window
        in_window_ = false;
        return false;
    }
    if (!in_window_) {
        start_window(now);
        return in_window_ && paused_;
    }
    if (now < window_end()) return paused_;
    const std::optional<Stall> total = read();
    if (!total) {
        paused_ = false;
        in_window_ = false;
        return false;
    }
    window_ = config_.window;
    if (total->signal != window_stall_start_.signal) {  // not comparable: measure afresh
        window_start_ = now;
        window_stall_start_ = *total;
        return paused_;
    }
    const double elapsed_us = std::chrono::duration<double, std::micro>(now - window_start_).count();
    last_share_ = elapsed_us > 0 && total->total_us >= window_stall_start_.total_us
                      ? static_cast<double>(total->total_us - window_stall_start_.total_us) / elapsed_us
                      : 0;
    const Bounds& bounds = total->signal == Signal::vm_run_delay ? config_.vm_run_delay : config_.host_pressure;
    const bool was = paused_;
    if (paused_ && last_share_ < bounds.resume_below) paused_ = false;
    else if (!paused_ && last_share_ > bounds.pause_above) paused_ = true;
    if (paused_ != was) {
        switches_++;
        window_ = short_window();  // a wrong turn is put right soon
    }
    window_start_ = now;
    window_stall_start_ = *total;
    return paused_;
}

}  // namespace ringpager
