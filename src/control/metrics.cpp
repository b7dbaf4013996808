#include "control/metrics.hpp"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <exception>

namespace ringpager {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

class Families {
public:
    MetricFamily& family(const std::string& name, const std::string& help, MetricType type) {
        for (MetricFamily& f : out_)
            if (f.name == name) return f;
        out_.push_back(MetricFamily{name, help, type, {}});
        return out_.back();
    }
    void counter(const std::string& name, const std::string& help, Labels labels, double value) {
        ClientMetric m;
        m.label = std::move(labels);
        m.counter.value = value;
        family(name, help, MetricType::Counter).metric.push_back(std::move(m));
    }
    void gauge(const std::string& name, const std::string& help, Labels labels, double value) {
        ClientMetric m;
        m.label = std::move(labels);
        m.gauge.value = value;
        family(name, help, MetricType::Gauge).metric.push_back(std::move(m));
    }
    void histogram(const std::string& name, const std::string& help, Labels labels, const Histogram::Snapshot& h) {
        ClientMetric m;
        m.label = std::move(labels);
        m.histogram.sample_count = h.count;
        m.histogram.sample_sum = h.sum_seconds;
        uint64_t cumulative = 0;
        for (size_t i = 0; i < Histogram::kBounds.size(); i++) {
            cumulative += h.buckets[i];
            m.histogram.bucket.push_back({cumulative, Histogram::kBounds[i]});
        }
        cumulative += h.buckets[Histogram::kBounds.size()];
        m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
        family(name, help, MetricType::Histogram).metric.push_back(std::move(m));
    }
    std::vector<MetricFamily> take() { return std::move(out_); }

private:
    std::vector<MetricFamily> out_;
};

class EngineCollectable final : public prometheus::Collectable {
public:
    EngineCollectable(const StatsTable& stats, const Budgets& budgets, std::vector<std::string> names)
        : stats_(stats), budgets_(budgets), names_(std::move(names)) {}

