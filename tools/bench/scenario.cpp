// Running one scenario: handler process, concurrent guests, measurement,
// verification.
#include "scenario.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <latch>
#include <mutex>
#include <thread>

#include "guestsim/guest.hpp"
#include "guestsim/touch.hpp"
#include "handler_process.hpp"
#include "residency.hpp"
#include "sampler.hpp"

namespace ringpager::bench {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr auto kHandlerStartDeadline = std::chrono::seconds(15);
constexpr auto kHandlerStopGrace = std::chrono::seconds(10);

// What one VM's driver thread observed. Times are ns after the common start.
struct VmRun {
    uint64_t first_fault_ns = 0;    // handshake sent and the first touched page served
    uint64_t first_latency_ns = 0;  // that first access alone
    uint64_t done_ns = 0;           // the whole workload finished
    sim::TouchReport touch;
    std::string error;
};

// Counts finished tasks so the main thread can wait with a timeout.
struct Completion {
    std::mutex mu;
    std::condition_variable cv;
    unsigned done = 0;

    void mark() {
        std::lock_guard lock(mu);
        ++done;
        cv.notify_all();
    }
};

[[noreturn]] void abort_run(const std::string& why, const HandlerProcess& handler, const std::string& work_dir) {
    std::fprintf(stderr,
                 "\n*** rp-bench: ABORTED: %s\n"
                 "*** guests are blocked in page faults nobody will serve; exiting with status 1.\n"
                 "*** handler logs are kept in %s; the last lines:\n%s\n",
                 why.c_str(), work_dir.c_str(), handler.log_tail().c_str());
    std::fflush(stderr);
    // The handler child dies with us (PR_SET_PDEATHSIG); the blocked guest
    // threads cannot be joined, so no destructor may run.
    std::_Exit(1);
}

// Waits until `count` tasks are done, aborting the run if the handler dies
// or the deadline passes first.
void await_or_abort(Completion& completion, unsigned count, const HandlerProcess& handler,
                    std::chrono::steady_clock::time_point deadline, const std::string& what,
                    const std::string& work_dir) {
    std::unique_lock lock(completion.mu);
    while (completion.done < count) {
        completion.cv.wait_for(lock, std::chrono::milliseconds(50));
        if (completion.done >= count) break;
        if (handler.exited()) abort_run("the handler exited during " + what, handler, work_dir);
        if (std::chrono::steady_clock::now() > deadline) abort_run(what + " did not finish in time", handler, work_dir);
    }
}

constexpr uint64_t kHotsetFixedSeed = 0x5eed2026;

std::vector<uint64_t> plan_for(Workload workload, uint64_t pages, uint64_t seed) {
    switch (workload) {
        case Workload::none: return {};
        case Workload::sequential: return sim::plan_pages(sim::Pattern::sequential, pages, 1.0, seed);
        case Workload::random25: return sim::plan_pages(sim::Pattern::random, pages, 0.25, seed);
        case Workload::hotset: return sim::plan_pages(sim::Pattern::hot_set, pages, 0.10, seed);
        // The same pages in the same order every run and for every VM: what
        // a recorded working set replays.
        case Workload::hotset_fixed: return sim::plan_pages(sim::Pattern::random, pages, 0.10, kHotsetFixedSeed);
    }
    return {};
}

uint64_t vm_seed(const ScenarioContext& context, size_t vm) { return context.seed + vm * 7919; }

void drive_vm(sim::Guest& guest, const std::vector<uint64_t>& plan, const ScenarioSpec& spec, uint64_t seed,
              uint64_t t0_ns, VmRun& run) {
    if (auto sent = guest.connect_and_send(); !sent) {
        run.error = "handshake failed: " + sent.error().message();
        return;
    }
    // Firecracker touches memory as soon as the handshake is sent; so do we.
    const uint64_t first_page = plan.empty() ? 0 : plan.front();
    const uint64_t before = monotonic_ns();
    (void)*reinterpret_cast<volatile const uint8_t*>(guest.page_address(first_page));
    const uint64_t after = monotonic_ns();
    run.first_fault_ns = after - t0_ns;
    run.first_latency_ns = after - before;
    if (spec.workload == Workload::hotset) {
        run.touch = guest.touch(sim::Pattern::hot_set, spec.vcpus, 0.10, seed);
    } else if (spec.workload != Workload::none) {
        run.touch = guest.touch_pages(plan, spec.vcpus);
    }
    run.done_ns = monotonic_ns() - t0_ns;
}

std::vector<sim::Guest> create_guests(const ScenarioSpec& spec, const std::string& socket, ScenarioResult& result) {
    std::vector<sim::Guest> guests;
    guests.reserve(spec.vms);
    sim::GuestConfig config;
    config.socket_path = socket;
    config.region_sizes_bytes = {spec.vm_bytes};
    for (unsigned i = 0; i < spec.vms; ++i) {
        auto guest = sim::Guest::create(config);
        if (!guest) {
            result.failures.push_back("creating guest " + std::to_string(i) + ": " + guest.error().message());
            break;
        }
        guests.push_back(std::move(*guest));
    }
    return guests;
}

// Turns the VMs' observations into the scenario's figures.
void summarize(const ScenarioSpec& spec, std::vector<VmRun>& runs, const ResidencySampler& sampler,
               const std::vector<sim::Guest>& guests, ScenarioResult& result) {
    uint64_t max_first = 0, sum_first = 0, max_done = 0, max_resident = 0;
    std::vector<uint64_t> latencies;
    for (size_t i = 0; i < runs.size(); ++i) {
        VmRun& run = runs[i];
        if (!run.error.empty()) result.failures.push_back("vm " + std::to_string(i) + ": " + run.error);
        max_first = std::max(max_first, run.first_fault_ns);
        sum_first += run.first_fault_ns;
        max_done = std::max(max_done, run.done_ns);
        max_resident = std::max(max_resident, sampler.resident_at_ns(i));
        if (spec.workload == Workload::none) latencies.push_back(run.first_latency_ns);
        latencies.insert(latencies.end(), run.touch.latencies_ns.begin(), run.touch.latencies_ns.end());
        run.touch.latencies_ns = {};
    }
    result.first_fault_mean_ms = static_cast<double>(sum_first) / static_cast<double>(runs.size()) / 1e6;
    result.figure(Figure::first_fault) = static_cast<double>(max_first) / 1e6;
    result.figure(Figure::done) = static_cast<double>(max_done) / 1e9;
    result.vms_resident = sampler.vms_resident();
    const bool resident = result.vms_resident == spec.vms;
    if (resident) result.figure(Figure::resident) = static_cast<double>(max_resident) / 1e9;
    const sim::LatencySummary latency = sim::summarize_latencies(latencies);
    result.latency_samples = latency.count;
    result.figure(Figure::p50) = static_cast<double>(latency.p50_ns) / 1e3;
    result.figure(Figure::p99) = static_cast<double>(latency.p99_ns) / 1e3;
    result.figure(Figure::p999) = static_cast<double>(latency.p999_ns) / 1e3;
    for (const sim::Guest& guest : guests) {
        result.resident_bytes += count_resident_pages(guest.regions()) * guest.page_size_bytes();
    }
    // Bytes made resident over the window that made them: up to full
    // residency, or up to the end of the workload when it never got there.
    const double window_s = resident ? result.figure(Figure::resident) : result.figure(Figure::done);
    if ((resident || spec.workload != Workload::none) && window_s > 0) {
        result.figure(Figure::throughput) = static_cast<double>(result.resident_bytes) / kGiB / window_s;
    }
}

// Releases every VM at once and measures until the workload is done and the
// memory is resident (or the sampler gave up on it).
void measure(const ScenarioSpec& spec, const ScenarioContext& context, const HandlerProcess& handler,
             std::vector<sim::Guest>& guests, ScenarioResult& result) {
    std::vector<std::vector<uint64_t>> plans;
    std::vector<RegionList> regions;
    for (size_t i = 0; i < guests.size(); ++i) {
        plans.push_back(plan_for(spec.workload, guests[i].page_count(), vm_seed(context, i)));
        regions.push_back(guests[i].regions());
    }
    ResidencySampler sampler(std::move(regions), context.sample_interval, context.stall);
    std::vector<VmRun> runs(guests.size());
    Completion completion;
    std::latch gate(1);
    uint64_t t0_ns = 0;  // written before the gate opens; the latch orders it before every read
    std::vector<std::thread> drivers;
    for (size_t i = 0; i < guests.size(); ++i) {
        drivers.emplace_back([&, i] {
            gate.wait();
            drive_vm(guests[i], plans[i], spec, vm_seed(context, i), t0_ns, runs[i]);
            completion.mark();
        });
    }
    const auto deadline = std::chrono::steady_clock::now() + context.timeout;
    // CPU spent starting up (ring setup, buffer registration) is not the
    // scenario's: a pager serves many restores in its life.
    auto at_start = handler.usage();
    t0_ns = monotonic_ns();
    sampler.start(t0_ns);
    gate.count_down();
    await_or_abort(completion, static_cast<unsigned>(guests.size()), handler, deadline, "the workload of " + spec.name(),
                   context.work_dir);
    sampler.workload_done();
    for (std::thread& t : drivers) t.join();
    sampler.join();
    // CPU and peak RSS are taken now, before verification faults in the
    // pages a workload left untouched.
    if (auto usage = handler.usage(); usage && at_start) {
        result.figure(Figure::cpu) = usage->cpu_seconds - at_start->cpu_seconds;
        result.figure(Figure::rss) = usage->peak_rss_mib;
    } else {
        result.failures.push_back("cannot read the handler's /proc/PID/stat and status");
    }
    summarize(spec, runs, sampler, guests, result);
}

// Checks every VM's memory byte for byte (all pages, or the touched ones).
void verify_all(const ScenarioSpec& spec, const ScenarioContext& context, const HandlerProcess& handler,
                const std::vector<sim::Guest>& guests, ScenarioResult& result) {
    const auto scope = spec.workload == Workload::none || spec.workload == Workload::sequential
                           ? sim::VerifyScope::all_pages
                           : sim::VerifyScope::touched_pages;
    // One thread per VM (up to 16): under a lazy handler verification faults
    // pages in, and a handler serving one VM per thread needs them concurrent.
    const size_t workers = std::min<size_t>(guests.size(), 16);
    std::vector<sim::VerifyReport> reports(guests.size());
    Completion completion;
    std::vector<std::thread> threads;
    for (size_t w = 0; w < workers; ++w) {
        threads.emplace_back([&, w] {
            for (size_t i = w; i < guests.size(); i += workers) reports[i] = guests[i].verify(*context.expected, scope);
            completion.mark();
        });
    }
    await_or_abort(completion, static_cast<unsigned>(workers), handler,
                   std::chrono::steady_clock::now() + context.timeout, "verification of " + spec.name(),
                   context.work_dir);
    for (std::thread& t : threads) t.join();
    for (size_t i = 0; i < reports.size(); ++i) {
        result.pages_verified += reports[i].pages_checked;
        result.mismatches += reports[i].mismatches;
        if (!reports[i].ok() && result.verify_detail.empty()) {
            result.verify_detail = "vm " + std::to_string(i) + ": " + reports[i].describe();
        }
    }
}

}  // namespace

