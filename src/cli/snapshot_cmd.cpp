// `ringpager snapshot build|inspect|verify|push|ls|pack-ws`: the operator's tool for
// layered snapshots (docs/snapshot-format.md), local or in an object store
// (docs/remote.md). Exit codes: 0 ok, 1 runtime failure, 2 usage error.
// Errors are one line on stderr naming the file or object and the cause.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <bit>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/log.hpp"
#include "remote/snapshot_store.hpp"
#include "ringpager/snapshot.hpp"
#include "snapshot/layered/codec.hpp"
#include "snapshot/layered/file_io.hpp"

namespace {

using ringpager::layered::format_bytes;

constexpr int exit_ok = 0;
constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

// A one-line progress bar on stderr, redrawn at most ten times a second, and
// only when stderr is a terminal.
class ProgressBar {
public:
    ProgressBar(std::string label, bool wanted) : label_(std::move(label)), enabled_(wanted && ::isatty(STDERR_FILENO)) {}
    ~ProgressBar() { finish(); }

    std::function<void(uint64_t, uint64_t)> callback() {
        if (!enabled_) return {};
        return [this](uint64_t done, uint64_t total) { update(done, total); };
    }

    void finish() {
        if (drawn_) std::fprintf(stderr, "\r\033[K");
        drawn_ = false;
    }

private:
    void update(uint64_t done, uint64_t total) {
        auto now = std::chrono::steady_clock::now();
        if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
        last_ = now;
        double fraction = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
        double seconds = std::chrono::duration<double>(now - start_).count();
        double rate = seconds > 0 ? static_cast<double>(done) / seconds / (1024.0 * 1024.0 * 1024.0) : 0.0;
        constexpr int width = 30;
        auto filled = static_cast<int>(fraction * width);
        std::string bar(static_cast<size_t>(filled), '#');
        bar.append(static_cast<size_t>(width - filled), '.');
        std::fprintf(stderr, "\r%s [%s] %3d%%  %s / %s  %.2f GiB/s\033[K", label_.c_str(), bar.c_str(),
                     static_cast<int>(fraction * 100), format_bytes(done).c_str(), format_bytes(total).c_str(), rate);
        std::fflush(stderr);
        drawn_ = true;
    }

    std::string label_;
    bool enabled_;
    bool drawn_ = false;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point last_{};
};

// "4K", "4KiB", "4096", "2M", "2MiB", "2097152" -> bytes; 0 when not one of them.
uint64_t parse_block_size(const std::string& text) {
    if (text == "4K" || text == "4k" || text == "4KiB" || text == "4096") return 4096;
    if (text == "2M" || text == "2m" || text == "2MiB" || text == "2097152") return 2 << 20;
    return 0;
}

// "256K", "2M", "64M", "2097152" -> bytes; 0 when not a size.
uint64_t parse_frame_size(const std::string& text) {
    size_t used = 0;
    unsigned long long value = 0;
    try {
        value = std::stoull(text, &used, 10);
    } catch (const std::exception&) {
        return 0;
    }
    const std::string suffix = text.substr(used);
    unsigned shift = 0;
    if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
    else if (suffix == "M" || suffix == "m" || suffix == "MiB") shift = 20;
    else if (!suffix.empty()) return 0;
    if (value > (uint64_t{1} << 40)) return 0;
    return static_cast<uint64_t>(value) << shift;
}

ringpager::FrameCodec parse_codec(const std::string& text) {
    if (text == "zstd") return ringpager::FrameCodec::zstd;
    if (text == "lz4") return ringpager::FrameCodec::lz4;
    return ringpager::FrameCodec::none;
}

std::string ratio(uint64_t part, uint64_t whole) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3fx", whole ? static_cast<double>(part) / static_cast<double>(whole) : 0.0);
    return text;
}

// "zstd level 1, 2 MiB frames" (version 2) for build and inspect.
std::string describe_frames(const std::string& codec, uint32_t level, uint64_t frame_bytes) {
    return codec + (codec == "zstd" ? " level " + std::to_string(level) : std::string{}) + ", " +
           format_bytes(frame_bytes) + " frames";
}

int fail(const std::string& command, const std::string& error) {
    std::cerr << "ringpager snapshot " << command << ": " << error << "\n";
    return exit_failure;
}