    std::vector<MetricFamily> Collect() const override {
        Families f;
        for (unsigned i = 0; i < stats_.listener_count() && i < names_.size(); i++) {
            const StatsTable::ListenerSnapshot s = stats_.listener(i);
            const Labels l = {{"listener", names_[i]}};
            auto with = [&](const char* name, const char* value) {
                Labels labels = l;
                labels.push_back({name, value});
                return labels;
            };
            f.gauge("ringpager_vms_active", "VMs being served", l, double(s.vms_active));
            f.counter("ringpager_vms_total", "VMs served and released, by how they ended", with("result", "served"),
                      double(s.vms_served - s.vms_failed));
            f.counter("ringpager_vms_total", "VMs served and released, by how they ended", with("result", "failed"),
                      double(s.vms_failed));
            f.counter("ringpager_vms_resident_total", "VMs that became fully resident", l, double(s.vms_resident));
            f.counter("ringpager_faults_total", "page fault messages read", l, double(s.faults));
            const char* installed = "pages installed, by how";
            f.counter("ringpager_pages_installed_total", installed, with("how", "copy"),
                      double(s.pages_copied - s.pages_prefetched));
            f.counter("ringpager_pages_installed_total", installed, with("how", "prefetch"), double(s.pages_prefetched));
            f.counter("ringpager_pages_installed_total", installed, with("how", "zero"), double(s.pages_zeroed));
            f.counter("ringpager_pages_installed_total", installed, with("how", "poison"), double(s.pages_poisoned));
            f.counter("ringpager_copy_ioctls_total", "UFFDIO_COPY calls", l, double(s.copy_ioctls));
            f.counter("ringpager_bytes_read_total", "snapshot bytes read", l, double(s.bytes_read));
            f.counter("ringpager_page_cache_hits_total", "fault reads served from the page cache at once", l,
                      double(s.page_cache_hits));
            f.counter("ringpager_remove_events_pages_total", "pages named by REMOVE events (balloon, free page reporting)",
                      l, double(s.removed_pages));
            f.counter("ringpager_eagain_retries_total", "installs retried after EAGAIN (events pending)", l,
                      double(s.eagain_retries));
            f.histogram("ringpager_fault_service_seconds", "from a fault message read to the install that wakes it", l,
                        s.fault_service);
            f.histogram("ringpager_time_to_resident_seconds", "from a VM's adoption to every page present or removed",
                        l, s.time_to_resident);
        }
        for (unsigned r = 0; r < static_cast<unsigned>(StatsTable::Refusal::count); r++) {
            const auto why = static_cast<StatsTable::Refusal>(r);
            f.counter("ringpager_vms_refused_total", "connections refused, by cause",
                      {{"reason", StatsTable::refusal_name(why)}}, double(stats_.refusals(why)));
        }
        const EngineStats e = stats_.snapshot(budgets_);
        f.gauge("ringpager_handshakes_pending", "connections whose handshake is not complete", {},
                double(e.handshakes_pending));
        f.counter("ringpager_accept_pauses_total", "times accepting paused at the fd limit", {}, double(e.accept_pauses));
        f.gauge("ringpager_vm_state_bytes", "memory held for VMs' page states", {}, double(e.vm_state_bytes));
        f.gauge("ringpager_memory_limit_bytes", "the bound on it (--memory-limit)", {}, double(budgets_.memory_limit_bytes));
        f.gauge("ringpager_read_buffers_busy", "registered read buffers in use", {}, double(e.read_buffers_busy));
        f.gauge("ringpager_read_buffer_bytes", "read buffer memory pinned (grows with load, given back when idle)", {},
                double(e.read_buffer_bytes));
        f.counter("ringpager_busy_polls_total", "waits that polled before sleeping, by outcome", {{"result", "hit"}},
                  double(e.busy_poll_hits));
        f.counter("ringpager_busy_polls_total", "waits that polled before sleeping, by outcome", {{"result", "miss"}},
                  double(e.busy_poll_misses));
        f.gauge("ringpager_prefetch_paused_reactors",
                "reactors whose prefetcher holds back while faults flow on contended CPUs (--prefetch-during-faults auto)",
                {}, double(e.reactors_prefetch_paused));
        f.counter("ringpager_prefetch_pace_switches_total",
                  "times a reactor's prefetch pace switched between steps and pause (--prefetch-during-faults auto)", {},
                  double(e.prefetch_pace_switches));
        const char* signal_help = "reactors whose prefetch pace read this signal in its last window "
                                  "(--prefetch-during-faults auto)";
        f.gauge("ringpager_prefetch_pace_signal_reactors", signal_help, {{"signal", "vm_run_delay"}},
                double(e.reactors_paced_by_vm_run_delay));
        f.gauge("ringpager_prefetch_pace_signal_reactors", signal_help, {{"signal", "host_pressure"}},
                double(e.reactors_paced_by_host_pressure));
        return f.take();
    }

private:
    const StatsTable& stats_;
    const Budgets& budgets_;
    std::vector<std::string> names_;
};

class MetricsServerImpl final : public MetricsServer {
public:
    MetricsServerImpl(std::unique_ptr<prometheus::Exposer> exposer, std::shared_ptr<EngineCollectable> collectable)
        : exposer_(std::move(exposer)), collectable_(std::move(collectable)) {
        exposer_->RegisterCollectable(collectable_);
    }
    int port() const override {
        const auto ports = exposer_->GetListeningPorts();
        return ports.empty() ? 0 : ports[0];
    }

private:
    std::unique_ptr<prometheus::Exposer> exposer_;
    std::shared_ptr<EngineCollectable> collectable_;
};

}  // namespace

std::unique_ptr<MetricsServer> MetricsServer::start(const std::string& address, const StatsTable& stats,
                                                    const Budgets& budgets, std::vector<std::string> listener_names,
                                                    std::string& error) {
    std::unique_ptr<prometheus::Exposer> exposer;
    try {
        exposer = std::make_unique<prometheus::Exposer>(address, 1);  // one thread is plenty for a scraper
    } catch (const std::exception& e) {
        error = "cannot serve metrics on " + address + ": " + e.what() + " (is the address free?)";
        return nullptr;
    }
    return std::make_unique<MetricsServerImpl>(
        std::move(exposer), std::make_shared<EngineCollectable>(stats, budgets, std::move(listener_names)));
}

}  // namespace ringpager
