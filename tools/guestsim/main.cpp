// rp-guestsim: the guest simulator's command line (see docs/guestsim.md).
#include <cstdio>

#include "commands.hpp"

int main(int argc, char** argv) {
    using namespace ringpager::sim::cli;
    CLI::App app{"rp-guestsim: plays Firecracker's side of a userfaultfd snapshot restore, "
                 "and makes synthetic memory files"};
    app.require_subcommand(1);
    Action action;
    add_generate_command(app, action);
    add_diff_command(app, action);
    add_flatten_command(app, action);
    add_run_command(app, action);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? kExitOk : kExitUsage;
    }
    return action ? action() : kExitUsage;
}