int run_build(ringpager::SnapshotBuildOptions options, const std::string& block_size, bool progress) {
    options.block_size_bytes = parse_block_size(block_size);
    if (options.frames && options.frames->frame_bytes % options.block_size_bytes != 0) {
        std::cerr << "ringpager snapshot build: --frame-size " << format_bytes(options.frames->frame_bytes)
                  << " is not a multiple of the block size (" << format_bytes(options.block_size_bytes) << ")\n";
        return exit_usage;
    }
    ProgressBar bar("building", progress);
    options.progress = bar.callback();
    ringpager::SnapshotBuildReport r;
    std::string error;
    bool ok = ringpager::build_layered_snapshot(options, r, error);
    bar.finish();
    if (!ok) return fail("build", error);
    std::printf("built %s: %zu layers, %s guest, %s blocks, %llu extents\n", options.manifest_path.c_str(),
                r.files_written.size() - 1, format_bytes(r.guest_size_bytes).c_str(),
                format_bytes(r.block_size_bytes).c_str(), static_cast<unsigned long long>(r.extent_count));
    std::printf("blocks: %llu total, %llu zero, %llu duplicate, %llu stored, %llu shadowed by later diffs\n",
                static_cast<unsigned long long>(r.blocks_total), static_cast<unsigned long long>(r.blocks_zero),
                static_cast<unsigned long long>(r.blocks_duplicate), static_cast<unsigned long long>(r.blocks_stored),
                static_cast<unsigned long long>(r.blocks_shadowed));
    std::printf("bytes: %s in (%s read), %s written, %s saved\n", format_bytes(r.bytes_in).c_str(),
                format_bytes(r.bytes_read).c_str(), format_bytes(r.bytes_written).c_str(),
                format_bytes(r.bytes_saved()).c_str());
    if (options.frames) {
        const ringpager::FrameOptions& f = *options.frames;
        std::printf("frames: %s: %llu frames, %s of blocks stored in %s (%s)\n",
                    describe_frames(ringpager::layered::codec_name(f.codec), static_cast<uint32_t>(f.zstd_level),
                                    f.frame_bytes)
                        .c_str(),
                    static_cast<unsigned long long>(r.frames), format_bytes(r.stored_plain_bytes).c_str(),
                    format_bytes(r.stored_frame_bytes).c_str(),
                    ratio(r.stored_frame_bytes, r.stored_plain_bytes).c_str());
    }
    std::printf("speed: %.3f s, %.2f GiB/s\n", r.seconds, r.gib_per_second());
    return exit_ok;
}

nlohmann::json info_json(const ringpager::SnapshotInfo& info) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : info.layers) {
        layers.push_back({{"index", l.index}, {"path", l.path}, {"resolved_path", l.resolved_path},
                          {"id", l.id_hex}, {"file_size_bytes", l.file_size_bytes},
                          {"data_offset_bytes", l.data_offset_bytes}, {"stored_blocks", l.stored_blocks},
                          {"referenced_blocks", l.referenced_blocks}, {"frames", l.frames},
                          {"stored_file_bytes", l.stored_file_bytes}, {"packed_ws", l.packed_ws},
                          {"status", l.status}});
    }
    nlohmann::json frames = nullptr;   // version 1 has none
    if (!info.codec.empty()) {
        frames = {{"codec", info.codec}, {"level", info.codec_level}, {"frame_bytes", info.frame_bytes},
                  {"count", info.frame_count}};
    }
    return {{"manifest", info.manifest_path},
            {"manifest_size_bytes", info.manifest_size_bytes},
            {"version", info.version},
            {"snapshot_id", info.snapshot_id_hex},
            {"block_size_bytes", info.block_size_bytes},
            {"guest_size_bytes", info.guest_size_bytes},
            {"blocks", {{"total", info.block_count}, {"zero", info.zero_blocks}, {"data", info.data_blocks}}},
            {"extents", {{"total", info.extent_count}, {"zero", info.zero_extents}, {"data", info.data_extents}}},
            {"stored", {{"plain_bytes", info.stored_plain_bytes}, {"file_bytes", info.stored_file_bytes}}},
            {"frames", frames},
            {"packed_ws_blocks", info.packed_ws_blocks},
            {"packed_ws_pages", info.packed_ws_pages},
            {"layers", layers},
            {"ok", info.layers_ok()}};
}