std::string working_set_path(const ScenarioContext& context, const ScenarioSpec& spec) {
    return context.work_dir + "/" + workload_name(spec.workload) + "-" + std::to_string(spec.vm_bytes) + ".ws";
}

std::vector<std::string> handler_argv(const ScenarioContext& context, HandlerKind kind, const std::string& socket,
                                      const std::string& working_set) {
    if (is_ringpager(kind)) {
        std::vector<std::string> argv = {context.ringpager_path, "serve", "--socket", socket, "--mode",
                                         kind == HandlerKind::lazy ? "lazy" : "prefetch"};
        std::vector<std::string> from = context.source ? context.source->serve_args() : std::vector<std::string>{};
        if (from.empty()) from = {"--mem-file", context.mem_file};
        // The packed snapshot replays its own layer: no --working-set.
        const bool packed = kind == HandlerKind::replay && context.source &&
                            context.source->source() == SnapshotSource::layered_packed;
        if (packed) from = {"--snapshot", context.source->packed_manifest(working_set)};
        argv.insert(argv.end(), from.begin(), from.end());
        if (context.reactors > 0) {
            argv.push_back("--reactors");
            argv.push_back(std::to_string(context.reactors));
        }
        if (kind == HandlerKind::replay && !packed) argv.insert(argv.end(), {"--working-set", working_set});
        if (kind == HandlerKind::prefetch_pause) argv.insert(argv.end(), {"--prefetch-during-faults", "pause"});
        if (kind == HandlerKind::prefetch_steps) argv.insert(argv.end(), {"--prefetch-during-faults", "steps"});
        return argv;
    }
    std::vector<std::string> argv = {context.baseline_path, "--socket", socket, "--mem-file", context.mem_file};
    if (kind == HandlerKind::baseline_eager) argv.push_back("--copy-all-on-first-fault");
    return argv;
}

