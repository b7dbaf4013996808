// `ringpager ws`: working-set files (issue 11). `ws merge A B C --out F
// [--min-count K]` unions several recordings of one snapshot, ordered by
// median first-touch rank (src/snapshot/working_set.hpp).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "snapshot/working_set.hpp"

using namespace ringpager;

namespace {

int merge(const std::vector<std::string>& inputs, const std::string& out_path, unsigned min_count) {
    std::vector<WorkingSet> sets(inputs.size());
    std::string error;
    for (size_t i = 0; i < inputs.size(); i++) {
        if (!load_working_set_file(inputs[i], sets[i], error)) {
            fprintf(stderr, "ringpager ws merge: %s\n", error.c_str());
            return 1;
        }
    }
    if (min_count > inputs.size()) {
        fprintf(stderr, "ringpager ws merge: --min-count %u is more than the %zu recordings given\n", min_count,
                inputs.size());
        return 2;
    }
    WorkingSet merged;
    if (!merge_working_sets(sets, min_count, merged, error)) {
        fprintf(stderr, "ringpager ws merge: %s (%s)\n", error.c_str(), inputs[0].c_str());
        return 1;
    }
    if (!write_working_set_file(out_path, merged, error)) {
        fprintf(stderr, "ringpager ws merge: %s\n", error.c_str());
        return 1;
    }
    printf("%s: %llu pages in %zu runs from %zu recordings (pages in at least %u)\n", out_path.c_str(),
           (unsigned long long)merged.pages(), merged.runs.size(), inputs.size(), std::max(1u, min_count));
    return 0;
}

}  // namespace

int ws_main(int argc, char** argv) {
    CLI::App app{"Working-set files: recorded by serve --record-ws, replayed by serve --working-set.", "ringpager ws"};
    app.require_subcommand(1);
    std::vector<std::string> inputs;
    std::string out_path;
    unsigned min_count = 1;
    CLI::App* merge_cmd = app.add_subcommand(
        "merge", "union of recordings of one snapshot, ordered by median first-touch rank");
    merge_cmd->add_option("inputs", inputs, "working-set files")->required();
    merge_cmd->add_option("--out", out_path, "the merged file (written atomically)")->required();
    merge_cmd->add_option("--min-count", min_count, "keep only pages seen in at least K recordings (default 1)")
        ->check(CLI::Range(1u, 1000000u));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        fprintf(stderr, "ringpager ws: %s (see --help)\n", e.what());
        return 2;
    }
    return merge(inputs, out_path, min_count);
}
