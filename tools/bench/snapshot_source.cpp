#include "snapshot_source.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "remote/s3_client.hpp"
#include "remote/snapshot_store.hpp"
#include "ringpager/snapshot.hpp"
#include "snapshot/layered/format.hpp"

namespace ringpager::bench {

namespace fs = std::filesystem;

namespace {

constexpr const char* kBucket = "rp-bench";

// Runs `command` through the shell, stdin from /dev/null (the store's
// daemons it starts must not hold rp-bench's terminal); its stdout, or ""
// with `error` set.
std::string run_capture(const std::string& command, std::string& error) {
    FILE* pipe = ::popen((command + " </dev/null").c_str(), "r");
    if (pipe == nullptr) {
        error = "cannot run " + command;
        return {};
    }
    std::string out;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
    const int status = ::pclose(pipe);
    if (status != 0) error = command + " failed (status " + std::to_string(status) + ")";
    return out;
}

std::string quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

}  // namespace

const char* snapshot_source_name(SnapshotSource source) {
    switch (source) {
        case SnapshotSource::local: return "local";
        case SnapshotSource::layered: return "layered";
        case SnapshotSource::layered_zstd: return "layered-zstd";
        case SnapshotSource::layered_packed: return "layered-packed";
        case SnapshotSource::s3_cold: return "s3-cold";
        case SnapshotSource::s3_warm: return "s3-warm";
    }
    return "?";
}

std::optional<SnapshotSource> parse_snapshot_source(std::string_view text) {
    for (SnapshotSource s : {SnapshotSource::local, SnapshotSource::layered, SnapshotSource::layered_zstd,
                             SnapshotSource::layered_packed, SnapshotSource::s3_cold, SnapshotSource::s3_warm}) {
        if (text == snapshot_source_name(s)) return s;
    }
    return std::nullopt;
}

std::unique_ptr<PreparedSource> PreparedSource::prepare(SnapshotSource source, const std::string& mem_file,
                                                        const std::string& work_dir, const std::string& rgw_script,
                                                        std::string& error) {
    std::unique_ptr<PreparedSource> p(new PreparedSource());
    p->source_ = source;
    if (source == SnapshotSource::local) return p;
    SnapshotBuildOptions build;
    build.base_path = mem_file;
    build.manifest_path = work_dir + "/snapshot.rpm";
    build.sync = false;
    if (source == SnapshotSource::layered_zstd) build.frames = FrameOptions{};
    SnapshotBuildReport report;
    if (!build_layered_snapshot(build, report, error)) return nullptr;
    p->manifest_ = build.manifest_path;
    if (source == SnapshotSource::layered || source == SnapshotSource::layered_zstd ||
        source == SnapshotSource::layered_packed)
        return p;

    // The store: its settings come back as KEY=VALUE lines for the environment.
    if (rgw_script.empty()) {
        error = "--snapshot-source " + std::string(snapshot_source_name(source)) +
                " needs --rgw-script (tests/remote/rgw.sh) or RINGPAGER_RGW_SCRIPT";
        return nullptr;
    }
    p->rgw_dir_ = work_dir + "/rgw";
    const std::string env = run_capture(quote(rgw_script) + " start " + quote(p->rgw_dir_), error);
    if (!error.empty()) return nullptr;
    p->rgw_script_ = rgw_script;
    for (size_t at = 0; at < env.size();) {
        const size_t end = std::min(env.find('\n', at), env.size());
        const std::string line = env.substr(at, end - at);
        at = end + 1;
        const size_t eq = line.find('=');
        if (eq == std::string::npos) continue;
        std::string value = line.substr(eq + 1);
        if (value.size() >= 2 && (value.front() == '\'' || value.front() == '"')) value = value.substr(1, value.size() - 2);
        ::setenv(line.substr(0, eq).c_str(), value.c_str(), 1);   // the serve processes inherit them
    }
    auto config = remote::S3Config::from_environment();
    if (!config) {
        error = config.error().message;
        return nullptr;
    }
    auto client = remote::S3Client::create(*config);
    if (!client) {
        error = client.error().message;
        return nullptr;
    }
    if (auto made = (*client)->create_bucket(kBucket); !made) {
        error = made.error().message;
        return nullptr;
    }
    const remote::S3Location at{kBucket, "snapshot"};
    remote::PushReport pushed;
    if (error = remote::push_snapshot(**client, p->manifest_, at, remote::PushOptions{}, pushed); !error.empty()) {
        return nullptr;
    }
    p->url_ = at.url();
    p->cache_dir_ = work_dir + "/chunk-cache";
    layered::Manifest m;
    if (error = layered::load_manifest(p->manifest_, m); !error.empty()) return nullptr;
    for (uint32_t i = 0; i < m.layers.size(); ++i) {
        p->warm_files_.push_back({m.layer_path(i), layered::hex_id(m.layers[i].id) + ".rpl"});
    }
    return p;
}

PreparedSource::~PreparedSource() {
    if (rgw_script_.empty()) return;
    std::string error;
    (void)run_capture(quote(rgw_script_) + " stop " + quote(rgw_dir_) + " >/dev/null 2>&1", error);
    if (!error.empty()) std::fprintf(stderr, "rp-bench: %s\n", error.c_str());
}

std::vector<std::string> PreparedSource::serve_args() const {
    switch (source_) {
        case SnapshotSource::local: return {};
        case SnapshotSource::layered:
        case SnapshotSource::layered_zstd:
        case SnapshotSource::layered_packed: return {"--snapshot", manifest_};
        case SnapshotSource::s3_cold:
        case SnapshotSource::s3_warm: return {"--snapshot", url_, "--cache-dir", cache_dir_};
    }
    return {};
}

std::string PreparedSource::packed_manifest(const std::string& working_set) const {
    const size_t slash = working_set.find_last_of('/');
    const std::string name = slash == std::string::npos ? working_set : working_set.substr(slash + 1);
    return manifest_.substr(0, manifest_.find_last_of('/') + 1) + "packed-" + name + ".rpm";
}

std::string PreparedSource::pack(const std::string& working_set) const {
    const std::string out = packed_manifest(working_set);
    // Once per run: a packed manifest from an earlier run in the same work
    // directory names that run's layers and would be refused.
    if (!packed_.insert(out).second) return {};
    PackWorkingSetReport report;
    std::string error;
    if (!pack_working_set({manifest_, working_set, out, false}, report, error)) return error;
    std::printf("packed the working set %s into %s: %llu pages (%llu zero pages left as zero extents)\n",
                working_set.c_str(), out.c_str(), static_cast<unsigned long long>(report.packed_pages),
                static_cast<unsigned long long>(report.zero_pages));
    return {};
}

std::vector<std::string> PreparedSource::local_files() const {
    std::vector<std::string> files;
    if (manifest_.empty()) return files;
    std::vector<std::string> manifests = {manifest_};
    manifests.insert(manifests.end(), packed_.begin(), packed_.end());
    for (const std::string& path : manifests) {
        layered::Manifest m;
        if (!layered::load_manifest(path, m).empty()) continue;
        files.push_back(path);
        for (uint32_t i = 0; i < m.layers.size(); ++i) files.push_back(m.layer_path(i));
    }
    return files;
}

std::string PreparedSource::before_scenario() const {
    if (source_ != SnapshotSource::s3_cold && source_ != SnapshotSource::s3_warm) return {};
    std::error_code ec;
    fs::remove_all(cache_dir_, ec);
    if (ec) return "cannot empty " + cache_dir_ + ": " + ec.message();
    if (source_ == SnapshotSource::s3_cold) return {};
    fs::create_directories(cache_dir_, ec);
    for (const auto& [layer, name] : warm_files_) {
        if (!fs::copy_file(layer, cache_dir_ + "/" + name, ec) || ec) {
            return "cannot fill " + cache_dir_ + " with " + layer + ": " + ec.message();
        }
    }
    return {};
}

uint64_t PreparedSource::cache_bytes() const {
    uint64_t total = 0;
    std::error_code ec;
    if (cache_dir_.empty() || !fs::is_directory(cache_dir_, ec)) return 0;
    for (const auto& entry : fs::directory_iterator(cache_dir_, ec)) {
        struct stat st {};
        if (entry.path().extension() == ".rpl" && ::stat(entry.path().c_str(), &st) == 0) {
            total += static_cast<uint64_t>(st.st_blocks) * 512;
        }
    }
    return total;
}

}  // namespace ringpager::bench