void print_info(const ringpager::SnapshotInfo& info) {
    auto u = [](uint64_t v) { return static_cast<unsigned long long>(v); };
    std::printf("manifest     %s (%s, format version %u)\n", info.manifest_path.c_str(),
                format_bytes(info.manifest_size_bytes).c_str(), info.version);
    std::printf("snapshot id  %s\n", info.snapshot_id_hex.c_str());
    std::printf("guest size   %s (%llu blocks of %s)\n", format_bytes(info.guest_size_bytes).c_str(),
                u(info.block_count), format_bytes(info.block_size_bytes).c_str());
    std::printf("blocks       %llu zero, %llu data\n", u(info.zero_blocks), u(info.data_blocks));
    std::printf("extents      %llu (%llu zero, %llu data)\n", u(info.extent_count), u(info.zero_extents),
                u(info.data_extents));
    if (info.codec.empty()) {
        std::printf("stored       %s of blocks, as they are (no frames)\n",
                    format_bytes(info.stored_plain_bytes).c_str());
    } else {
        std::printf("frames       %s: %llu frames, %s of blocks stored in %s (%s)\n",
                    describe_frames(info.codec, info.codec_level, info.frame_bytes).c_str(), u(info.frame_count),
                    format_bytes(info.stored_plain_bytes).c_str(), format_bytes(info.stored_file_bytes).c_str(),
                    ratio(info.stored_file_bytes, info.stored_plain_bytes).c_str());
    }
    if (info.packed_ws_blocks != 0) {
        std::printf("working set  packed: %llu pages in touch order, %llu stored in layer %zu (the rest zero), "
                    "replayed first by serve --mode prefetch\n",
                    u(info.packed_ws_pages), u(info.packed_ws_blocks), info.layers.size() - 1);
    }
    std::printf("layers       %zu\n", info.layers.size());
    for (const auto& l : info.layers) {
        const std::string frames = info.codec.empty() ? "" : ", " + std::to_string(l.frames) + " frames";
        const char* packed = l.packed_ws ? ", packed working set (slots in touch order)" : "";
        std::printf("  %u  %s  %s  %llu stored, %llu referenced%s%s  id %s  %s\n", l.index, l.path.c_str(),
                    format_bytes(l.file_size_bytes).c_str(), u(l.stored_blocks), u(l.referenced_blocks),
                    frames.c_str(), packed, l.id_hex.c_str(), l.status.c_str());
    }
}

// A client configured from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION.
std::unique_ptr<ringpager::remote::S3Client> s3_client(std::string& error) {
    auto config = ringpager::remote::S3Config::from_environment();
    if (!config) {
        error = config.error().message;
        return nullptr;
    }
    auto client = ringpager::remote::S3Client::create(std::move(*config));
    if (!client) {
        error = client.error().message;
        return nullptr;
    }
    return std::move(*client);
}

// Parses an s3:// argument; prints the usage error and returns false when it is not one.
bool parse_url(const std::string& command, const std::string& text, ringpager::remote::KeyRule rule,
               ringpager::remote::S3Location& out) {
    std::string error = ringpager::remote::parse_s3_url(text, rule, out);
    if (error.empty()) return true;
    std::cerr << "ringpager snapshot " << command << ": " << error << "\n";
    return false;
}

bool inspect_any(const std::string& manifest, ringpager::SnapshotInfo& info, std::string& error, bool& usage) {
    if (manifest.rfind("s3://", 0) != 0) return ringpager::inspect_layered_snapshot(manifest, info, error);
    ringpager::remote::S3Location at;
    if (!parse_url("inspect", manifest, ringpager::remote::KeyRule::required, at)) {
        usage = true;
        return false;
    }
    auto client = s3_client(error);
    if (!client) return false;
    error = ringpager::remote::inspect_remote_snapshot(*client, at, info);
    return error.empty();
}

int run_inspect(const std::string& manifest, bool json) {
    ringpager::SnapshotInfo info;
    std::string error;
    bool usage = false;
    if (!inspect_any(manifest, info, error, usage)) return usage ? exit_usage : fail("inspect", error);
    if (json) {
        std::cout << info_json(info).dump(2) << "\n";
    } else {
        print_info(info);
    }
    std::cout.flush();
    for (const auto& l : info.layers) {
        if (l.status != "ok") return fail("inspect", l.status);
    }
    return exit_ok;
}

int run_verify(const std::string& manifest, bool progress) {
    ProgressBar bar("verifying", progress);
    ringpager::SnapshotVerifyReport r;
    std::string error;
    bool ok = ringpager::verify_layered_snapshot(manifest, r, error, bar.callback());
    bar.finish();
    if (!ok) return fail("verify", error);
    const std::string frames =
        r.frames_checked ? " in " + std::to_string(r.frames_checked) + " frames" : std::string{};
    std::printf("verified %s: %llu stored blocks intact%s (%s read in %.3f s)\n", manifest.c_str(),
                static_cast<unsigned long long>(r.blocks_checked), frames.c_str(), format_bytes(r.bytes_read).c_str(),
                r.seconds);
    return exit_ok;
}

