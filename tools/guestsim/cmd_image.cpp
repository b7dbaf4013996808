// rp-guestsim generate | diff | flatten: synthetic memory files.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "guestsim/image.hpp"
#include "guestsim/units.hpp"

namespace ringpager::sim::cli {
namespace {

int fail(const char* command, const Error& error, const std::string& path) {
    std::fprintf(stderr, "rp-guestsim %s: %s (%s)\n", command, error.message().c_str(), path.c_str());
    return kExitFailure;
}

struct GenerateArgs {
    std::string out;
    std::string size = "0";
    std::string page_size = "4K";
    double zero_fraction = 0.0;
    double duplicate_fraction = 0.0;
    uint64_t seed = 1;
    bool sparse = false;
    uint64_t zero_run_pages = 1;
};

int run_generate(const GenerateArgs& args) {
    auto size = parse_size(args.size);
    auto page = parse_size(args.page_size);
    if (!size || *size == 0 || !page || *page == 0 || *size % *page != 0 || *page % 4096 != 0) {
        std::fprintf(stderr, "rp-guestsim generate: --size must be a non-zero multiple of --page-size (4K multiples), e.g. 512M\n");
        return kExitUsage;
    }
    if (args.zero_fraction + args.duplicate_fraction > 1.0) {
        std::fprintf(stderr, "rp-guestsim generate: --zero-fraction plus --dup-fraction must not exceed 1\n");
        return kExitUsage;
    }
    GenerateOptions options{args.zero_fraction, args.duplicate_fraction, args.seed, *page, args.sparse};
    options.zero_run_pages = args.zero_run_pages;
    auto stats = generate_image(args.out, *size, options);
    if (!stats) return fail("generate", stats.error(), args.out);
    std::printf("%s: %llu pages: %llu zero, %llu duplicate, %llu distinct\n", args.out.c_str(),
                static_cast<unsigned long long>(stats->pages), static_cast<unsigned long long>(stats->zero_pages),
                static_cast<unsigned long long>(stats->duplicate_pages),
                static_cast<unsigned long long>(stats->distinct_pages));
    return kExitOk;
}

struct DiffArgs {
    std::string base;
    std::string out;
    double changed_fraction = 0.05;
    double zero_fraction = 0.1;
    uint64_t seed = 1;
};

int run_diff(const DiffArgs& args) {
    DiffOptions options;
    options.changed_fraction = args.changed_fraction;
    options.zero_fraction_of_changed = args.zero_fraction;
    options.seed = args.seed;
    auto result = generate_diff(args.base, args.out, options);
    if (!result) return fail("diff", result.error(), args.out);
    std::printf("%s: %zu pages changed (%llu of them to zeros)\n", args.out.c_str(),
                result->changed_offsets_bytes.size(), static_cast<unsigned long long>(result->zeroed_pages));
    return kExitOk;
}

struct FlattenArgs {
    std::string base;
    std::vector<std::string> diffs;
    std::string out;
};

}  // namespace

void add_generate_command(CLI::App& app, Action& action) {
    auto args = std::make_shared<GenerateArgs>();
    CLI::App* sub = app.add_subcommand("generate", "Write a synthetic full memory file");
    sub->add_option("--out", args->out, "Memory file to write (replaced)")->required();
    sub->add_option("--size", args->size, "Size, e.g. 512M or 1G")->required();
    sub->add_option("--zero-fraction", args->zero_fraction, "Share of all-zero pages")->check(CLI::Range(0.0, 1.0));
    sub->add_option("--dup-fraction", args->duplicate_fraction, "Share of pages duplicating an earlier page")
        ->check(CLI::Range(0.0, 1.0));
    sub->add_option("--zero-run-pages", args->zero_run_pages,
                    "Zero pages come in aligned runs of this many pages (default 1: scattered at random)")
        ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
    sub->add_option("--seed", args->seed, "PRNG seed (same seed, same bytes)");
    sub->add_option("--page-size", args->page_size, "Granularity of zero/duplicate pages (4K or 2M)");
    sub->add_flag("--sparse", args->sparse, "Leave zero pages as holes");
    sub->callback([args, &action] { action = [args] { return run_generate(*args); }; });
}

void add_diff_command(CLI::App& app, Action& action) {
    auto args = std::make_shared<DiffArgs>();
    CLI::App* sub = app.add_subcommand("diff", "Write a Firecracker-style sparse diff memory file for a base");
    sub->add_option("--base", args->base, "Base memory file (only its size is used)")->required();
    sub->add_option("--out", args->out, "Diff file to write (replaced)")->required();
    sub->add_option("--changed-fraction", args->changed_fraction, "Share of pages the diff rewrites")
        ->check(CLI::Range(0.0, 1.0));
    sub->add_option("--zero-fraction", args->zero_fraction, "Share of changed pages rewritten as zeros")
        ->check(CLI::Range(0.0, 1.0));
    sub->add_option("--seed", args->seed, "PRNG seed");
    sub->callback([args, &action] { action = [args] { return run_diff(*args); }; });
}

void add_flatten_command(CLI::App& app, Action& action) {
    auto args = std::make_shared<FlattenArgs>();
    CLI::App* sub = app.add_subcommand("flatten", "Lay diff files (in order) over a base into one full file");
    sub->add_option("--base", args->base, "Base memory file")->required();
    sub->add_option("--diff", args->diffs, "Diff memory file (repeatable, applied in order)");
    sub->add_option("--out", args->out, "Flattened file to write (replaced)")->required();
    sub->callback([args, &action] {
        action = [args] {
            auto done = flatten(args->base, args->diffs, args->out);
            if (!done) return fail("flatten", done.error(), args->out);
            return kExitOk;
        };
    });
}

}  // namespace ringpager::sim::cli