namespace {

// Cold page cache: every page the handler reads comes from the device.
bool drop_from_page_cache(const std::string& path, std::string& error) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error = path + ": open: " + strerror(errno);
        return false;
    }
    const int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    if (rc != 0) error = path + ": posix_fadvise(DONTNEED): " + strerror(rc);
    return rc == 0;
}

ScenarioResult run_with(const ScenarioSpec& spec, const ScenarioContext& context, std::vector<std::string> argv,
                        const std::string& log_suffix) {
    ScenarioResult result;
    result.spec = spec;
    result.figures.fill(kNotApplicable);
    result.ratios.fill(kNotApplicable);
    const uint64_t wall_start_ns = monotonic_ns();
    const std::string socket = context.work_dir + "/" + spec.name() + ".sock";
    const std::string log = context.work_dir + "/" + spec.name() + log_suffix + ".log";
    std::string error;
    if (context.cold_cache && !drop_from_page_cache(context.mem_file, error)) {
        result.failures.push_back(error);
        return result;
    }
    // A layered source's manifests and layers too (packed ones included).
    for (const std::string& file : context.cold_cache && context.source ? context.source->local_files()
                                                                          : std::vector<std::string>{}) {
        if (!drop_from_page_cache(file, error)) {
            result.failures.push_back(error);
            return result;
        }
    }
    const bool ringpager = argv.front() == context.ringpager_path;
    if (ringpager && context.source) {
        if (error = context.source->before_scenario(); !error.empty()) {
            result.failures.push_back(error);
            return result;
        }
    }
    const uint64_t cached_before = ringpager && context.source ? context.source->cache_bytes() : 0;
    auto handler = HandlerProcess::start(argv, socket, log,
                                         kHandlerStartDeadline, error);
    if (!handler) {
        result.failures.push_back(error);
        return result;
    }
    // Declared after the handler so they are destroyed (unmapped) first.
    std::vector<sim::Guest> guests = create_guests(spec, socket, result);
    if (result.failures.empty()) measure(spec, context, *handler, guests, result);
    // What the measured window took from the store (the verification below reads every page).
    const bool from_store = ringpager && context.source && context.source->source() >= SnapshotSource::s3_cold;
    if (from_store) {
        const uint64_t cached = context.source->cache_bytes();   // no --cache-size: nothing is punched out
        result.store_bytes_fetched = cached > cached_before ? cached - cached_before : 0;
    }
    if (result.failures.empty()) verify_all(spec, context, *handler, guests, result);
    bool clean = false;
    result.handler_exit = handler->stop(kHandlerStopGrace, clean);
    if (!clean) {
        result.failures.push_back("handler did not shut down cleanly (" + result.handler_exit + "); log tail:\n" +
                                  handler->log_tail());
    }
    guests.clear();
    result.wall_seconds = static_cast<double>(monotonic_ns() - wall_start_ns) / 1e9;
    return result;
}

}  // namespace