int run_pack_ws(const ringpager::PackWorkingSetOptions& options) {
    ringpager::PackWorkingSetReport r;
    std::string error;
    if (!ringpager::pack_working_set(options, r, error)) return fail("pack-ws", error);
    auto u = [](uint64_t v) { return static_cast<unsigned long long>(v); };
    std::printf("packed %s: %llu of %llu working-set pages stored in touch order in %s (%llu zero pages stay zero "
                "extents), %llu extents, %s written\n",
                options.out_path.c_str(), u(r.packed_pages), u(r.set_pages), r.layer_path.c_str(), u(r.zero_pages),
                u(r.extent_count), format_bytes(r.bytes_written).c_str());
    return exit_ok;
}

int run_push(const std::string& manifest, const std::string& url, bool progress) {
    ringpager::remote::S3Location at;
    if (!parse_url("push", url, ringpager::remote::KeyRule::required, at)) return exit_usage;
    std::string error;
    auto client = s3_client(error);
    if (!client) return fail("push", error);
    ProgressBar bar("pushing", progress);
    ringpager::remote::PushOptions options;
    options.progress = bar.callback();
    ringpager::remote::PushReport r;
    error = ringpager::remote::push_snapshot(*client, manifest, at, options, r);
    bar.finish();
    if (!error.empty()) return fail("push", error);
    double mib_per_s = r.seconds > 0 ? static_cast<double>(r.bytes_uploaded) / r.seconds / (1 << 20) : 0.0;
    std::printf("pushed %s to %s: %u layers uploaded, %u already in the bucket\n", manifest.c_str(), at.url().c_str(),
                r.layers_uploaded, r.layers_present);
    std::printf("bytes: %s sent (manifest %s), %s already there; %llu blocks verified on the way\n",
                format_bytes(r.bytes_uploaded).c_str(), format_bytes(r.manifest_bytes).c_str(),
                format_bytes(r.bytes_skipped).c_str(), static_cast<unsigned long long>(r.blocks_verified));
    std::printf("speed: %.3f s, %.1f MiB/s\n", r.seconds, mib_per_s);
    return exit_ok;
}

int run_ls(const std::string& url) {
    ringpager::remote::S3Location at;
    if (!parse_url("ls", url, ringpager::remote::KeyRule::optional, at)) return exit_usage;
    std::string error;
    auto client = s3_client(error);
    if (!client) return fail("ls", error);
    ringpager::remote::RemoteListing listing;
    error = ringpager::remote::list_snapshots(*client, at, listing);
    if (!error.empty()) return fail("ls", error);
    for (const auto& s : listing.snapshots) {
        std::printf("s3://%s/%s  %s guest  %s blocks  %u layers  manifest %s  %s\n", at.bucket.c_str(),
                    ringpager::escape_for_log(s.key, ringpager::remote::max_key_bytes * 4).c_str(),
                    format_bytes(s.header.guest_size_bytes).c_str(), format_bytes(s.header.block_size_bytes).c_str(),
                    s.header.layer_count, format_bytes(s.manifest_bytes).c_str(),
                    ringpager::escape_for_log(s.last_modified).c_str());
    }
    std::printf("%zu snapshot(s)", listing.snapshots.size());
    if (listing.other_objects) {
        std::printf(", %llu other object(s) that are not manifests", static_cast<unsigned long long>(listing.other_objects));
    }
    std::printf("\n");
    return exit_ok;
}

}  // namespace

int snapshot_main(int argc, char** argv) {
    CLI::App app{"Build, inspect, verify, push and list ringpager layered snapshots (docs/snapshot-format.md, "
                 "docs/remote.md).",
                 "ringpager snapshot"};
    app.require_subcommand(1);

    ringpager::SnapshotBuildOptions build_options;
    std::string block_size = "4K";
    bool no_sync = false, no_progress = false, json = false;
    std::string manifest;

    CLI::App* build = app.add_subcommand("build", "Build a manifest and layer files from a Firecracker memory file "
                                                  "and optional diff memory files.");
    build->add_option("--base", build_options.base_path, "Firecracker full memory file")->required();
    build->add_option("--diff", build_options.diff_paths,
                      "Firecracker diff memory file (sparse, same size as the base); repeat in order, oldest first")
        ->take_all();
    build->add_option("--out", build_options.manifest_path,
                      "manifest to write; layers are written next to it as MANIFEST.layerN.rpl")
        ->required();
    build->add_option("--block-size", block_size, "block size: 4K, or 2M for huge-page guests (default 4K)")
        ->check(CLI::Validator(
            [](std::string& text) { return parse_block_size(text) ? std::string{} : "must be 4K or 2M"; }, "4K|2M"));
    std::string compress, frame_size = "2M";
    ringpager::FrameOptions frame_options;
    CLI::Option* compress_option =
        build->add_option("--compress", compress,
                          "store blocks in frames compressed with zstd or lz4, or uncompressed (none): "
                          "format version 2 (default: version 1, no frames)")
            ->check(CLI::IsMember({"zstd", "lz4", "none"}));
    build->add_option("--zstd-level", frame_options.zstd_level, "zstd compression level, 1 to 19 (default 1)")
        ->check(CLI::Range(1, 19))
        ->needs(compress_option);
    build->add_option("--frame-size", frame_size,
                      "plain bytes per frame: a power of two from the block size to 64M (default 2M)")
        ->check(CLI::Validator(
            [](std::string& text) {
                const uint64_t bytes = parse_frame_size(text);
                return bytes >= 4096 && bytes <= (64u << 20) && std::has_single_bit(bytes)
                           ? std::string{}
                           : "must be a power of two from 4K to 64M";
            },
            "SIZE"))
        ->needs(compress_option);
    build->add_option("--compress-threads", frame_options.threads, "frames compressed at once (default 2)")
        ->check(CLI::Range(1u, 64u))
        ->needs(compress_option);
    build->add_flag("--no-sync", no_sync, "do not fsync the written files (faster; not crash safe)");
    build->add_flag("--no-progress", no_progress, "never draw the progress bar");

    CLI::App* inspect = app.add_subcommand("inspect", "Print what a manifest holds and check its layer files.");
    inspect->add_option("manifest", manifest, "manifest file, or s3://BUCKET/NAME")->required();
    inspect->add_flag("--json", json, "print JSON instead of text");

    std::string url;
    CLI::App* push = app.add_subcommand("push", "Upload a snapshot to an object store (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                                                "AWS_SECRET_ACCESS_KEY, AWS_REGION); layers already there are not sent.");
    push->add_option("manifest", manifest, "manifest file")->required();
    push->add_option("url", url, "s3://BUCKET/NAME: where the manifest goes (layers go to s3://BUCKET/layers/)")->required();
    push->add_flag("--no-progress", no_progress, "never draw the progress line");

    CLI::App* ls = app.add_subcommand("ls", "List the snapshots in a bucket, under an optional prefix.");
    ls->add_option("url", url, "s3://BUCKET/[PREFIX]")->required();

    CLI::App* verify = app.add_subcommand("verify", "Re-hash every stored block (and check every frame of a compressed "
                                                    "snapshot); exit 1 naming the first bad one.");
    verify->add_option("manifest", manifest, "manifest file")->required();
    verify->add_flag("--no-progress", no_progress, "never draw the progress bar");

    ringpager::PackWorkingSetOptions pack_options;
    CLI::App* pack = app.add_subcommand(
        "pack-ws", "Write a manifest whose extra last layer stores a working set's pages in touch order, so "
                   "serve --mode prefetch replays them in one sequential read (format version 1, 4 KiB blocks).");
    pack->add_option("manifest", pack_options.manifest_path, "manifest file of the snapshot")->required();
    pack->add_option("--working-set", pack_options.working_set_path, "working-set file recorded against it")
        ->required();
    pack->add_option("--out", pack_options.out_path,
                     "manifest to write, in the snapshot's directory; its layer goes next to it as OUT.layerN.rpl")
        ->required();
    pack->add_flag("--no-sync", no_sync, "do not fsync the written files (faster; not crash safe)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? exit_ok : exit_usage;
    }
    if (build->parsed()) {
        build_options.sync = !no_sync;
        if (!compress.empty()) {
            frame_options.codec = parse_codec(compress);
            frame_options.frame_bytes = parse_frame_size(frame_size);
            build_options.frames = frame_options;
        }
        return run_build(std::move(build_options), block_size, !no_progress);
    }
    if (inspect->parsed()) return run_inspect(manifest, json);
    if (push->parsed()) return run_push(manifest, url, !no_progress);
    if (ls->parsed()) return run_ls(url);
    if (pack->parsed()) {
        pack_options.sync = !no_sync;
        return run_pack_ws(pack_options);
    }
    return run_verify(manifest, !no_progress);
}