ScenarioResult run_scenario(const ScenarioSpec& spec, const ScenarioContext& context) {
    const std::string socket = context.work_dir + "/" + spec.name() + ".sock";
    const std::string working_set = working_set_path(context, spec);
    if (spec.handler == HandlerKind::replay && ::access(working_set.c_str(), F_OK) != 0) {
        // The first replay of a workload records its working set: one VM
        // served lazily with --record-ws, not measured (its result is kept
        // only for its failures).
        ScenarioSpec record = spec;
        record.handler = HandlerKind::lazy;
        record.vms = 1;
        std::vector<std::string> argv =
            handler_argv(context, HandlerKind::lazy, context.work_dir + "/" + record.name() + ".sock", "");
        argv.insert(argv.end(), {"--record-ws", working_set});
        ScenarioResult recorded = run_with(record, context, argv, context.log_suffix + "-record");
        if (!recorded.ok() || ::access(working_set.c_str(), F_OK) != 0) {
            ScenarioResult failed = recorded;
            failed.spec = spec;
            failed.failures.push_back("recording the working set " + working_set + " failed");
            return failed;
        }
    }
    if (spec.handler == HandlerKind::replay && context.source &&
        context.source->source() == SnapshotSource::layered_packed) {
        if (std::string error = context.source->pack(working_set); !error.empty()) {
            ScenarioResult failed;
            failed.spec = spec;
            failed.failures.push_back("packing the working set: " + error);
            return failed;
        }
    }
    return run_with(spec, context, handler_argv(context, spec.handler, socket, working_set), context.log_suffix);
}

}  // namespace ringpager::bench
